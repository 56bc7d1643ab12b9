"""Tensor operations by HF's names (``accelerate.utils.operations``).

The collectives are the core's (``collectives.py``: exact uneven gathers, clear errors on every
rank); this module adds HF's helpers for walking nested data.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..collectives import (
    broadcast,
    broadcast_object_list,
    gather,
    gather_object,
    pad_across_processes,
    reduce,
)
from ..ops import convert_to_fp32, send_to_device
from .dataclasses import TensorInformation


class CannotPadNestedTensorWarning(UserWarning):
    pass


class DistributedOperationException(Exception):
    """A collective got mismatched input (HF's name; the core raises ``CollectiveError``)."""


def is_torch_tensor(tensor: Any) -> bool:
    return isinstance(tensor, torch.Tensor)


def is_tensor_information(tensor_info: Any) -> bool:
    return isinstance(tensor_info, TensorInformation)


def is_namedtuple(data: Any) -> bool:
    return isinstance(data, tuple) and hasattr(data, "_asdict") and hasattr(data, "_fields")


def honor_type(obj: Any, generator: Any) -> Any:
    """Build a container of ``obj``'s type (namedtuples included) from ``generator``."""
    if is_namedtuple(obj):
        return type(obj)(*list(generator))
    return type(obj)(generator)


def recursively_apply(
    func: Callable[..., Any],
    data: Any,
    *args: Any,
    test_type: Callable[[Any], bool] = is_torch_tensor,
    error_on_other_type: bool = False,
    **kwargs: Any,
) -> Any:
    """Apply ``func`` to every leaf of nested lists/tuples/dicts that passes ``test_type``."""
    if isinstance(data, (tuple, list)):
        return honor_type(
            data,
            (
                recursively_apply(
                    func, o, *args, test_type=test_type,
                    error_on_other_type=error_on_other_type, **kwargs,
                )
                for o in data
            ),
        )  # fmt: skip
    if isinstance(data, Mapping):
        return type(data)(
            {
                k: recursively_apply(
                    func, v, *args, test_type=test_type,
                    error_on_other_type=error_on_other_type, **kwargs,
                )
                for k, v in data.items()
            }
        )  # fmt: skip
    if test_type(data):
        return func(data, *args, **kwargs)
    if error_on_other_type:
        raise TypeError(
            f"Unsupported types ({type(data)}) passed to `{func.__name__}`. Only nested "
            f"list/tuple/dicts of objects that are valid for `{test_type.__name__}` should be "
            "passed."
        )
    return data


def get_data_structure(data: Any) -> Any:
    """``data`` with every tensor replaced by its ``TensorInformation``."""
    return recursively_apply(lambda t: TensorInformation(shape=t.shape, dtype=t.dtype), data)


def get_shape(data: Any) -> Any:
    return recursively_apply(lambda t: list(t.shape), data)


def initialize_tensors(data_structure: Any) -> Any:
    """Empty tensors shaped like a ``get_data_structure`` result."""
    return recursively_apply(
        lambda info: torch.empty(*info.shape, dtype=info.dtype),
        data_structure,
        test_type=is_tensor_information,
    )


def find_batch_size(data: Any) -> int:
    """The size of the first dimension of the first tensor in ``data``."""
    if isinstance(data, (tuple, list, Mapping)) and len(data) == 0:
        raise ValueError(f"Cannot find the batch size from empty {type(data)}.")
    if isinstance(data, (tuple, list)):
        return find_batch_size(data[0])
    if isinstance(data, Mapping):
        return find_batch_size(next(iter(data.values())))
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"Can only find the batch size of tensors but got {type(data)}.")
    return data.shape[0]


def ignorant_find_batch_size(data: Any) -> int | None:
    """``find_batch_size``, or ``None`` when ``data`` holds no tensor."""
    try:
        return find_batch_size(data)
    except (ValueError, TypeError):
        return None


def listify(data: Any) -> Any:
    """Nested tensors -> nested Python lists (``tensor.tolist()``)."""
    return recursively_apply(lambda t: t.cpu().tolist(), data)


def slice_tensors(
    data: Any, tensor_slice: Any, process_index: int | None = None, num_processes: int | None = None
) -> Any:
    return recursively_apply(lambda t: t[tensor_slice], data)


def concatenate(data: list[Any], dim: int = 0) -> Any:
    """Concatenate a list of nested structures of tensors leaf by leaf."""
    if isinstance(data[0], (tuple, list)):
        return honor_type(data[0], (concatenate([d[i] for d in data], dim=dim)
                                    for i in range(len(data[0]))))  # fmt: skip
    if isinstance(data[0], Mapping):
        return type(data[0])({k: concatenate([d[k] for d in data], dim=dim) for k in data[0]})
    if not isinstance(data[0], torch.Tensor):
        raise TypeError(f"Can only concatenate tensors but got {type(data[0])}")
    return torch.cat(data, dim=dim)


def find_device(data: Any) -> torch.device | None:
    """The device of the first tensor found in ``data``."""
    if isinstance(data, Mapping):
        for value in data.values():
            device = find_device(value)
            if device is not None:
                return device
    elif isinstance(data, (tuple, list)):
        for value in data:
            device = find_device(value)
            if device is not None:
                return device
    elif isinstance(data, torch.Tensor):
        return data.device
    return None


def pad_input_tensors(tensor: Any, batch_size: int, num_processes: int, dim: int = 0) -> Any:
    """Repeat the last row so the batch divides evenly between ``num_processes``."""

    def pad(t: torch.Tensor) -> torch.Tensor:
        remainder = batch_size % num_processes
        if remainder == 0:
            return t
        extra = num_processes - remainder
        return torch.cat([t, t.narrow(dim, t.shape[dim] - 1, 1).repeat_interleave(extra, dim)], dim)

    return recursively_apply(pad, tensor)


class ConvertOutputsToFp32:
    """Wraps a forward so its fp16/bf16 outputs come back as fp32 (HF's decorator class)."""

    def __init__(self, model_forward: Callable[..., Any]) -> None:
        self.model_forward = model_forward
        functools.update_wrapper(self, model_forward)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return convert_to_fp32(self.model_forward(*args, **kwargs))


def convert_outputs_to_fp32(model_forward: Callable[..., Any]) -> Callable[..., Any]:
    return ConvertOutputsToFp32(model_forward)


__all__ = [
    "CannotPadNestedTensorWarning",
    "ConvertOutputsToFp32",
    "DistributedOperationException",
    "broadcast",
    "broadcast_object_list",
    "concatenate",
    "convert_outputs_to_fp32",
    "convert_to_fp32",
    "find_batch_size",
    "find_device",
    "gather",
    "gather_object",
    "get_data_structure",
    "get_shape",
    "honor_type",
    "ignorant_find_batch_size",
    "initialize_tensors",
    "is_namedtuple",
    "is_tensor_information",
    "is_torch_tensor",
    "listify",
    "pad_across_processes",
    "pad_input_tensors",
    "recursively_apply",
    "reduce",
    "send_to_device",
    "slice_tensors",
]
