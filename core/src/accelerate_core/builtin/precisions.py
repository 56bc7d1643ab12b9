"""Native AMP: ``no``, ``fp16`` (autocast + dynamic loss scaling) and ``bf16`` (autocast)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch

from ..hookspecs import hookimpl
from ..specs import PluginContext, PrecisionSpec

AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@hookimpl
def accelerate_core_precisions() -> list[PrecisionSpec]:
    return [
        PrecisionSpec("no", "full precision (fp32)"),
        PrecisionSpec("fp16", "float16 autocast with dynamic loss scaling", "fp16"),
        PrecisionSpec("bf16", "bfloat16 autocast", "bf16"),
    ]


@hookimpl
def accelerate_core_autocast(
    context: PluginContext,
) -> Callable[[], AbstractContextManager] | None:
    dtype = AUTOCAST_DTYPES.get(context.mixed_precision)
    if dtype is None:
        return None
    options = dict(context.precision_options.get("autocast", {}))
    spec = getattr(context.state, "device_spec", None)
    device_type = (spec.autocast_type if spec is not None else None) or context.device.type
    return functools.partial(torch.autocast, device_type=device_type, dtype=dtype, **options)


@hookimpl
def accelerate_core_grad_scaler(context: PluginContext) -> Any:
    if context.mixed_precision != "fp16":
        return None
    options = dict(context.precision_options.get("grad_scaler", {}))
    return torch.amp.GradScaler(context.device.type, **options)
