"""Native AMP: ``no``, ``fp16`` (autocast + dynamic loss scaling) and ``bf16`` (autocast)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch

from ..errors import ConfigurationError
from ..hookspecs import hookimpl
from ..kwargs_handlers import AutocastKwargs, GradScalerKwargs
from ..option_checks import check_option_names
from ..specs import PluginContext, PrecisionSpec

AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@hookimpl
def accelerate_core_precisions() -> list[PrecisionSpec]:
    return [
        PrecisionSpec("no", "full precision (fp32)"),
        PrecisionSpec("fp16", "float16 autocast with dynamic loss scaling", "fp16"),
        PrecisionSpec("bf16", "bfloat16 autocast", "bf16"),
    ]


# The precision options of native AMP: GradScalerKwargs/AutocastKwargs fill them. Every mode takes
# both (as in Hugging Face Accelerate, a script may pass a scaler's options and run without fp16).
OPTION_FIELDS = {
    GradScalerKwargs.option_key: GradScalerKwargs,
    AutocastKwargs.option_key: AutocastKwargs,
}


@hookimpl
def accelerate_core_validate_options(
    kind: str, name: str, options: dict[str, Any], context: PluginContext
) -> bool | None:
    if kind != "precision":
        return None
    check_option_names(f"mixed_precision='{name}'", options, OPTION_FIELDS)
    for key, value in options.items():
        if not isinstance(value, dict):
            raise ConfigurationError(
                f"precision option {key!r} must be a dict of {OPTION_FIELDS[key].__name__} "
                f"fields, got {type(value).__name__}"
            )
        check_option_names(f"{key}", value, OPTION_FIELDS[key].__dataclass_fields__)
    return True


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
