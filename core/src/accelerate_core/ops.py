"""Moving nested batches to a device and converting model outputs back to fp32."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch

Leaf = Callable[[Any], Any]


def apply_to_tensors(fn: Leaf, obj: Any, other: Leaf | None = None) -> Any:
    """Return ``obj`` with ``fn`` applied to every tensor, keeping the container types.

    Walks dicts (any Mapping), lists, tuples, namedtuples and dataclass instances. Other leaves go
    through ``other`` when given, else are returned unchanged.
    """
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, list):
        return [apply_to_tensors(fn, v, other) for v in obj]
    if isinstance(obj, tuple):
        values = [apply_to_tensors(fn, v, other) for v in obj]
        return type(obj)(*values) if hasattr(obj, "_fields") else type(obj)(values)
    if isinstance(obj, Mapping):
        items = {k: apply_to_tensors(fn, v, other) for k, v in obj.items()}
        try:
            return type(obj)(items)
        except TypeError:
            return items
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        new = copy.copy(obj)
        for f in dataclasses.fields(obj):
            object.__setattr__(new, f.name, apply_to_tensors(fn, getattr(obj, f.name), other))
        return new
    return obj if other is None else other(obj)


def send_to_device(obj: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Return ``obj`` with every tensor moved to ``device`` (see ``apply_to_tensors``).

    Leaves that are not tensors but have a ``to`` method (``BatchEncoding``-like) are moved too.
    """

    def move(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(device, non_blocking=non_blocking)

    def move_other(leaf: Any) -> Any:
        to = getattr(leaf, "to", None)
        if not callable(to):
            return leaf
        try:
            return to(device, non_blocking=non_blocking)
        except TypeError:
            return to(device)

    return apply_to_tensors(move, obj, move_other)


def _to_fp32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def convert_to_fp32(obj: Any) -> Any:
    """Return ``obj`` with fp16/bf16 tensors cast to fp32 (nested like ``apply_to_tensors``)."""
    return apply_to_tensors(_to_fp32, obj)
