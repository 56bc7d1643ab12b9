"""Module hooks of big-model inference: code that runs around a module's forward.

``add_hook_to_module`` replaces ``module.forward`` with one that calls the hook's
``pre_forward`` (which may change the arguments), the original forward, then ``post_forward``
(which may change the output); ``remove_hook_from_module`` restores it. The attribute names
(``_hf_hook``, ``_old_forward``) and the model's ``hf_device_map`` are HF Accelerate's, so
``transformers`` recognises a model dispatched by this library as it does one dispatched by HF.

``AlignDevicesHook`` is what ``dispatch_model`` attaches: it moves a module's inputs to its
execution device and, for offloaded modules, brings the weights in from a weights map (a CPU state
dict or an offload folder) just before the forward and puts them back on the meta device after.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .ops import send_to_device
from .utils.modeling import (
    accelerator_type,
    get_non_persistent_buffers,
    named_module_tensors,
    set_module_tensor_to_device,
)
from .utils.offload import PrefixedDataset

DeviceLike = int | str | torch.device
# Attributes dispatch_model sets on a model, removed with its hooks.
_ADDED_ATTRIBUTES = ("to", "cuda", "npu", "xpu", "mlu", "sdaa", "musa")


def find_device(data: Any) -> torch.device | None:
    """The device of the first tensor found in ``data`` (nested lists, tuples, mappings)."""
    if isinstance(data, torch.Tensor):
        return data.device
    if isinstance(data, Mapping):
        data = list(data.values())
    if isinstance(data, (list, tuple)):
        for item in data:
            device = find_device(item)
            if device is not None:
                return device
    return None


def _send(data: Any, device: DeviceLike | None, skip_keys: str | list[str] | None = None) -> Any:
    """``send_to_device`` that leaves the top-level mapping entries named in ``skip_keys``."""
    if device is None:
        return data
    device = _as_device(device)
    if skip_keys is None or not isinstance(data, Mapping):
        return send_to_device(data, device)
    skip = {skip_keys} if isinstance(skip_keys, str) else set(skip_keys)
    moved = {k: v if k in skip else send_to_device(v, device) for k, v in data.items()}
    try:
        return type(data)(moved)
    except TypeError:
        return moved


def _as_device(device: DeviceLike) -> torch.device:
    if isinstance(device, int) and not isinstance(device, bool):
        return torch.device(accelerator_type() or "cuda", device)
    return torch.device(device)


class ModelHook:
    """Callbacks around a module's forward; unlike torch's hooks they receive the kwargs.

    ``no_grad = True`` runs the forward under ``torch.no_grad()``.
    """

    no_grad = False

    def init_hook(self, module: nn.Module) -> nn.Module:
        """Runs when the hook is attached; returns the module."""
        return module

    def pre_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple, dict]:
        """Runs before the forward; returns the (possibly changed) ``args`` and ``kwargs``."""
        return args, kwargs

    def post_forward(self, module: nn.Module, output: Any) -> Any:
        """Runs after the forward; returns the (possibly changed) output."""
        return output

    def detach_hook(self, module: nn.Module) -> nn.Module:
        """Runs when the hook is removed; returns the module."""
        return module


class SequentialHook(ModelHook):
    """Several hooks run in order at each event."""

    def __init__(self, *hooks: ModelHook) -> None:
        self.hooks = hooks

    def init_hook(self, module: nn.Module) -> nn.Module:
        for hook in self.hooks:
            module = hook.init_hook(module)
        return module

    def pre_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple, dict]:
        for hook in self.hooks:
            args, kwargs = hook.pre_forward(module, *args, **kwargs)
        return args, kwargs

    def post_forward(self, module: nn.Module, output: Any) -> Any:
        for hook in self.hooks:
            output = hook.post_forward(module, output)
        return output

    def detach_hook(self, module: nn.Module) -> nn.Module:
        for hook in self.hooks:
            module = hook.detach_hook(module)
        return module


def _hooked_forward(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
    hook = module._hf_hook
    args, kwargs = hook.pre_forward(module, *args, **kwargs)
    if hook.no_grad:
        with torch.no_grad():
            output = module._old_forward(*args, **kwargs)
    else:
        output = module._old_forward(*args, **kwargs)
    return hook.post_forward(module, output)


def add_hook_to_module(module: nn.Module, hook: ModelHook, append: bool = False) -> nn.Module:
    """Attach ``hook`` to ``module`` (replacing its hook, or chained after it with ``append``)."""
    if append and getattr(module, "_hf_hook", None) is not None:
        previous = module._hf_hook
        remove_hook_from_module(module)
        hook = SequentialHook(previous, hook)
    if hasattr(module, "_hf_hook") and hasattr(module, "_old_forward"):
        old_forward = module._old_forward
    else:
        old_forward = module.forward
        module._old_forward = old_forward
    module = hook.init_hook(module)
    module._hf_hook = hook
    forward = functools.update_wrapper(functools.partial(_hooked_forward, module), old_forward)
    if "GraphModuleImpl" in str(type(module)):  # torch.fx: forward lives on the class
        module.__class__.forward = forward
    else:
        module.forward = forward
    return module


def remove_hook_from_module(module: nn.Module, recurse: bool = False) -> nn.Module:
    """Detach the hook of ``module`` and restore its forward (in every submodule: ``recurse``)."""
    if hasattr(module, "_hf_hook"):
        module._hf_hook.detach_hook(module)
        delattr(module, "_hf_hook")
    if hasattr(module, "_old_forward"):
        if "GraphModuleImpl" in str(type(module)):
            module.__class__.forward = module._old_forward
        else:
            module.forward = module._old_forward
        delattr(module, "_old_forward")
    for attribute in _ADDED_ATTRIBUTES:
        module.__dict__.pop(attribute, None)
    if recurse:
        for child in module.children():
            remove_hook_from_module(child, recurse)
    return module


def remove_hook_from_submodules(module: nn.Module) -> None:
    """Remove the hooks of ``module`` and of all its submodules."""
    remove_hook_from_module(module, recurse=True)


class AlignDevicesHook(ModelHook):
    """Runs a module on ``execution_device``, bringing offloaded weights in for the forward.

    Args:
        execution_device: where inputs and weights are put for the forward.
        offload: weights live in ``weights_map`` and on the meta device between forwards.
        io_same_device: outputs go back to the device the inputs came from.
        weights_map: name -> tensor (a CPU state dict or ``OffloadedWeightsLoader``), used when
            ``offload``; default: a CPU copy of the module's weights taken at attach time.
        offload_buffers: offload the buffers too (else they stay on the execution device).
        place_submodules: handle the tensors of the submodules too, not only the module's own.
        skip_keys: keyword arguments left where they are (a key-value cache, say).
        tied_params_map: data pointer -> device -> tensor, so a tied weight is brought in once.
    """

    def __init__(
        self,
        execution_device: DeviceLike | None = None,
        offload: bool = False,
        io_same_device: bool = False,
        weights_map: Mapping | None = None,
        offload_buffers: bool = False,
        place_submodules: bool = False,
        skip_keys: str | list[str] | None = None,
        tied_params_map: dict[int, dict[Any, torch.Tensor]] | None = None,
    ) -> None:
        self.execution_device = execution_device
        self.offload = offload
        self.io_same_device = io_same_device
        self.weights_map = weights_map
        self.offload_buffers = offload_buffers
        self.place_submodules = place_submodules
        self.skip_keys = skip_keys
        self.input_device: torch.device | None = None
        self.param_original_devices: dict[str, torch.device] = {}
        self.buffer_original_devices: dict[str, torch.device] = {}
        self.tied_params_names: set[str] = set()
        self.tied_params_map = tied_params_map
        self.tied_pointers_to_remove: set[tuple[int, Any]] = set()

    def __repr__(self) -> str:
        return (
            f"AlignDevicesHook(execution_device={self.execution_device}, "
            f"offload={self.offload}, io_same_device={self.io_same_device}, "
            f"offload_buffers={self.offload_buffers}, "
            f"place_submodules={self.place_submodules}, skip_keys={self.skip_keys!r})"
        )

    def _offloaded(self, module: nn.Module) -> list[str]:
        return [
            name
            for name, _ in named_module_tensors(
                module,
                include_buffers=self.offload_buffers,
                recurse=self.place_submodules,
                remove_non_persistent=True,
            )
        ]

    def init_hook(self, module: nn.Module) -> nn.Module:
        if self.execution_device in ("meta", torch.device("meta")):
            self.tied_params_map = None
        recurse = self.place_submodules
        if not self.offload and self.execution_device is not None:
            for name, _ in named_module_tensors(module, recurse=recurse):
                set_module_tensor_to_device(
                    module, name, self.execution_device, tied_params_map=self.tied_params_map
                )
        elif self.offload:
            self.original_devices = {
                name: t.device for name, t in named_module_tensors(module, recurse=recurse)
            }
            if self.weights_map is None:
                self.weights_map = {
                    name: t.to("cpu")
                    for name, t in named_module_tensors(
                        module, include_buffers=self.offload_buffers, recurse=recurse
                    )
                }
            for name in self._offloaded(module):
                tensor = _get(module, name)
                if self.tied_params_map is not None and tensor.data_ptr() in self.tied_params_map:
                    self.tied_params_names.add(name)
                set_module_tensor_to_device(module, name, "meta")
            if self.execution_device is not None:
                buffers = (
                    [n for n, _ in module.named_buffers(recurse=recurse)]
                    if not self.offload_buffers
                    else list(get_non_persistent_buffers(module, recurse=recurse))
                )
                for name in buffers:
                    set_module_tensor_to_device(
                        module, name, self.execution_device, tied_params_map=self.tied_params_map
                    )
        return module

    def pre_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple, dict]:
        if self.io_same_device:
            self.input_device = find_device([args, kwargs])
        if self.offload:
            self.tied_pointers_to_remove = set()
            for name in self._offloaded(module):
                value = self.weights_map[name]
                if self.tied_params_map is not None:
                    pointer = value.data_ptr()
                    if name in self.tied_params_names and pointer not in self.tied_params_map:
                        self.tied_params_map[pointer] = {}
                    slot = self.tied_params_map.get(pointer)
                    if slot is not None and self.execution_device not in slot:
                        self.tied_pointers_to_remove.add((pointer, self.execution_device))
                set_module_tensor_to_device(
                    module,
                    name,
                    self.execution_device,
                    value=value,
                    tied_params_map=self.tied_params_map,
                    clear_cache=False,
                )
        return (
            _send(args, self.execution_device),
            _send(kwargs, self.execution_device, skip_keys=self.skip_keys),
        )

    def post_forward(self, module: nn.Module, output: Any) -> Any:
        if self.offload:
            for name in self._offloaded(module):
                set_module_tensor_to_device(module, name, "meta")
            for pointer, device in self.tied_pointers_to_remove:
                self.tied_params_map.get(pointer, {}).pop(device, None)
            self.tied_pointers_to_remove = set()
        if self.io_same_device and self.input_device is not None:
            output = _send(output, self.input_device, skip_keys=self.skip_keys)
        return output

    def detach_hook(self, module: nn.Module) -> nn.Module:
        if self.offload:
            for name, device in self.original_devices.items():
                if device != torch.device("meta"):
                    value = self.weights_map.get(name, None)
                    set_module_tensor_to_device(module, name, device, value=value)
        return module


def _get(module: nn.Module, name: str) -> torch.Tensor:
    for part in name.split("."):
        module = getattr(module, part)
    return module


def attach_execution_device_hook(
    module: nn.Module,
    execution_device: DeviceLike,
    skip_keys: str | list[str] | None = None,
    preload_module_classes: list[str] | None = None,
    tied_params_map: dict[int, dict[Any, torch.Tensor]] | None = None,
) -> None:
    """Give every submodule with weights a hook that moves its inputs to ``execution_device``."""
    if not hasattr(module, "_hf_hook") and len(module.state_dict()) > 0:
        add_hook_to_module(
            module,
            AlignDevicesHook(
                execution_device, skip_keys=skip_keys, tied_params_map=tied_params_map
            ),
        )
    if preload_module_classes is not None and module.__class__.__name__ in preload_module_classes:
        return
    for child in module.children():
        attach_execution_device_hook(
            child,
            execution_device,
            skip_keys=skip_keys,
            preload_module_classes=preload_module_classes,
            tied_params_map=tied_params_map,
        )


def attach_align_device_hook(
    module: nn.Module,
    execution_device: DeviceLike | None = None,
    offload: bool = False,
    weights_map: Mapping | None = None,
    offload_buffers: bool = False,
    module_name: str = "",
    skip_keys: str | list[str] | None = None,
    preload_module_classes: list[str] | None = None,
    tied_params_map: dict[int, dict[Any, torch.Tensor]] | None = None,
) -> None:
    """Attach an ``AlignDevicesHook`` to every submodule that holds tensors directly.

    A module of a ``preload_module_classes`` class gets one hook for all its weights (its
    submodules are not hooked): for modules that use a child's weights without calling it.
    """
    full_offload = bool(
        offload and preload_module_classes and module.__class__.__name__ in preload_module_classes
    )
    if next(named_module_tensors(module), None) is not None or full_offload:
        prefixed = None
        if weights_map is not None:
            prefixed = PrefixedDataset(weights_map, f"{module_name}." if module_name else "")
        hook = AlignDevicesHook(
            execution_device=execution_device,
            offload=offload,
            weights_map=prefixed,
            offload_buffers=offload_buffers,
            place_submodules=full_offload,
            skip_keys=skip_keys,
            tied_params_map=tied_params_map,
        )
        add_hook_to_module(module, hook, append=True)
    if full_offload:
        return
    for child_name, child in module.named_children():
        attach_align_device_hook(
            child,
            execution_device=execution_device,
            offload=offload,
            weights_map=weights_map,
            offload_buffers=offload_buffers,
            module_name=f"{module_name}.{child_name}" if module_name else child_name,
            skip_keys=skip_keys,
            preload_module_classes=preload_module_classes,
            tied_params_map=tied_params_map,
        )


def attach_align_device_hook_on_blocks(
    module: nn.Module,
    execution_device: DeviceLike | Mapping[str, DeviceLike] | None = None,
    offload: bool | Mapping[str, bool] = False,
    weights_map: Mapping | None = None,
    offload_buffers: bool = False,
    module_name: str = "",
    skip_keys: str | list[str] | None = None,
    preload_module_classes: list[str] | None = None,
    tied_params_map: dict[int, dict[Any, torch.Tensor]] | None = None,
) -> None:
    """Attach the hooks of a device map: one per block named in ``execution_device``/``offload``.

    A block kept on its device gets one hook placing all its weights there; an offloaded block
    gets hooks on its submodules that bring their weights in for each forward. The root module
    returns outputs on the device its inputs came from.
    """
    common = {"skip_keys": skip_keys, "tied_params_map": tied_params_map}
    if not isinstance(execution_device, Mapping) and not isinstance(offload, Mapping):
        if not offload:
            add_hook_to_module(
                module,
                AlignDevicesHook(
                    execution_device=execution_device,
                    io_same_device=True,
                    place_submodules=True,
                    **common,
                ),
            )
        else:
            attach_align_device_hook(
                module,
                execution_device=execution_device,
                offload=True,
                weights_map=weights_map,
                offload_buffers=offload_buffers,
                module_name=module_name,
                **common,
            )
        return
    if not isinstance(execution_device, Mapping):
        execution_device = dict.fromkeys(offload, execution_device)
    if not isinstance(offload, Mapping):
        offload = dict.fromkeys(execution_device, offload)
    named = module_name in execution_device and module_name in offload
    if named and not offload[module_name]:
        add_hook_to_module(
            module,
            AlignDevicesHook(
                execution_device=execution_device[module_name],
                offload_buffers=offload_buffers,
                io_same_device=(module_name == ""),
                place_submodules=True,
                **common,
            ),
        )
        attach_execution_device_hook(module, execution_device[module_name], **common)
    elif named:
        attach_align_device_hook(
            module,
            execution_device=execution_device[module_name],
            offload=True,
            weights_map=weights_map,
            offload_buffers=offload_buffers,
            module_name=module_name,
            preload_module_classes=preload_module_classes,
            **common,
        )
        if not hasattr(module, "_hf_hook"):
            add_hook_to_module(
                module,
                AlignDevicesHook(
                    execution_device=execution_device[module_name],
                    io_same_device=(module_name == ""),
                    **common,
                ),
            )
        attach_execution_device_hook(
            module,
            execution_device[module_name],
            preload_module_classes=preload_module_classes,
            **common,
        )
    elif module_name == "":
        add_hook_to_module(
            module,
            AlignDevicesHook(
                execution_device=execution_device.get(""), io_same_device=True, **common
            ),
        )
    for child_name, child in module.named_children():
        attach_align_device_hook_on_blocks(
            child,
            execution_device=execution_device,
            offload=offload,
            weights_map=weights_map,
            offload_buffers=offload_buffers,
            module_name=f"{module_name}.{child_name}" if module_name else child_name,
            preload_module_classes=preload_module_classes,
            **common,
        )


class CpuOffload(ModelHook):
    """Keeps a whole model on the CPU until its forward, then moves it to ``execution_device``.

    It stays there until ``init_hook`` runs again (``UserCpuOffloadHook.offload``).
    """

    def __init__(
        self,
        execution_device: DeviceLike | None = None,
        prev_module_hook: UserCpuOffloadHook | None = None,
    ) -> None:
        self.prev_module_hook = prev_module_hook
        if execution_device is None:
            kind = accelerator_type()
            execution_device = torch.device(kind, 0) if kind else torch.device("cpu")
        self.execution_device = _as_device(execution_device)

    def init_hook(self, module: nn.Module) -> nn.Module:
        return module.to("cpu")

    def pre_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple, dict]:
        previous = self.prev_module_hook
        on_cpu = torch.device("cpu")
        if isinstance(previous, UserCpuOffloadHook) and _first(previous.model) != on_cpu:
            previous.offload()
        if _first(module) == self.execution_device:
            return args, kwargs
        module.to(self.execution_device)
        return _send(args, self.execution_device), _send(kwargs, self.execution_device)


def _first(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class UserCpuOffloadHook:
    """What ``cpu_offload_with_hook`` returns: ``offload()`` puts the model back on the CPU."""

    def __init__(self, model: nn.Module, hook: CpuOffload) -> None:
        self.model = model
        self.hook = hook

    def offload(self) -> None:
        self.hook.init_hook(self.model)

    def remove(self) -> None:
        remove_hook_from_module(self.model)


__all__ = [
    "AlignDevicesHook",
    "CpuOffload",
    "ModelHook",
    "SequentialHook",
    "UserCpuOffloadHook",
    "add_hook_to_module",
    "attach_align_device_hook",
    "attach_align_device_hook_on_blocks",
    "attach_execution_device_hook",
    "remove_hook_from_module",
    "remove_hook_from_submodules",
]
