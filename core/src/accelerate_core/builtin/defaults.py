"""The core's default answers to every family hook.

Registered last with ``trylast=True`` and included in every owner-only call, so a plugin answers
only the hooks where it differs: returning ``None`` (or not implementing a hook) falls through to
these. They implement one process on any device that ``torch.accelerator`` knows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from ..hookspecs import hookimpl
from ..specs import EnvironmentInfo, PluginContext, PrepareRequest

last = hookimpl(trylast=True)


# --------------------------------------------------------------------------- device


@last
def accelerate_core_setup_device(device: torch.device, environment: EnvironmentInfo) -> bool:
    if device.type != "cpu" and device.index is not None:
        torch.accelerator.set_device_index(device.index)
    return True


def _device_module(device: torch.device) -> Any:
    try:
        return torch.get_device_module(device)
    except (RuntimeError, AttributeError):
        return None


@last
def accelerate_core_device_rng_state(device: torch.device) -> Any:
    if device.type == "cpu":
        return torch.get_rng_state()
    module = _device_module(device)
    getter = getattr(module, "get_rng_state", None)
    return getter(device) if getter is not None else None


@last
def accelerate_core_set_device_rng_state(device: torch.device, rng_state: Any) -> bool:
    if device.type == "cpu":
        torch.set_rng_state(rng_state)
        return True
    setter = getattr(_device_module(device), "set_rng_state", None)
    if setter is None:
        return False
    setter(rng_state, device)
    return True


@last
def accelerate_core_device_memory_stats(device: torch.device) -> dict[str, int] | None:
    if device.type == "cpu":
        return None
    return {
        "allocated": torch.accelerator.memory_allocated(device),
        "reserved": torch.accelerator.memory_reserved(device),
        "max_allocated": torch.accelerator.max_memory_allocated(device),
    }


@last
def accelerate_core_synchronize(device: torch.device) -> bool:
    if device.type != "cpu":
        torch.accelerator.synchronize(device)
    return True


# --------------------------------------------------------------------------- precision


@last
def accelerate_core_convert(request: PrepareRequest, context: PluginContext) -> None:
    return None


@last
def accelerate_core_autocast(context: PluginContext) -> None:
    return None


@last
def accelerate_core_grad_scaler(context: PluginContext) -> None:
    return None


# --------------------------------------------------------------------------- wrapping


@last
def accelerate_core_wrap(request: PrepareRequest, context: PluginContext) -> None:
    return None


@last
def accelerate_core_unwrap_model(model: torch.nn.Module, context: PluginContext) -> Any:
    return model


# --------------------------------------------------------------------------- backward


@last
def accelerate_core_backward(context: PluginContext, scaler: Any) -> Callable[..., None]:
    steps = context.gradient_accumulation_steps
    if scaler is None and steps == 1:

        def backward(loss: torch.Tensor, **kwargs: Any) -> None:
            loss.backward(**kwargs)

    elif scaler is None:

        def backward(loss: torch.Tensor, **kwargs: Any) -> None:
            (loss / steps).backward(**kwargs)

    else:
        scale = scaler.scale

        def backward(loss: torch.Tensor, **kwargs: Any) -> None:
            if steps > 1:
                loss = loss / steps
            scale(loss).backward(**kwargs)

    return backward


def _no_sync(model: torch.nn.Module) -> contextlib.nullcontext:
    return contextlib.nullcontext()


@last
def accelerate_core_no_sync(context: PluginContext) -> Callable[..., Any]:
    return _no_sync


@last
def accelerate_core_clip_grad_norm(context: PluginContext) -> Callable[..., Any]:
    return torch.nn.utils.clip_grad_norm_


@last
def accelerate_core_clip_grad_value(context: PluginContext) -> Callable[..., Any]:
    return torch.nn.utils.clip_grad_value_


@last
def accelerate_core_optimizer_step(context: PluginContext, scaler: Any) -> Callable[[Any], Any]:
    if scaler is None:

        def step(optimizer: torch.optim.Optimizer) -> None:
            optimizer.step()

        return step

    def scaled_step(optimizer: torch.optim.Optimizer) -> Any:
        scaler.step(optimizer)
        # Read before update() clears it; summed lazily so no device sync happens here.
        found_inf = scaler._found_inf_per_device(optimizer)
        scaler.update()
        return _SkippedFlag(list(found_inf.values()))

    return scaled_step


class _SkippedFlag:
    """Truthy when the scaler found inf/nan gradients and skipped the step (evaluated on demand)."""

    __slots__ = ("_flags", "_value")

    def __init__(self, flags: list[torch.Tensor]) -> None:
        self._flags = flags
        self._value: bool | None = None

    def __bool__(self) -> bool:
        if self._value is None:
            self._value = any(bool(f.item()) for f in self._flags)
        return self._value


# --------------------------------------------------------------------------- checkpoint state


@last
def accelerate_core_get_state_dict(model: torch.nn.Module, context: PluginContext) -> None:
    return None
