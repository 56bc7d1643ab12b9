"""Device maps: which device each submodule of a model lives on, under memory budgets.

``infer_auto_device_map`` fills the accelerators in index order, then the CPU, then the disk,
never splitting a ``no_split_module_classes`` block, keeping tied weights together, and keeping
room on the execution device for the largest block it will have to bring in from an offload.
It makes the same maps as HF Accelerate for the same model and budgets. Device memory comes from
the device plugins (hook ``accelerate_core_device_memory_info``), so an accelerator that a
third-party plugin registers takes part like CUDA does.
"""

from __future__ import annotations

import logging
import warnings
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from ..errors import ConfigurationError
from ..plugins import get_plugin_manager
from .modeling import (
    accelerator_type,
    compute_module_sizes,
    compute_module_total_buffer_size,
    convert_file_size_to_int,
    find_tied_parameters,
    get_max_layer_size,
)

logger = logging.getLogger(__name__)

MEMORY_INFO_HOOK = "accelerate_core_device_memory_info"
NAMED_DEVICES = ("mps", "cpu", "disk")
DeviceKey = int | str
MaxMemory = dict[DeviceKey, int | str]


def device_memory_info(device: torch.device) -> tuple[int, int] | None:
    """``(free, total)`` bytes of ``device``, asked of the plugin that registered its type."""
    manager = get_plugin_manager()
    registered = manager.registry(strict=False)["device"].get(device.type)
    owner = registered.plugin if registered is not None else manager.defaults
    return manager.call_owner(MEMORY_INFO_HOOK, owner, device=device)


def _touch(device: torch.device) -> None:
    """Create a tensor on ``device`` so that its free memory counts the runtime's context."""
    torch.zeros(1, device=device)


def _available_memory() -> dict[DeviceKey, int]:
    memory: dict[DeviceKey, int] = {}
    kind = accelerator_type()
    if kind is not None and kind != "mps":
        for index in range(torch.accelerator.device_count()):
            device = torch.device(kind, index)
            try:
                _touch(device)
                info = device_memory_info(device)
            except Exception as exc:  # one unusable device must not hide the others
                logger.info(f"Device {device} seems unavailable ({exc}); skipping it.")
                continue
            if info is not None:
                memory[index] = int(info[0])
    host = device_memory_info(torch.device("cpu"))
    if host is None:
        import psutil

        host = (psutil.virtual_memory().available, psutil.virtual_memory().total)
    memory["mps" if kind == "mps" else "cpu"] = int(host[0])
    return memory


def get_max_memory(max_memory: MaxMemory | None = None) -> dict[DeviceKey, int]:
    """The budgets to plan with: ``max_memory`` with sizes in bytes and devices in map order.

    Without ``max_memory``: the free memory of every accelerator index (asked of its device
    plugin) and the available CPU memory. Keys are accelerator indices, ``"mps"``, ``"cpu"``
    and ``"disk"``; sizes are bytes or strings such as ``"300MB"`` or ``"2GiB"``.
    """
    if max_memory is None:
        return _available_memory()
    converted = {
        key: convert_file_size_to_int(value) if isinstance(value, str) else value
        for key, value in max_memory.items()
    }
    indices = sorted(k for k in converted if isinstance(k, int) and not isinstance(k, bool))
    count = torch.accelerator.device_count() if accelerator_type() not in (None, "mps") else 0
    for index in indices:
        if index >= count or index < 0:
            logger.warning(
                f"Device {index} is not available, available devices are {list(range(count))}"
            )
    order = indices + [k for k in NAMED_DEVICES if k in converted]
    unknown = [k for k in converted if k not in order]
    if unknown:
        raise ConfigurationError(
            f"max_memory: device {unknown[0]!r} is not recognized; use integers for the "
            f"accelerator's indices (0, 1, ...), 'mps', 'cpu' and 'disk'."
        )
    return {k: converted[k] for k in order}


def clean_device_map(device_map: dict[str, Any], module_name: str = "") -> dict[str, Any]:
    """Merge the entries under a module into one when they all name the same device."""
    prefix = f"{module_name}." if module_name else ""
    values = [v for k, v in device_map.items() if k.startswith(prefix)]
    if len(values) > 1 and len(set(map(_key, values))) == 1:
        for key in [k for k in device_map if k.startswith(prefix)]:
            del device_map[key]
        device_map[module_name] = values[0]
    depth = len(module_name.split(".")) + 1 if module_name else 1
    children = {
        ".".join(k.split(".")[:depth])
        for k in device_map
        if k.startswith(prefix) and len(k) > len(module_name)
    }
    for child in children:
        clean_device_map(device_map, module_name=child)
    return device_map


def _key(value: Any) -> str:
    return f"{type(value).__name__}:{value}"


def get_module_leaves(module_sizes: dict[str, int]) -> list[str]:
    """Names in ``module_sizes`` that have no child in it."""
    parents: dict[str, int] = {}
    for name in module_sizes:
        if name and "." in name:
            parent = name.rsplit(".", 1)[0]
            parents[parent] = parents.get(parent, 0) + 1
    return [name for name in module_sizes if name and parents.get(name, 0) == 0]


def _as_list(classes: list[str] | str | None) -> list[str]:
    if classes is None:
        return []
    return [classes] if isinstance(classes, str) else list(classes)


def get_balanced_memory(
    model: nn.Module,
    max_memory: MaxMemory | None = None,
    no_split_module_classes: list[str] | None = None,
    dtype: str | torch.dtype | None = None,
    special_dtypes: dict[str, str | torch.dtype] | None = None,
    low_zero: bool = False,
) -> dict[DeviceKey, int]:
    """Budgets that spread the model evenly over the accelerators (``device_map="balanced"``).

    Each accelerator but the last gets the model's size divided by their number plus a margin
    (the largest no-split block or 1.25 x the mean leaf block); ``low_zero`` keeps device 0 as
    empty as possible (for ``generate``). With one accelerator and no ``max_memory``, 10 % of it
    is kept free for activations.
    """
    user_set = max_memory is not None
    max_memory = get_max_memory(max_memory)
    indices = sorted(k for k, v in max_memory.items() if isinstance(k, int) and v > 0)
    count = len(indices) if "mps" not in max_memory else (max_memory["mps"] > 0) + len(indices)
    if count == 0:
        return max_memory
    if count == 1:
        low_zero = False
        if not user_set and indices:
            max_memory[indices[0]] = max_memory[indices[0]] * 0.9
            logger.info(
                f"We will use 90% of the memory on device {indices[0]} for storing the "
                "model, and 10% for the buffer to avoid OOM."
            )
    sizes = compute_module_sizes(model, dtype=dtype, special_dtypes=special_dtypes)
    per_device = sizes[""] // (count - 1 if low_zero else count)
    no_split = _as_list(no_split_module_classes)
    buffer = 0
    if no_split:
        found: dict[str, int] = {}
        modules = dict(model.named_modules())
        for name, size in sizes.items():
            module = modules.get(name) if name else None
            cls = module.__class__.__name__ if module is not None else None
            if cls in no_split and cls not in found:
                found[cls] = size
            if set(found) == set(no_split):
                break
        buffer = max(found.values(), default=0)
    leaves = set(get_module_leaves(sizes))
    blocks = {n: v for n, v in sizes.items() if n not in leaves}
    final = get_module_leaves(blocks)
    mean = int(sum(blocks[n] for n in final) / max(len(final), 1))
    per_device += int(1.25 * max(buffer, mean))
    for index in indices[:-1]:  # the last one keeps its whole budget in case the margin is short
        first = low_zero and index == 0
        max_memory[index] = min(max_memory[0] if first else per_device, max_memory[index])
    if low_zero:
        rest = sum(max_memory[i] for i in indices if i != 0)
        max_memory[0] = min(max(0, sizes[""] - rest), max_memory[0])
    return max_memory


def _tied_outside(name: str, tied_parameters: list[list[str]]) -> list[str]:
    """Parameters tied to one inside module ``name`` that are themselves outside it."""
    inside = name + "."
    groups = [
        group
        for group in tied_parameters
        if any(inside in k + "." for k in group) and not all(inside in k + "." for k in group)
    ]
    return [p for group in groups for p in group if inside not in p + "."]


def get_module_size_with_ties(
    tied_params: list[str],
    module_size: int,
    module_sizes: dict[str, int],
    modules_to_treat: list[tuple[str, Any]],
) -> tuple[int, list[str], list[nn.Module]]:
    """Size of a module plus the not-yet-placed modules holding weights tied to it."""
    if not tied_params:
        return module_size, [], []
    names, modules = [], []
    for param in tied_params:
        index = next(i for i, (n, _) in enumerate(modules_to_treat) if param.startswith(n + "."))
        names.append(modules_to_treat[index][0])
        modules.append(modules_to_treat[index][1])
    total = module_size
    for param, module_name in zip(tied_params, names):
        total += module_sizes[module_name] - module_sizes[param]
    return total, names, modules


def _children(module: Any) -> list[tuple[str, Any]]:
    if isinstance(module, (nn.Parameter, torch.Tensor)) or not isinstance(module, nn.Module):
        return []
    return list(module.named_children())


def _split(name: str, module: nn.Module) -> list[tuple[str, Any]]:
    parts = list(module.named_parameters(recurse=False)) + list(module.named_children())
    return [(f"{name}.{n}", v) for n, v in parts]


def fallback_allocate(
    modules: list[tuple[str, Any]],
    module_sizes: dict[str, int],
    size_limit: int | str,
    no_split_module_classes: list[str] | None = None,
    tied_parameters: list[list[str]] | None = None,
) -> tuple[str | None, Any, list[tuple[str, Any]]]:
    """Breadth-first, the first module that fits ``size_limit``; returned with the rest."""
    try:
        size_limit = convert_file_size_to_int(size_limit)
    except ValueError:
        return None, None, modules
    no_split = _as_list(no_split_module_classes)
    tied_parameters = tied_parameters or []
    queue = list(modules)
    found = None
    while queue:
        name, module = queue.pop(0)
        ties = _tied_outside(name, tied_parameters)
        size, _, _ = get_module_size_with_ties(ties, module_sizes[name], module_sizes, queue)
        if size <= size_limit:
            found = (name, module)
            break
        if _children(module) and module.__class__.__name__ not in no_split:
            queue = _split(name, module) + queue
    if found is None:
        return None, None, modules
    name = found[0]
    names = [n for n, _ in modules]
    for dot in [i for i, c in enumerate(name) if c == "."]:
        parent = name[:dot]
        if parent in names:
            index = names.index(parent)
            modules = modules[:index] + _split(parent, modules[index][1]) + modules[index + 1 :]
            names = [n for n, _ in modules]
    name, module = modules.pop(names.index(name))
    return name, module, modules


def infer_auto_device_map(
    model: nn.Module,
    max_memory: MaxMemory | None = None,
    no_split_module_classes: list[str] | None = None,
    dtype: str | torch.dtype | None = None,
    special_dtypes: dict[str, str | torch.dtype] | None = None,
    verbose: bool = False,
    clean_result: bool = True,
    offload_buffers: bool = False,
    fallback_allocation: bool = False,
) -> OrderedDict[str, DeviceKey]:
    """A device map for ``model``: accelerators first, then the CPU, then the disk.

    No device exceeds its budget; when anything is offloaded, the first accelerator (and the CPU,
    which brings disk weights in) keep room for the largest block. Works on a meta model.
    """
    budgets = get_max_memory(max_memory)
    no_split = _as_list(no_split_module_classes)
    devices = list(budgets.keys())
    if "disk" not in devices:
        devices.append("disk")
    accelerators = [d for d in devices if d not in ("cpu", "disk")]
    if "mps" in accelerators:
        main_devices = ["mps"]
    elif accelerators:
        main_devices = [accelerators[0], "cpu"]
    else:
        main_devices = ["cpu"]
    sizes = compute_module_sizes(model, dtype=dtype, special_dtypes=special_dtypes)
    tied_parameters = find_tied_parameters(model)
    queue: list[tuple[str, Any]] = (
        list(model.named_parameters(recurse=False))
        + list(model.named_children())
        + list(model.named_buffers(recurse=False))
    )
    device_map: OrderedDict[str, DeviceKey] = OrderedDict()
    current = 0
    used = {device: 0 for device in devices}
    buffer_sizes: dict[DeviceKey, int] = {}
    minimum_needed: dict[DeviceKey, int] = {}
    say = print if verbose else (lambda *a, **k: None)

    def largest(modules: list[tuple[str, Any]]) -> tuple[int, list[str]]:
        return get_max_layer_size(
            [(n, m) for n, m in modules if isinstance(m, nn.Module)], sizes, no_split
        )

    max_layer_size, max_layer_names = get_max_layer_size(queue, sizes, no_split)
    while queue:
        name, module = queue.pop(0)
        say(f"\nTreating module {name}.")
        max_layer_names = [n for n in max_layer_names if n != name and not n.startswith(name + ".")]
        if not max_layer_names:
            max_layer_size, max_layer_names = largest(queue)
        module_size = sizes[name]
        tied_params = _tied_outside(name, tied_parameters)
        device = devices[current]
        limit = budgets[device] if device != "disk" else None
        reserved = 0
        if device in main_devices:
            limit = limit - max_layer_size
            reserved = max_layer_size
        size_with_ties, tied_names, tied_modules = get_module_size_with_ties(
            tied_params, module_size, sizes, queue
        )
        if limit is None or used[device] + size_with_ties <= limit:
            say(f"Putting {name} (size={module_size}) on {device}.")
            used[device] += size_with_ties
            device_map[name] = device
            for tied_name in tied_names:
                names = [n for n, _ in queue]
                if tied_name in names:
                    queue.pop(names.index(tied_name))
                device_map[tied_name] = device
            if not offload_buffers and isinstance(module, nn.Module):
                buffers = compute_module_total_buffer_size(module, dtype, special_dtypes)
                buffer_sizes[device] = buffer_sizes.get(device, 0) + buffers
            continue
        if tied_params and used[device] + module_size <= limit:
            split_done = False
            for tied_name, tied_module in zip(tied_names, tied_modules):
                if not _children(tied_module) or tied_module.__class__.__name__ in no_split:
                    continue
                say(f"Splitting {tied_name}.")
                index = [n for n, _ in queue].index(tied_name)
                pieces = _split(tied_name, tied_module)
                queue = [(name, module), *queue[:index], *pieces, *queue[index + 1 :]]
                max_layer_size, max_layer_names = largest(queue)
                split_done = True
                break
            if split_done:
                continue
        splittable = _children(module) and module.__class__.__name__ not in no_split
        if used[device] + module_size >= limit and splittable:
            say(f"Splitting {name}.")
            queue = _split(name, module) + queue
            max_layer_size, max_layer_names = largest(queue)
            continue
        if used[device] == 0 and fallback_allocation and device != "disk":
            room = budgets[device] - max(max_layer_size, size_with_ties)
            found, found_module, rest = fallback_allocate(
                queue, sizes, room - used[device], no_split, tied_parameters
            )
            if found_module is not None:
                queue = [(found, found_module), (name, module), *rest]
                continue
        if used[device] == 0:
            minimum_needed[device] = size_with_ties + reserved
        used[device] += reserved
        current += 1
        queue = [(name, module), *queue]
    used = {device: size for device, size in used.items() if size > 0}
    if clean_result:
        device_map = clean_device_map(device_map)
    _warn_offloaded_buffers(buffer_sizes, budgets, used, accelerators, offload_buffers)
    if minimum_needed:
        lines = "\n".join(f"  - {d}: {m} bytes required" for d, m in minimum_needed.items())
        logger.info(f"No modules could be assigned to these devices for lack of memory:\n{lines}")
    return device_map


def _warn_offloaded_buffers(
    buffer_sizes: dict[DeviceKey, int],
    budgets: dict[DeviceKey, int],
    used: dict[DeviceKey, int],
    accelerators: list[DeviceKey],
    offload_buffers: bool,
) -> None:
    offloaded = buffer_sizes.get("cpu", 0) + buffer_sizes.get("disk", 0)
    if offloaded == 0 or offload_buffers or not accelerators:
        return
    fits = any(
        budget >= offloaded + used.get(device, 0)
        for device, budget in budgets.items()
        if device not in ("cpu", "disk")
    )
    if not fits:
        warnings.warn(
            f"Current model requires {offloaded} bytes of buffer for offloaded layers, which "
            "seems does not fit any GPU's remaining memory. If you are experiencing a OOM "
            "later, please consider using offload_buffers=True.",
            stacklevel=3,
        )


def check_device_map(model: nn.Module, device_map: dict[str, Any]) -> None:
    """Raise unless every tensor of ``model``'s state dict has a device in ``device_map``.

    Keys naming neither a submodule nor a tensor (root buffers are mapped by their own name, as
    ``infer_auto_device_map`` does) are warned about.
    """
    known = {name for name, _ in model.named_modules()}
    known |= {name for name, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    invalid = [k for k in device_map if k != "" and k not in known]
    if invalid:
        warnings.warn(
            f"The following device_map keys do not match any submodules in the model: {invalid}",
            UserWarning,
            stacklevel=2,
        )
    if "" in device_map:
        return
    uncovered = [
        name
        for name in model.state_dict()
        if not any(name == k or name.startswith(k + ".") for k in device_map)
    ]
    if uncovered:
        raise ConfigurationError(
            "The device_map provided does not give any device for the following parameters: "
            + ", ".join(uncovered)
        )
