"""HF's miscellaneous helpers (``accelerate.utils.other``): unwrapping, saving, configs."""

from __future__ import annotations

import collections
import os
import socket
from collections.abc import Mapping
from typing import Any

import torch
from safetensors.torch import save_file

from ..config_files import default_config_path, write_config_file
from ..ops import ORIGINAL_FORWARD, uncompiled
from ..plugins import get_plugin_manager
from ..state import PartialState


def is_compiled_module(module: Any) -> bool:
    """True for a ``torch.compile`` wrapper (``OptimizedModule``)."""
    return uncompiled(module) is not module


def has_compiled_regions(module: torch.nn.Module) -> bool:
    """True when a sub-module is a ``torch.compile`` wrapper or was compiled in place."""
    return any(
        is_compiled_module(m) or getattr(m, "_compiled_call_impl", None) is not None
        for m in module.modules()
    )


def restore_forward(model: torch.nn.Module) -> torch.nn.Module:
    """Remove the mixed-precision forward wrapper ``prepare`` put on ``model`` (if any)."""
    if ORIGINAL_FORWARD in model.__dict__:
        model.forward = model.__dict__.pop(ORIGINAL_FORWARD)
    return model


def extract_model_from_parallel(
    model: Any,
    keep_fp32_wrapper: bool = True,
    keep_torch_compile: bool = True,
    recursive: bool = False,
) -> Any:
    """The user's module inside a prepared one.

    ``torch.compile`` wrappers are always removed (a wrapper's ``state_dict`` would prefix every
    key with ``_orig_mod.``; ``keep_torch_compile`` is accepted for HF's signature). The
    backend's wrapper is removed by the selected backend's plugin; torch's ``DataParallel`` and
    ``DistributedDataParallel`` are removed in any case.
    """
    inner = uncompiled(model)
    state = PartialState._shared_state
    if state.get("initialized"):
        unwrapped = get_plugin_manager().call_owner(
            "accelerate_core_unwrap_model", state["backend_owner"], model=inner, context=None
        )
        inner = uncompiled(inner if unwrapped is None else unwrapped)
    wrappers = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
    while isinstance(inner, wrappers):
        inner = uncompiled(inner.module)
    if not keep_fp32_wrapper:
        restore_forward(inner)
    return inner


def wait_for_everyone() -> None:
    """Barrier across every process (nothing to wait for with one)."""
    PartialState().wait_for_everyone()


def _storage_key(tensor: torch.Tensor) -> tuple[torch.device, int, int]:
    """What identifies a tensor's storage (tensors sharing it are one on disk)."""
    storage = tensor.untyped_storage()
    return tensor.device, storage.data_ptr(), storage.nbytes()


def clean_state_dict_for_safetensors(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Drop the aliases of tensors that share storage (safetensors refuses them) and make every
    tensor contiguous."""
    by_storage: dict[Any, list[str]] = collections.defaultdict(list)
    for name, tensor in state_dict.items():
        if isinstance(tensor, torch.Tensor):
            by_storage[_storage_key(tensor)].append(name)
    for names in by_storage.values():
        for name in names[1:]:
            del state_dict[name]
    return {k: v.contiguous() if isinstance(v, torch.Tensor) else v for k, v in state_dict.items()}


def save(
    obj: Any, f: Any, save_on_each_node: bool = False, safe_serialization: bool = False
) -> None:
    """``torch.save`` (or safetensors) once: on the main process, or on each machine's main.

    Written to a temporary name and renamed, so a reader never sees a half-written file.
    """
    state = PartialState()
    if not (state.is_local_main_process if save_on_each_node else state.is_main_process):
        return
    if safe_serialization:
        if not isinstance(obj, Mapping):
            raise TypeError("safe_serialization=True saves a dict of tensors (a state dict)")
        obj = clean_state_dict_for_safetensors(dict(obj))

        def writer(target: Any) -> None:
            save_file(obj, target, metadata={"format": "pt"})
    else:

        def writer(target: Any) -> None:
            torch.save(obj, target)

    if not isinstance(f, (str, os.PathLike)):
        writer(f)  # a file object: the caller owns it
        return
    tmp = f"{os.fspath(f)}.tmp-{os.getpid()}"
    writer(tmp)
    os.replace(tmp, f)


def load(f: Any, map_location: Any = None, **kwargs: Any) -> Any:
    """``torch.load`` with ``weights_only=True`` unless the caller says otherwise."""
    kwargs.setdefault("weights_only", True)
    return torch.load(f, map_location=map_location, **kwargs)


def write_basic_config(mixed_precision: str = "no", save_location: str | None = None) -> Any:
    """Write a launch config for this machine (``accel config`` without questions).

    Uses every accelerator torch sees (CPU when none); returns the path, or False when a file
    already exists there (it is never overwritten).
    """
    path = default_config_path() if save_location is None else save_location
    if os.path.exists(path):
        print(
            f"Configuration already exists at {path}, will not override. Run `accel config` "
            "manually or pass a different `save_location`."
        )
        return False
    mixed_precision = mixed_precision.lower()
    if mixed_precision not in ("no", "fp16", "bf16", "fp8"):
        raise ValueError(
            "`mixed_precision` should be one of 'no', 'fp16', 'bf16', or 'fp8'. Received "
            f"{mixed_precision}"
        )
    count = torch.accelerator.device_count() if torch.accelerator.is_available() else 0
    values = {"mixed_precision": mixed_precision, "num_processes": max(count, 1), "cpu": count == 0}
    return write_config_file(path, values)


def get_pretty_name(obj: Any) -> str:
    if not hasattr(obj, "__qualname__") and not hasattr(obj, "__name__"):
        obj = getattr(obj, "__class__", obj)
    if hasattr(obj, "__qualname__"):
        return obj.__qualname__
    if hasattr(obj, "__name__"):
        return obj.__name__
    return str(obj)


def merge_dicts(source: dict, destination: dict) -> dict:
    """Merge ``source`` into ``destination`` recursively (in place); returns ``destination``."""
    for key, value in source.items():
        if isinstance(value, dict):
            merge_dicts(value, destination.setdefault(key, {}))
        else:
            destination[key] = value
    return destination


def is_port_in_use(port: int | None = None) -> bool:
    port = port or 29500
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("localhost", port)) == 0


def convert_bytes(size: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if size < 1024.0:
            return f"{round(size, 2)} {unit}"
        size /= 1024.0
    return f"{round(size, 2)} PB"


def recursive_getattr(obj: Any, attr: str) -> Any:
    for name in attr.split("."):
        obj = getattr(obj, name)
    return obj


def check_os_kernel() -> None:
    """HF warns about old Linux kernels here; nothing to check for this core."""


def compile_regions(module: torch.nn.Module, **compile_kwargs: Any) -> torch.nn.Module:
    """Compile each repeated block in place: every child of the model's ``ModuleList``s.

    In-place compilation (``Module.compile``) keeps parameter names unchanged. Without any
    ``ModuleList`` the whole module is compiled.
    """
    blocks = [child for m in module.modules() if isinstance(m, torch.nn.ModuleList) for child in m]
    for block in blocks or [module]:
        block.compile(**compile_kwargs)
    return module


__all__ = [
    "check_os_kernel",
    "clean_state_dict_for_safetensors",
    "compile_regions",
    "convert_bytes",
    "extract_model_from_parallel",
    "get_pretty_name",
    "has_compiled_regions",
    "is_compiled_module",
    "is_port_in_use",
    "load",
    "merge_dicts",
    "recursive_getattr",
    "restore_forward",
    "save",
    "wait_for_everyone",
    "write_basic_config",
]
