"""Collectives across processes: gather, reduce, broadcast, padding.

Every function works on nested structures (dicts, lists, tuples, namedtuples, dataclasses of
tensors) and is a no-op with one process. Before moving tensors, ranks exchange the shapes and
dtypes of what they pass, so tensors of different lengths are padded and trimmed internally, and a
mismatch that cannot be gathered is the same clear error on every rank: never a hang, never rows
of one rank handed to another. A rank that never arrives makes the others raise
``CollectiveError`` naming the operation and the missing ranks once the process-group timeout
passes (``hang_watch``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from . import hang_watch
from .errors import CollectiveError
from .ops import apply_to_tensors

T = TypeVar("T")
# A ``group`` that is this process alone (a layout whose data-parallel size is 1): no traffic.
THIS_PROCESS = "this process"


def _world(group: Any = None) -> tuple[int, int]:
    """(rank, size) within ``group`` (None: every process)."""
    if group is THIS_PROCESS:
        return 0, 1
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(group), dist.get_world_size(group)
    return 0, 1


def run_collective(name: str, call: Callable[[], T], group: Any = None) -> T:
    """Run one torch.distributed call over ``group`` (default: every rank); a timeout or a lost
    peer becomes a ``CollectiveError`` naming the group's ranks that never came."""
    try:
        return call()
    except CollectiveError:
        raise
    except (RuntimeError, ValueError) as exc:  # DistBackendError/DistNetworkError are RuntimeErrors
        if hang_watch.is_communication_failure(exc):  # name the ranks that never came
            raise hang_watch.explain(name, exc, group) from exc
        rank, world = _world()
        raise CollectiveError(
            f"{name} failed on rank {rank} of {world}: another process did not reach this "
            f"{name} within the process-group timeout, or exited. Check the other ranks' output "
            f"(a crash, a hang, or a code path that skips the {name}). Cause: {exc}"
        ) from exc


def tensor_leaves(obj: Any) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []

    def collect(tensor: torch.Tensor) -> torch.Tensor:
        found.append(tensor)
        return tensor

    apply_to_tensors(collect, obj)
    return found


# What to use instead when a collective of tensors is given something else.
_OBJECT_ALTERNATIVE = {
    "gather": "gather other objects with gather_object()",
    "reduce": "put numbers in a tensor first (torch.tensor(value, device=accelerator.device))",
    "broadcast": "broadcast other objects with broadcast_object_list()",
    "pad_across_processes": "pad tensors only",
}


def non_tensor_leaf(obj: Any) -> tuple[str, Any] | None:
    """The path and value of the first leaf of ``obj`` that is not a tensor, or None."""
    if isinstance(obj, torch.Tensor):
        return None
    if isinstance(obj, (list, tuple)):
        items: Any = enumerate(obj)
    elif isinstance(obj, Mapping):
        items = obj.items()
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        items = ((f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj))
    else:
        return ("", obj)
    for key, value in items:
        found = non_tensor_leaf(value)
        if found is not None:
            return (f"[{key!r}]{found[0]}", found[1])
    return None


def require_tensors(name: str, obj: Any) -> None:
    """A ``TypeError`` (on every process alike, before any communication) for non-tensor data:
    never the local value returned as if it had been gathered."""
    found = non_tensor_leaf(obj)
    if found is not None:
        where = f" at {found[0]}" if found[0] else ""
        raise TypeError(
            f"{name}() takes tensors (nested in lists, tuples, dicts or dataclasses), got "
            f"{type(found[1]).__name__} {found[1]!r:.60}{where}; {_OBJECT_ALTERNATIVE[name]}"
        )


def _rebuild(obj: Any, replacements: list[Any]) -> Any:
    iterator = iter(replacements)
    return apply_to_tensors(lambda _: next(iterator), obj)


def _signature(tensors: list[torch.Tensor]) -> list[tuple[tuple[int, ...], str]]:
    return [(tuple(t.shape), str(t.dtype)) for t in tensors]


def _exchange_signatures(
    name: str, obj: Any, group: Any = None
) -> tuple[list[torch.Tensor], list[list[Any]]]:
    """This rank's tensors and every rank's signature; mismatched structures raise everywhere."""
    tensors = tensor_leaves(obj)
    _, world = _world(group)
    signatures: list[Any] = [None] * world
    mine = _signature(tensors)
    run_collective(name, lambda: dist.all_gather_object(signatures, mine, group=group), group)
    counts = {len(s) for s in signatures}
    if len(counts) > 1:
        described = ", ".join(f"rank {r}: {len(s)}" for r, s in enumerate(signatures))
        raise CollectiveError(
            f"{name}: processes passed different structures (tensors per rank: {described}); "
            "pass the same nesting of tensors on every process"
        )
    return tensors, signatures


def _check_trailing(name: str, signatures: list[list[Any]], index: int) -> None:
    reference_shape, reference_dtype = signatures[0][index]
    for rank, signature in enumerate(signatures):
        shape, dtype = signature[index]
        if (
            dtype != reference_dtype
            or len(shape) != len(reference_shape)
            or (len(shape) > 1 and shape[1:] != reference_shape[1:])
        ):
            raise CollectiveError(
                f"{name}: rank {rank} passed a tensor of shape {shape} and {dtype} where rank 0 "
                f"passed {reference_shape} and {reference_dtype}; tensors may differ only in "
                "their first dimension (use pad_across_processes for other dimensions)"
            )


def _require_identical(name: str, signatures: list[list[Any]], index: int) -> None:
    if any(s[index] != signatures[0][index] for s in signatures):
        shapes = ", ".join(f"rank {r}: {s[index]}" for r, s in enumerate(signatures))
        raise CollectiveError(
            f"{name}: every process must pass tensors of the same shape and dtype ({shapes})"
        )


def _all_gather_padded(
    name: str, tensor: torch.Tensor, lengths: list[int], group: Any = None
) -> list[torch.Tensor]:
    """All-gather tensors whose first dimensions are ``lengths``; returns them trimmed."""
    longest = max(lengths)
    if tensor.shape[0] < longest:
        pad = tensor.new_zeros((longest - tensor.shape[0], *tensor.shape[1:]))
        tensor = torch.cat([tensor, pad])
    # Moved as raw bytes: every dtype (bool, bf16, fp8...) travels on every process-group backend.
    flat = tensor.contiguous().reshape(longest, -1)
    wire = flat.view(torch.uint8) if flat.numel() else flat.to(torch.uint8)
    received = [torch.empty_like(wire) for _ in lengths]
    run_collective(name, lambda: dist.all_gather(received, wire, group=group), group)
    return [
        (r.view(tensor.dtype) if r.numel() else r.to(tensor.dtype)).reshape(tensor.shape)[:n]
        for r, n in zip(received, lengths)
    ]


def gather(obj: Any, group: Any = None) -> Any:
    """Concatenate every process's tensors along the first dimension, in rank order.

    0-dim tensors are treated as one-element vectors. Ranks may pass different lengths.
    ``group``: the processes to gather from (default every process).
    """
    require_tensors("gather", obj)
    _, world = _world(group)
    if world == 1:
        return obj
    tensors, signatures = _exchange_signatures("gather", obj, group)
    gathered = []
    for index, tensor in enumerate(tensors):
        _check_trailing("gather", signatures, index)
        if tensor.dim() == 0:
            tensor = tensor.reshape(1)
        lengths = [s[index][0][0] if s[index][0] else 1 for s in signatures]
        gathered.append(torch.cat(_all_gather_padded("gather", tensor, lengths, group)))
    return _rebuild(obj, gathered)


def gather_object(obj: Any, group: Any = None) -> list[Any]:
    """Every process's (picklable) ``obj``; lists are concatenated, other objects listed.

    ``group``: the processes to gather from (default every process; a background thread passes
    a group of every process of its own).
    """
    _, world = _world(group)
    if world == 1:
        return list(obj) if isinstance(obj, list) else [obj]
    received: list[Any] = [None] * world
    run_collective(
        "gather_object", lambda: dist.all_gather_object(received, obj, group=group), group
    )
    if all(isinstance(r, list) for r in received):
        return [item for r in received for item in r]
    return received


REDUCTIONS = ("sum", "mean", "max", "min", "none")


def reduce(obj: Any, reduction: str = "mean", scale: float = 1.0, group: Any = None) -> Any:
    """Sum, average, maximum or minimum of every process's tensors (same shapes everywhere),
    times ``scale``; ``"none"`` returns them unreduced."""
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"reduce: reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}"
        )
    require_tensors("reduce", obj)
    _, world = _world(group)
    if world == 1 or reduction == "none":
        return obj if scale == 1.0 else apply_to_tensors(lambda t: t * scale, obj)
    op = {"max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}.get(reduction, dist.ReduceOp.SUM)
    tensors, signatures = _exchange_signatures("reduce", obj, group)
    reduced = []
    for index, tensor in enumerate(tensors):
        _require_identical("reduce", signatures, index)
        work = tensor.detach().clone()
        if work.dtype in (torch.bfloat16, torch.float16, torch.bool):
            work = work.float()  # gloo cannot reduce these; reduce in fp32 and cast back
        run_collective("reduce", functools.partial(dist.all_reduce, work, op, group=group), group)
        if reduction == "mean":
            work = work / world
        reduced.append((work * scale if scale != 1.0 else work).to(tensor.dtype))
    return _rebuild(obj, reduced)


def broadcast(obj: Any, from_process: int = 0) -> Any:
    """Every process gets ``from_process``'s tensors (shapes must match everywhere)."""
    require_tensors("broadcast", obj)
    _, world = _world()
    if world == 1:
        return obj
    tensors, signatures = _exchange_signatures("broadcast", obj)
    out = []
    for index, tensor in enumerate(tensors):
        _require_identical("broadcast", signatures, index)
        work = tensor.detach().clone().contiguous()
        run_collective("broadcast", functools.partial(dist.broadcast, work, src=from_process))
        out.append(work)
    return _rebuild(obj, out)


def broadcast_object_list(
    objects: list[Any], from_process: int = 0, group: Any = None
) -> list[Any]:
    """Replace ``objects``' items in place with ``from_process``'s (picklable) items."""
    _, world = _world(group)
    if world > 1:
        run_collective(
            "broadcast_object_list",
            lambda: dist.broadcast_object_list(objects, src=from_process, group=group),
            group,
        )
    return objects


def pad_across_processes(
    obj: Any, dim: int = 0, pad_index: int = 0, pad_first: bool = False, group: Any = None
) -> Any:
    """Pad each tensor along ``dim`` to the longest size any process has there."""
    require_tensors("pad_across_processes", obj)
    _, world = _world(group)
    if world == 1:
        return obj
    tensors, signatures = _exchange_signatures("pad_across_processes", obj, group)
    padded = []
    for index, tensor in enumerate(tensors):
        if tensor.dim() == 0:
            padded.append(tensor)
            continue
        axis = dim % tensor.dim()
        longest = max(s[index][0][axis] for s in signatures)
        if tensor.shape[axis] == longest:
            padded.append(tensor)
            continue
        shape = list(tensor.shape)
        shape[axis] = longest - tensor.shape[axis]
        filler = tensor.new_full(shape, pad_index)
        parts = [filler, tensor] if pad_first else [tensor, filler]
        padded.append(torch.cat(parts, dim=axis))
    return _rebuild(obj, padded)
