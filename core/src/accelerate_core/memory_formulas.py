"""Model-state bytes per rank, computed from parameter shapes (``accel estimate-memory``).

Shared by the backends' ``accelerate_core_estimate_memory`` hooks. The optimizer is torch's
Adam/AdamW: two moments shaped like each trainable parameter (its dtype) and a ``step`` count
kept as a float32 scalar tensor per parameter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

ParameterInfo = tuple[tuple[int, ...], int, bool]  # (shape, element size, trainable)
ADAM_MOMENTS = 2
ADAM_STEP_BYTES = 4


def adam_bytes(local_numel: int, element_size: int) -> int:
    """Adam's state for one parameter whose local part has ``local_numel`` elements."""
    return ADAM_MOMENTS * local_numel * element_size + ADAM_STEP_BYTES


def dim0_rows(rows: int, world: int, rank: int) -> int:
    """Rows of a ``rows``-row tensor that ``rank`` holds when split along dimension 0 the way
    ``torch.chunk`` splits it (FSDP2): ``ceil(rows / world)`` each, the last ranks fewer or none."""
    chunk = math.ceil(rows / world) if rows else 0
    return max(0, min(chunk, rows - rank * chunk))


def per_rank(
    parameters: Sequence[ParameterInfo],
    world: int,
    local_numel: Callable[[tuple[int, ...], int], int],
    stored_numel: Callable[[tuple[int, ...], int], int] | None = None,
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(parameters, gradients, optimizer state) bytes of each rank, given how many elements of a
    parameter of a shape ``rank`` holds (``local_numel(shape, rank)``) and how many its storage
    has (``stored_numel``: a padded shard; default the same)."""
    stored_numel = stored_numel or local_numel
    params, grads, states = [], [], []
    for rank in range(world):
        p = g = s = 0
        for shape, size, trainable in parameters:
            local, stored = local_numel(shape, rank), stored_numel(shape, rank)
            p += stored * size
            if trainable:
                g += stored * size
                s += adam_bytes(local, size)
        params.append(p)
        grads.append(g)
        states.append(s)
    return tuple(params), tuple(grads), tuple(states)


def replicated(parameters: Sequence[ParameterInfo], world: int) -> tuple[tuple[int, ...], ...]:
    """Every rank holds everything (one process, DDP)."""
    return per_rank(parameters, world, lambda shape, rank: math.prod(shape))


def sharded_dim0(parameters: Sequence[ParameterInfo], world: int) -> tuple[tuple[int, ...], ...]:
    """Every parameter split along dimension 0 (FSDP2's ``fully_shard``); scalars replicated.

    FSDP2 keeps each rank's parameter and gradient shard in a storage padded to
    ``ceil(rows / world)`` rows (so all-gathers are even); the optimizer's moments are made
    like the local shard, unpadded."""

    def local(shape: tuple[int, ...], rank: int) -> int:
        if not shape:
            return 1
        return dim0_rows(shape[0], world, rank) * math.prod(shape[1:])

    def padded(shape: tuple[int, ...], rank: int) -> int:
        if not shape:
            return 1
        return math.ceil(shape[0] / world) * math.prod(shape[1:])

    return per_rank(parameters, world, local, padded)
