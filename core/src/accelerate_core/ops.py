"""Moving nested batches to a device and converting model outputs back to fp32."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

Leaf = Callable[[Any], Any]
# Where a prepared model keeps its own forward while the precision's autocast wrapper replaces it.
ORIGINAL_FORWARD = "_accelerate_core_original_forward"


def uncompiled(model: Any) -> Any:
    """The module inside a ``torch.compile`` wrapper (``OptimizedModule``), else ``model``."""
    modules = getattr(model, "_modules", None)
    while modules is not None and "_orig_mod" in modules:
        model = modules["_orig_mod"]
        modules = getattr(model, "_modules", None)
    return model


def apply_to_tensors(fn: Leaf, obj: Any, other: Leaf | None = None) -> Any:
    """Return ``obj`` with ``fn`` applied to every tensor, keeping the container types.

    Walks dicts (any Mapping), lists, tuples, namedtuples and dataclass instances. Other leaves go
    through ``other`` when given, else are returned unchanged.
    """
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    # Tensor elements are handled inline: batches are mostly flat tuples/dicts of tensors.
    if isinstance(obj, list):
        return [fn(v) if isinstance(v, Tensor) else apply_to_tensors(fn, v, other) for v in obj]
    if isinstance(obj, tuple):
        values = [fn(v) if isinstance(v, Tensor) else apply_to_tensors(fn, v, other) for v in obj]
        return type(obj)(*values) if hasattr(obj, "_fields") else type(obj)(values)
    if isinstance(obj, Mapping):
        items = {
            k: fn(v) if isinstance(v, Tensor) else apply_to_tensors(fn, v, other)
            for k, v in obj.items()
        }
        mapping_type: Any = type(obj)  # dict, OrderedDict, ...: rebuilt as the same type
        try:
            return mapping_type(items)
        except TypeError:
            return items
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        new = copy.copy(obj)
        for f in dataclasses.fields(obj):
            object.__setattr__(new, f.name, apply_to_tensors(fn, getattr(obj, f.name), other))
        return new
    return obj if other is None else other(obj)


class DeviceMover:
    """Moves nested batches to one device; built once so each batch only pays for the walk."""

    __slots__ = ("device", "non_blocking")

    def __init__(self, device: torch.device, non_blocking: bool = False) -> None:
        self.device = device
        self.non_blocking = non_blocking

    def tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.device, non_blocking=self.non_blocking)

    def other(self, leaf: Any) -> Any:
        to = getattr(leaf, "to", None)
        if not callable(to):
            return leaf
        try:
            return to(self.device, non_blocking=self.non_blocking)
        except TypeError:
            return to(self.device)

    def __call__(self, batch: Any) -> Any:
        if isinstance(batch, torch.Tensor):
            return batch.to(self.device, non_blocking=self.non_blocking)
        return apply_to_tensors(self.tensor, batch, self.other)


def send_to_device(obj: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Return ``obj`` with every tensor moved to ``device`` (see ``apply_to_tensors``).

    Leaves that are not tensors but have a ``to`` method (``BatchEncoding``-like) are moved too.
    """
    return DeviceMover(device, non_blocking)(obj)


def _to_fp32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def convert_to_fp32(obj: Any) -> Any:
    """Return ``obj`` with fp16/bf16 tensors cast to fp32 (nested like ``apply_to_tensors``)."""
    return apply_to_tensors(_to_fp32, obj)
