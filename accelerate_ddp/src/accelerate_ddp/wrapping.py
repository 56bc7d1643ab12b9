"""Wrapping models in ``DistributedDataParallel`` and the gradient-sync switch."""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from .options import DDPOptions

BROADCAST_BUFFERS_NOTE = "`broadcast_buffers` is deprecated"


def wrap_models(models: list[torch.nn.Module], context: Any) -> list[torch.nn.Module]:
    """Wrap every model that has trainable parameters (frozen ones need no gradient sync)."""
    options = DDPOptions.from_mapping(context.backend_options)
    device = context.device
    device_ids = [device.index] if device.type != "cpu" and device.index is not None else None
    wrapped = []
    for model in models:
        if isinstance(model, DistributedDataParallel) or not any(
            p.requires_grad for p in model.parameters()
        ):
            wrapped.append(model)
            continue
        with warnings.catch_warnings():
            # broadcast_buffers=False has no replacement yet (torch says to keep using it until
            # init_sync_buffers exists); the user asked for it: no deprecation note per rank.
            warnings.filterwarnings("ignore", BROADCAST_BUFFERS_NOTE, FutureWarning)
            ddp = DistributedDataParallel(model, device_ids=device_ids, **options.ddp_kwargs())
        if options.comm_hook is not None:
            register_comm_hook(ddp, options)
        wrapped.append(ddp)
    return wrapped


def register_comm_hook(model: DistributedDataParallel, options: DDPOptions) -> None:
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook

    if options.comm_hook == "fp16":
        model.register_comm_hook(None, default_hooks.fp16_compress_hook)
    elif options.comm_hook == "bf16":
        model.register_comm_hook(None, default_hooks.bf16_compress_hook)
    else:
        state = powerSGD_hook.PowerSGDState(process_group=None, **options.comm_hook_options)
        hook = (
            powerSGD_hook.batched_powerSGD_hook
            if options.comm_hook == "batched_powersgd"
            else powerSGD_hook.powerSGD_hook
        )
        if options.comm_wrapper == "fp16":
            hook = default_hooks.fp16_compress_wrapper(hook)
        elif options.comm_wrapper == "bf16":
            hook = default_hooks.bf16_compress_wrapper(hook)
        model.register_comm_hook(state, hook)


def no_sync(model: torch.nn.Module) -> contextlib.AbstractContextManager:
    """Backward in this block accumulates locally; the next syncing backward all-reduces."""
    if isinstance(model, DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()
