"""Module and tensor helpers of big-model inference: sizes, tied weights, moving one tensor.

Everything here works on models whose weights are on the meta device (``init_empty_weights``):
sizes come from shapes and dtypes, never from data.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

DeviceLike = int | str | torch.device
_INTEGER_PREFIXES = ("torch.uint", "torch.int", "torch.bool")


def convert_file_size_to_int(size: int | str) -> int:
    """``"5GB"`` -> 5 * 10**9, ``"5GiB"`` -> 5 * 2**30 (a lowercase ``b`` means bits); ints pass."""
    message = (
        f"`size` {size!r} is not in a valid format. Use an integer for bytes, or a string "
        "with a unit (like '5.0GB' or '300MiB')."
    )
    if isinstance(size, int) and not isinstance(size, bool):
        if size < 0:
            raise ValueError(message)
        return size
    if not isinstance(size, str):
        raise ValueError(message)
    units = {"GIB": 2**30, "MIB": 2**20, "KIB": 2**10, "GB": 10**9, "MB": 10**6, "KB": 10**3}
    for unit, factor in units.items():
        if size.upper().endswith(unit):
            try:
                value = int(float(size[: -len(unit)]) * factor)
            except ValueError:
                raise ValueError(message) from None
            if not unit.endswith("IB") and size.endswith("b"):
                value //= 8
            if value < 0:
                raise ValueError(message)
            return value
    raise ValueError(message)


def dtype_byte_size(dtype: torch.dtype) -> float:
    """Bytes one element of ``dtype`` takes (``1/8`` for bool, as HF counts it)."""
    if dtype == torch.bool:
        return 1 / 8
    if dtype.is_floating_point and "float8" in str(dtype):
        return 1
    bits = re.search(r"[^\d](\d+)$", str(dtype))
    if bits is None:
        raise ValueError(f"`dtype` is not a valid dtype: {dtype}.")
    return int(bits.groups()[0]) // 8


def _proper_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float16"``, ``"torch.float16"`` or ``torch.float16`` -> ``torch.float16``."""
    if isinstance(dtype, str):
        name = dtype.removeprefix("torch.")
        value = getattr(torch, name, None)
        if not isinstance(value, torch.dtype):
            raise ValueError(f"dtype {dtype!r} is not a torch dtype (try 'float16' or 'bfloat16').")
        return value
    return dtype


def id_tensor_storage(tensor: torch.Tensor) -> tuple[torch.device, int, int]:
    """(device, storage pointer, storage bytes): equal for tensors that share their storage."""
    try:
        storage = tensor.untyped_storage()
        return tensor.device, storage.data_ptr(), storage.nbytes()
    except (NotImplementedError, RuntimeError):
        return tensor.device, 0, tensor.nelement() * tensor.element_size()


def accelerator_type() -> str | None:
    """The accelerator type torch drives in this process (``"cuda"``, ``"xpu"``, ...), or None."""
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is None or not accelerator.is_available():
        return None
    current = accelerator.current_accelerator()
    return None if current is None else current.type


def to_torch_device(device: DeviceLike) -> torch.device:
    """A device-map value as a ``torch.device``: an integer is that index of the accelerator."""
    if isinstance(device, torch.device):
        return device
    if isinstance(device, int) and not isinstance(device, bool):
        return torch.device(accelerator_type() or "cuda", device)
    if device == "disk":
        raise ValueError("'disk' is not a device tensors can be placed on; offload it instead.")
    return torch.device(device)


def named_module_tensors(
    module: nn.Module,
    include_buffers: bool = True,
    recurse: bool = False,
    remove_non_persistent: bool = False,
) -> Iterator[tuple[str, torch.Tensor]]:
    """The parameters of ``module`` and (``include_buffers``) its buffers, by name."""
    yield from module.named_parameters(recurse=recurse)
    if include_buffers:
        skip = get_non_persistent_buffers(module, recurse=recurse) if remove_non_persistent else ()
        for name, buffer in module.named_buffers(recurse=recurse):
            if name not in skip:
                yield name, buffer


def get_non_persistent_buffers(
    module: nn.Module, recurse: bool = False, fqns: bool = False
) -> set[str]:
    """Names of the buffers that ``state_dict`` leaves out (fully qualified with ``fqns``)."""
    names = set(module._non_persistent_buffers_set)
    if recurse:
        for prefix, sub in module.named_modules():
            if fqns:
                names |= {f"{prefix}.{b}" if prefix else b for b in sub._non_persistent_buffers_set}
            else:
                names |= sub._non_persistent_buffers_set
    return names


def _owner(module: nn.Module, tensor_name: str) -> tuple[nn.Module, str]:
    """The submodule holding ``tensor_name`` (dotted) and the tensor's own name in it."""
    *path, name = tensor_name.split(".")
    for part in path:
        child = getattr(module, part, None)
        if child is None:
            raise ValueError(
                f"{module.__class__.__name__} has no attribute {part} (looking for {tensor_name})."
            )
        module = child
    return module, name


def set_module_tensor_to_device(
    module: nn.Module,
    tensor_name: str,
    device: DeviceLike,
    value: torch.Tensor | None = None,
    dtype: str | torch.dtype | None = None,
    fp16_statistics: torch.Tensor | None = None,
    tied_params_map: dict[int, dict[Any, torch.Tensor]] | None = None,
    non_blocking: bool = False,
    clear_cache: bool = True,
) -> None:
    """Put parameter or buffer ``tensor_name`` of ``module`` on ``device`` (optionally ``value``).

    ``param.to(device)`` would make a tensor the module does not hold; this replaces the module's
    entry, keeping the parameter's class and ``requires_grad``. ``value`` is cast to ``dtype``
    when given (integer and bool values keep theirs), else to the current tensor's dtype, as
    ``load_state_dict`` does. With ``tied_params_map`` (data pointer -> device -> tensor) a tied
    weight already placed on ``device`` is reused instead of copied again.
    ``fp16_statistics`` (bitsandbytes) is accepted for HF compatibility and ignored.
    """
    owner, name = _owner(module, tensor_name)
    if name not in owner._parameters and name not in owner._buffers:
        raise ValueError(
            f"{owner.__class__.__name__} does not have a parameter or a buffer named "
            f"{name} ({tensor_name})."
        )
    is_buffer = name in owner._buffers
    old = getattr(owner, name)
    if tied_params_map is not None:
        for source in (value, old):
            if source is not None and source.device.type != "meta":
                placed = tied_params_map.get(source.data_ptr(), {}).get(device)
                if placed is not None:
                    (owner._buffers if is_buffer else owner._parameters)[name] = placed
                    return
    target = torch.device("meta") if device in ("meta", torch.device("meta")) else None
    target = target or to_torch_device(device)
    if old.device.type == "meta" and target.type != "meta" and value is None:
        raise ValueError(
            f"{tensor_name} is on the meta device, we need a `value` to put in on {device}."
        )
    if dtype is not None:
        dtype = _proper_dtype(dtype)
    if value is not None:
        if not isinstance(value, torch.Tensor):
            value = torch.tensor(value)
        if old.shape != value.shape:
            raise ValueError(
                f'Trying to set a tensor of shape {value.shape} in "{tensor_name}" '
                f"(which has shape {old.shape}), this looks incorrect."
            )
        if dtype is None:
            value = value.to(old.dtype, non_blocking=non_blocking)
        elif not str(value.dtype).startswith(_INTEGER_PREFIXES):
            value = value.to(dtype, non_blocking=non_blocking)
    with torch.no_grad():
        if value is None:
            new = old.to(target, non_blocking=non_blocking)
            if (
                dtype is not None
                and target.type == "meta"
                and not str(old.dtype).startswith(_INTEGER_PREFIXES)
            ):
                new = new.to(dtype)
        else:
            new = value.to(target, non_blocking=non_blocking)
        if is_buffer:
            owner._buffers[name] = new
        elif value is not None or new is not old:
            parameter = owner._parameters[name]
            cls = type(parameter) if isinstance(parameter, nn.Parameter) else nn.Parameter
            requires_grad = old.requires_grad and (new.is_floating_point() or new.is_complex())
            new = cls(new, requires_grad=requires_grad)
            extra = getattr(parameter, "__dict__", {})
            for key, attribute in extra.items():  # e.g. transformers' _is_hf_initialized
                setattr(new, key, attribute)
            owner._parameters[name] = new
    if clear_cache and target.type not in ("cpu", "meta"):
        _empty_cache(target)
    if tied_params_map is not None:
        for source in (old, value):
            if source is not None and source.device.type != "meta":
                slot = tied_params_map.get(source.data_ptr())
                if slot is not None and device not in slot:
                    slot[device] = new
                    break


def _empty_cache(device: torch.device) -> None:
    with contextlib.suppress(Exception):
        torch.accelerator.empty_cache()


def find_tied_parameters(model: nn.Module, **kwargs: Any) -> list[list[str]]:
    """Groups of parameter names that are the same ``Parameter`` object (each group sorted).

    Tying ``b.weight = a.weight`` gives ``[['a.weight', 'b.weight']]``.
    """
    names_of: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names_of.setdefault(id(param), []).append(name)
    return [sorted(names) for names in names_of.values() if len(names) > 1]


def retie_parameters(model: nn.Module, tied_params: list[list[str]]) -> None:
    """Make every name of each group the same parameter again (the first one not on meta)."""
    for group in tied_params:
        source = None
        for name in group:
            owner, attr = _owner(model, name)
            param = getattr(owner, attr)
            if param.device.type != "meta":
                source = param
                break
        if source is None:
            continue
        for name in group:
            owner, attr = _owner(model, name)
            setattr(owner, attr, source)


def _device_of(tensor_name: str, device_map: dict[str, Any]) -> Any:
    """The device-map value that covers ``tensor_name`` (its own entry or its closest parent's)."""
    name = tensor_name
    while name not in device_map:
        if name == "":
            raise ValueError(f"The `device_map` does not contain the module {tensor_name}.")
        name = name.rsplit(".", 1)[0] if "." in name else ""
    return device_map[name]


def check_tied_parameters_on_same_device(tied_params: list[list[str]], device_map: dict) -> None:
    """Warn when a device map splits a group of tied parameters over several devices."""
    for group in tied_params:
        devices = {name: _device_of(name, device_map) for name in group}
        if len(set(map(str, devices.values()))) > 1:
            logger.warning(
                f"Tied parameters are on different devices: {devices}. Please modify "
                "your custom device map or set `device_map='auto'`."
            )


def compute_module_sizes(
    model: nn.Module,
    dtype: str | torch.dtype | None = None,
    special_dtypes: dict[str, str | torch.dtype] | None = None,
    buffers_only: bool = False,
) -> dict[str, int]:
    """Bytes of every submodule (and tensor) by name; ``""`` is the whole model.

    With ``dtype``, floating tensors are counted at that dtype when it is smaller (as they will
    be loaded); ``special_dtypes`` overrides it per tensor name. Tied weights count once.
    """
    dtype_size = dtype_byte_size(_proper_dtype(dtype)) if dtype is not None else None
    special = {k: dtype_byte_size(_proper_dtype(v)) for k, v in (special_dtypes or {}).items()}
    sizes: dict[str, int] = defaultdict(int)
    tensors = model.named_buffers() if buffers_only else named_module_tensors(model, recurse=True)
    for name, tensor in tensors:
        if name in special:
            size = tensor.numel() * special[name]
        elif dtype_size is None or str(tensor.dtype).startswith(_INTEGER_PREFIXES):
            size = tensor.numel() * dtype_byte_size(tensor.dtype)
        else:
            size = tensor.numel() * min(dtype_size, dtype_byte_size(tensor.dtype))
        parts = name.split(".")
        for depth in range(len(parts) + 1):
            sizes[".".join(parts[:depth])] += size
    return sizes


def compute_module_total_buffer_size(
    model: nn.Module,
    dtype: str | torch.dtype | None = None,
    special_dtypes: dict[str, str | torch.dtype] | None = None,
) -> int:
    """Bytes of all buffers of ``model``."""
    sizes = compute_module_sizes(
        model, dtype=dtype, special_dtypes=special_dtypes, buffers_only=True
    )
    return sizes.get("", 0)


def get_max_layer_size(
    modules: list[tuple[str, Any]], module_sizes: dict[str, int], no_split_module_classes: list[str]
) -> tuple[int, list[str]]:
    """The largest block never split (a leaf module or a ``no_split`` class) and its names."""
    max_size, names = 0, []
    queue = list(modules)
    while queue:
        name, module = queue.pop(0)
        children = list(module.named_children()) if isinstance(module, nn.Module) else []
        if not children or module.__class__.__name__ in no_split_module_classes:
            size = module_sizes[name]
            if size > max_size:
                max_size, names = size, [name]
            elif size == max_size:
                names.append(name)
        else:
            queue = [(f"{name}.{n}", child) for n, child in children] + queue
    return max_size, names


def calculate_maximum_sizes(model: nn.Module) -> tuple[int, tuple[int, list[str]]]:
    """(total bytes, (bytes of the largest unit, its names)), splitting as transformers allows."""
    sizes = compute_module_sizes(model)
    no_split = list(getattr(model, "_no_split_modules", None) or [])
    modules = (
        list(model.named_parameters(recurse=False))
        + list(model.named_children())
        + list(model.named_buffers(recurse=False))
    )
    return sizes[""], get_max_layer_size(modules, sizes, no_split)


def has_offloaded_params(module: nn.Module) -> bool:
    """Whether ``module`` has a hook that offloads its weights (``AlignDevicesHook(offload=True)``).

    Duck-typed on the hook's ``offload`` attribute, so this module need not import the hooks.
    """
    hook = getattr(module, "_hf_hook", None)
    return hook is not None and bool(getattr(hook, "offload", False))


@contextlib.contextmanager
def align_module_device(module: nn.Module, execution_device: DeviceLike | None = None):
    """Within the block, the weights of ``module`` are on its execution device (or the one given).

    For offloaded modules the hook brings them in and puts them back after the block.
    """
    if has_offloaded_params(module):
        hook = module._hf_hook
        original = hook.execution_device
        if execution_device is not None:
            hook.execution_device = execution_device
        try:
            hook.pre_forward(module)
            yield
        finally:
            hook.post_forward(module, None)
            hook.execution_device = original
    elif execution_device is not None:
        devices = {name: p.device for name, p in module.named_parameters(recurse=False)}
        try:
            for name in devices:
                set_module_tensor_to_device(module, name, execution_device)
            yield
        finally:
            for name, device in devices.items():
                set_module_tensor_to_device(module, name, device)
    else:
        yield
