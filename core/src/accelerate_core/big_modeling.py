"""Big-model inference: build a model without memory, load it over devices, run it offloaded.

``init_empty_weights`` builds a model on the meta device; ``load_checkpoint_and_dispatch`` loads
a checkpoint into it following a device map (``"auto"``: accelerators, then CPU, then disk,
under ``max_memory``) and attaches the hooks that run it; ``cpu_offload``/``disk_offload`` keep a
whole model's weights off the execution device and bring each module's in for its forward.
The names, signatures and behaviour follow HF Accelerate's ``accelerate.big_modeling``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ConfigurationError
from .hooks import (
    AlignDevicesHook,
    CpuOffload,
    UserCpuOffloadHook,
    add_hook_to_module,
    attach_align_device_hook,
    attach_align_device_hook_on_blocks,
)
from .utils.device_map import (
    check_device_map,
    get_balanced_memory,
    get_max_memory,
    infer_auto_device_map,
)
from .utils.loading import load_checkpoint_in_model
from .utils.modeling import (
    compute_module_sizes,
    find_tied_parameters,
    get_max_layer_size,
    named_module_tensors,
    retie_parameters,
    set_module_tensor_to_device,
    to_torch_device,
)
from .utils.offload import (
    INDEX_NAME,
    OffloadedWeightsLoader,
    extract_submodules_state_dict,
    offload_state_dict,
)

logger = logging.getLogger(__name__)

DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
INCLUDE_BUFFERS_ENV = "ACCELERATE_INIT_INCLUDE_BUFFERS"  # HF's variable, honoured as HF does


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


@contextmanager
def init_empty_weights(include_buffers: bool | None = None) -> Iterator[None]:
    """Within the block, models are created with their parameters on the meta device.

    Nothing is allocated for them (a 100-billion-parameter model builds in no memory and no
    time); weights tied in ``__init__`` stay tied. Buffers are real unless ``include_buffers``
    (default: the ``ACCELERATE_INIT_INCLUDE_BUFFERS`` flag). Load weights with
    ``load_checkpoint_and_dispatch``.
    """
    with init_on_device(torch.device("meta"), include_buffers=include_buffers) as value:
        yield value


def _same_device(tensor_device: torch.device, target: torch.device) -> bool:
    if target.index is None:
        return tensor_device.type == target.type
    return tensor_device == target


@contextmanager
def init_on_device(
    device: torch.device | str, include_buffers: bool | None = None
) -> Iterator[None]:
    """Within the block, models are created with their parameters on ``device``.

    ``include_buffers`` puts buffers there too (and every tensor created, through torch's device
    context). A parameter that is already on ``device`` is kept as it is, so ties hold.
    """
    if include_buffers is None:
        include_buffers = _flag(INCLUDE_BUFFERS_ENV)
    device = torch.device(device)
    if include_buffers:
        with device:
            yield
        return
    original = nn.Module.register_parameter

    def register_parameter(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original(module, name, param)
        if param is None or _same_device(param.device, device):
            return
        current = module._parameters[name]
        attributes = dict(current.__dict__)
        attributes["requires_grad"] = param.requires_grad
        hf_initialized = attributes.pop("_is_hf_initialized", None)
        moved = type(current)(current.to(device), **attributes)
        if hf_initialized is not None:
            moved._is_hf_initialized = hf_initialized
        module._parameters[name] = moved

    nn.Module.register_parameter = register_parameter
    try:
        yield
    finally:
        nn.Module.register_parameter = original


def _first_device(model: nn.Module) -> torch.device:
    return next(iter(model.parameters())).device


def cpu_offload(
    model: nn.Module,
    execution_device: torch.device | None = None,
    offload_buffers: bool = False,
    state_dict: dict[str, torch.Tensor] | None = None,
    preload_module_classes: list[str] | None = None,
) -> nn.Module:
    """Keep all weights in one CPU state dict; each module's go to ``execution_device`` for its
    forward and back to the meta device after (default device: the model's first parameter's)."""
    if execution_device is None:
        execution_device = _first_device(model)
    if state_dict is None:
        state_dict = {n: p.to("cpu") for n, p in model.state_dict().items()}
    add_hook_to_module(model, AlignDevicesHook(io_same_device=True), append=True)
    attach_align_device_hook(
        model,
        execution_device=execution_device,
        offload=True,
        offload_buffers=offload_buffers,
        weights_map=state_dict,
        preload_module_classes=preload_module_classes,
    )
    return model


def cpu_offload_with_hook(
    model: nn.Module,
    execution_device: int | str | torch.device | None = None,
    prev_module_hook: UserCpuOffloadHook | None = None,
) -> tuple[nn.Module, UserCpuOffloadHook]:
    """Keep ``model`` on the CPU until its forward; it then stays on ``execution_device``.

    It goes back to the CPU at the returned hook's ``offload()``, or at the forward of the model
    whose ``prev_module_hook`` it is.
    """
    hook = CpuOffload(execution_device=execution_device, prev_module_hook=prev_module_hook)
    add_hook_to_module(model, hook, append=True)
    return model, UserCpuOffloadHook(model, hook)


def disk_offload(
    model: nn.Module,
    offload_dir: str | os.PathLike[str],
    execution_device: torch.device | None = None,
    offload_buffers: bool = False,
    preload_module_classes: list[str] | None = None,
) -> nn.Module:
    """Keep all weights in ``offload_dir`` (safetensors files, written unless the folder already
    has an ``index.json``); each module reads its own for its forward and releases them after."""
    if not (Path(offload_dir) / INDEX_NAME).is_file():
        offload_state_dict(offload_dir, model.state_dict())
    if execution_device is None:
        execution_device = _first_device(model)
    weights_map = OffloadedWeightsLoader(save_folder=offload_dir)
    add_hook_to_module(model, AlignDevicesHook(io_same_device=True), append=True)
    attach_align_device_hook(
        model,
        execution_device=execution_device,
        offload=True,
        offload_buffers=offload_buffers,
        weights_map=weights_map,
        preload_module_classes=preload_module_classes,
    )
    return model


def _warn_on_move(method: Any, model: nn.Module) -> Any:
    @wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        moving = True
        if method.__name__ == "to":
            moving = torch._C._nn._parse_to(*args, **kwargs)[0] is not None
        if moving:
            logger.warning("You shouldn't move a model that is dispatched using accelerate hooks.")
            if any(p.device.type == "meta" for p in model.parameters()):
                raise RuntimeError(
                    "You can't move a model that has some modules offloaded to cpu or disk."
                )
        return method(*args, **kwargs)

    return wrapper


def dispatch_model(
    model: nn.Module,
    device_map: dict[str, int | str | torch.device],
    main_device: int | str | torch.device | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
    offload_dir: str | os.PathLike[str] | None = None,
    offload_index: dict[str, Any] | None = None,
    offload_buffers: bool = False,
    skip_keys: str | list[str] | None = None,
    preload_module_classes: list[str] | None = None,
    force_hooks: bool = False,
) -> nn.Module:
    """Place ``model`` as ``device_map`` says and attach the hooks that run it across devices.

    Modules mapped to ``"cpu"`` (when an accelerator runs the model) and to ``"disk"`` are
    offloaded: their weights wait in CPU memory or in ``offload_dir`` and are brought to the main
    device (default: the first accelerator in the map, else the CPU) for each forward. Outputs
    come back on the device of the inputs. With one device and no disk, the model is just moved.
    """
    check_device_map(model, device_map)
    devices = list(dict.fromkeys(device_map.values()))
    if len(devices) > 1 or "disk" in devices or force_hooks:
        if main_device is None:
            accelerators = [d for d in devices if d not in ("cpu", "disk")]
            main_device = accelerators[0] if accelerators else "cpu"
        if main_device != "cpu":
            cpu_modules = [n for n, d in device_map.items() if d == "cpu"]
            if state_dict is None and cpu_modules:
                state_dict = extract_submodules_state_dict(model.state_dict(), cpu_modules)
        disk_modules = [n for n, d in device_map.items() if d == "disk"]
        if offload_dir is None and offload_index is None and disk_modules:
            raise ConfigurationError(
                "We need an `offload_dir` to dispatch this model according to this `device_map`, "
                f"the following submodules need to be offloaded: {', '.join(disk_modules)}."
            )
        if (
            disk_modules
            and offload_index is None
            and not (Path(offload_dir) / INDEX_NAME).is_file()
        ):
            offload_state_dict(
                offload_dir, extract_submodules_state_dict(model.state_dict(), disk_modules)
            )
        execution_device = {
            name: main_device if device in ("cpu", "disk") else device
            for name, device in device_map.items()
        }
        execution_device[""] = main_device
        offloaded = ["disk"] if main_device in ("cpu", "mps") else ["cpu", "disk"]
        offload = {name: device in offloaded for name, device in device_map.items()}
        save_folder = offload_dir if disk_modules else None
        weights_map = None
        if state_dict is not None or save_folder is not None or offload_index is not None:
            weights_map = OffloadedWeightsLoader(
                state_dict=state_dict,
                save_folder=save_folder,
                index=offload_index,
                device=main_device if offload_index is not None else None,
            )
        _materialize_root_tensors(model, weights_map)
        tied_params = find_tied_parameters(model)
        tied_params_map: dict[int, dict[Any, torch.Tensor]] = {}
        for group in tied_params:
            for name in group:
                param = _get(model, name)
                if param.device.type != "meta":
                    tied_params_map[param.data_ptr()] = {}
        attach_align_device_hook_on_blocks(
            model,
            execution_device=execution_device,
            offload=offload,
            weights_map=weights_map,
            offload_buffers=offload_buffers,
            skip_keys=skip_keys,
            preload_module_classes=preload_module_classes,
            tied_params_map=tied_params_map,
        )
        where = " and ".join(d for d in ("cpu", "disk") if d in devices and d in offloaded)
        if where:
            logger.info(
                f"Some parameters are on the meta device because they were offloaded to "
                f"the {where}."
            )
        retie_parameters(model, tied_params)
        model.to = _warn_on_move(model.to, model)
        kind = torch.device(to_torch_device(main_device)).type if main_device != "cpu" else None
        accessor = kind if kind in ("cuda", "xpu", "npu", "mlu", "sdaa", "musa") else "cuda"
        if hasattr(model, accessor):
            setattr(model, accessor, _warn_on_move(getattr(model, accessor), model))
    else:
        model.to(to_torch_device(devices[0]))
    model.hf_device_map = dict(device_map)
    return model


def _materialize_root_tensors(model: nn.Module, weights_map: Any) -> None:
    """The root module's own tensors mapped to an offload are read into memory.

    The root's hook keeps them on the main device (it also moves every input), so they cannot be
    brought in per forward; HF Accelerate fails on them ("scale is on the meta device").
    """
    if weights_map is None:
        return
    for name, tensor in list(named_module_tensors(model)):
        if tensor.device.type == "meta" and name in weights_map:
            set_module_tensor_to_device(model, name, "cpu", value=weights_map[name])


def _get(model: nn.Module, name: str) -> torch.Tensor:
    for part in name.split("."):
        model = getattr(model, part)
    return model


def _human(size: float) -> str:
    for unit, factor in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{int(size)} bytes"


def _check_budgets(
    model: nn.Module,
    device_map: dict[str, Any],
    max_memory: dict | None,
    offload_folder: Any,
    dtype: Any,
    no_split_module_classes: list[str] | None,
) -> None:
    """Refuse, before reading any weight, a planned map that cannot run within its budgets."""
    sizes = compute_module_sizes(model, dtype=dtype)
    on_disk = sum(sizes[name] for name, device in device_map.items() if device == "disk")
    budgets = get_max_memory(dict(max_memory) if max_memory is not None else None)
    shown = {k: _human(v) for k, v in budgets.items() if k != "disk"}
    if on_disk and offload_folder is None:
        raise ConfigurationError(
            f"The model ({_human(sizes[''])} at this dtype) does not fit the memory budgets "
            f"{shown}: {_human(on_disk)} would have to be offloaded to disk. Pass "
            "offload_folder=<a folder> to offload it, or raise max_memory."
        )
    values = set(device_map.values())
    accelerators = [d for d in budgets if d not in ("cpu", "disk")]
    main = accelerators[0] if accelerators else "cpu"
    offloaded = {"disk"} if main in ("cpu", "mps") else {"cpu", "disk"}
    if not values & offloaded:
        return
    no_split = list(no_split_module_classes or [])
    modules = (
        list(model.named_parameters(recurse=False))
        + list(model.named_children())
        + list(model.named_buffers(recurse=False))
    )
    largest, names = get_max_layer_size(modules, sizes, no_split)
    if budgets.get(main, 0) < largest:
        raise ConfigurationError(
            f"max_memory gives {main!r} {_human(budgets.get(main, 0))}, but offloaded blocks are "
            f"brought there to run and the largest ({', '.join(names[:3])}) takes "
            f"{_human(largest)}. Raise max_memory[{main!r}] to at least {largest} bytes."
        )


def load_checkpoint_and_dispatch(
    model: nn.Module,
    checkpoint: str | os.PathLike[str],
    device_map: str | dict[str, int | str | torch.device] | None = None,
    max_memory: dict[int | str, int | str] | None = None,
    no_split_module_classes: list[str] | None = None,
    offload_folder: str | os.PathLike[str] | None = None,
    offload_buffers: bool = False,
    dtype: str | torch.dtype | None = None,
    offload_state_dict: bool | None = None,
    skip_keys: str | list[str] | None = None,
    preload_module_classes: list[str] | None = None,
    force_hooks: bool = False,
    strict: bool = False,
    full_state_dict: bool = True,
    broadcast_from_rank0: bool = False,
) -> nn.Module:
    """Load a (sharded) checkpoint into ``model`` and dispatch it (``load_checkpoint_in_model``
    then ``dispatch_model``).

    ``device_map``: a dict, or ``"auto"``/``"balanced"`` (spread evenly over the accelerators),
    ``"balanced_low_0"`` (keep accelerator 0 light for ``generate``) or ``"sequential"`` (fill
    them in order), computed under ``max_memory`` without splitting ``no_split_module_classes``.
    A planned map that needs the disk without an ``offload_folder``, or whose execution device
    cannot hold the largest block, is refused before any weight is read.
    """
    if isinstance(device_map, str) and device_map not in DEVICE_MAP_STRATEGIES:
        raise ConfigurationError(
            "If passing a string for `device_map`, please choose 'auto', "
            "'balanced', 'balanced_low_0' or 'sequential'."
        )
    if isinstance(device_map, str):
        budgets = max_memory
        if device_map != "sequential":
            budgets = get_balanced_memory(
                model,
                max_memory=max_memory,
                no_split_module_classes=no_split_module_classes,
                dtype=dtype,
                low_zero=(device_map == "balanced_low_0"),
            )
        device_map = infer_auto_device_map(
            model,
            max_memory=budgets,
            no_split_module_classes=no_split_module_classes,
            dtype=dtype,
            offload_buffers=offload_buffers,
        )
        _check_budgets(
            model, device_map, max_memory, offload_folder, dtype, no_split_module_classes
        )
    load_checkpoint_in_model(
        model,
        checkpoint,
        device_map=device_map,
        offload_folder=offload_folder,
        dtype=dtype,
        offload_state_dict=bool(offload_state_dict),
        offload_buffers=offload_buffers,
        strict=strict,
        full_state_dict=full_state_dict,
        broadcast_from_rank0=broadcast_from_rank0,
    )
    if device_map is None:
        return model
    return dispatch_model(
        model,
        device_map=device_map,
        offload_dir=offload_folder,
        offload_buffers=offload_buffers,
        skip_keys=skip_keys,
        preload_module_classes=preload_module_classes,
        force_hooks=force_hooks,
    )


__all__ = [
    "cpu_offload",
    "cpu_offload_with_hook",
    "disk_offload",
    "dispatch_model",
    "init_empty_weights",
    "init_on_device",
    "load_checkpoint_and_dispatch",
]
