"""Hook implementations of the ``ddp`` backend (tiny: the work is in ``wrapping``)."""

from __future__ import annotations

from typing import Any

from accelerate_core import BackendSpec, hookimpl

NAME = "ddp"


@hookimpl
def accelerate_core_backends() -> list[BackendSpec]:
    return [BackendSpec(NAME, "torch DistributedDataParallel: replicate, all-reduce gradients")]


@hookimpl
def accelerate_core_wrap(request: Any, context: Any) -> Any:
    from .wrapping import wrap_models

    request.models = wrap_models(request.models, context)
    return request


@hookimpl
def accelerate_core_unwrap_model(model: Any) -> Any:
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


@hookimpl
def accelerate_core_no_sync(context: Any) -> Any:
    from .wrapping import no_sync

    return no_sync
