"""The core's default answers to every family hook.

Registered last with ``trylast=True`` and included in every owner-only call, so a plugin answers
only the hooks where it differs: returning ``None`` (or not implementing a hook) falls through to
these. They implement one process on any device that ``torch.accelerator`` knows.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable
from typing import Any

import torch

from ..hookspecs import hookimpl
from ..specs import CheckpointWeights, EnvironmentInfo, PluginContext, PrepareRequest

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
def accelerate_core_seed_device(device: torch.device, seed: int) -> bool:
    return True  # torch.manual_seed seeded the default generator of every device torch ships


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
def accelerate_core_device_memory_info(device: torch.device) -> tuple[int, int] | None:
    reader = getattr(torch.accelerator, "get_memory_info", None)
    if device.type == "cpu" or reader is None:
        return None
    try:
        free, total = reader(device)
    except (RuntimeError, ValueError):  # not the accelerator torch drives
        return None
    return int(free), int(total)


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
        record = _StepRecord.of(optimizer)
        record.ran, record.found_inf = False, None
        scaler.step(optimizer)  # calls optimizer.step() only when the gradients are finite
        scaler.update()
        return _SkippedFlag(record.ran, record.found_inf)

    return scaled_step


class _StepRecord:
    """Whether ``optimizer.step()`` ran, seen by a post-step hook (torch's public API), so the
    skip is known without reading a device flag. Fused optimizers step every time and skip
    inside their kernel: for them the hook keeps the ``found_inf`` tensor the scaler handed them,
    read only if someone asks."""

    __slots__ = ("found_inf", "ran")

    def __init__(self) -> None:
        self.ran = False
        self.found_inf: torch.Tensor | None = None

    @classmethod
    def of(cls, optimizer: torch.optim.Optimizer) -> _StepRecord:
        record = _STEP_RECORDS.get(optimizer)
        if record is None:
            record = _STEP_RECORDS[optimizer] = cls()
            optimizer.register_step_post_hook(record._after_step)
        return record

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.ran = True
        self.found_inf = getattr(optimizer, "found_inf", None)


_STEP_RECORDS: weakref.WeakKeyDictionary[Any, _StepRecord] = weakref.WeakKeyDictionary()


class _SkippedFlag:
    """Truthy when the scaler found inf/nan gradients and skipped the step; a fused optimizer's
    flag is read from the device only when asked."""

    __slots__ = ("_found_inf", "_value")

    def __init__(self, ran: bool, found_inf: torch.Tensor | None) -> None:
        self._found_inf = found_inf
        self._value: bool | None = None if ran and found_inf is not None else not ran

    def __bool__(self) -> bool:
        if self._value is None:
            self._value = bool(self._found_inf.item())
        return self._value


# --------------------------------------------------------------------------- checkpoint state


@last
def accelerate_core_get_state_dict(model: torch.nn.Module, context: PluginContext) -> None:
    return None


@last
def accelerate_core_checkpoint_weights(
    directory: str, manifest: dict[str, Any] | None, model: str, options: dict[str, Any]
) -> CheckpointWeights | None:
    """The weights the core stored itself: ``<model>.safetensors`` of a replicated backend."""
    if manifest is None or model in manifest.get("backend_objects", ()):
        return None
    name = f"{model}.safetensors"
    if name not in manifest.get("files", {}):
        return None
    from safetensors import safe_open

    path = f"{directory}/{name}"
    with safe_open(path, framework="pt") as file:
        names = tuple(file.keys())

    def load(key: str) -> torch.Tensor:
        with safe_open(path, framework="pt") as file:
            return file.get_tensor(key)

    return CheckpointWeights(names, load, description=f"{name} (backend '{manifest['backend']}')")
