"""Seeding and RNG synchronisation by HF's names (``accelerate.utils.random``).

Prepared dataloaders here shuffle with a seed the library owns and saves, the same on every
process, so scripts need not synchronise generators for data order; these functions remain for
scripts that draw random numbers themselves and want every process to agree.
"""

from __future__ import annotations

from typing import Any

import torch

from ..collectives import broadcast_object_list
from ..seeding import set_seed
from ..state import PartialState
from .dataclasses import RNGType

DEVICE_RNG_TYPES = ("cuda", "xpu", "npu", "mlu", "musa", "sdaa", "hpu", "neuron")


def synchronize_rng_state(rng_type: Any = None, generator: torch.Generator | None = None) -> None:
    """Give every process the main process's state of one generator.

    ``rng_type``: ``"torch"`` (the CPU generator), a device type (``"cuda"``...: that device's
    generator) or ``"generator"`` (``generator``).
    """
    kind = str(rng_type.value if isinstance(rng_type, RNGType) else rng_type or "torch")
    state = PartialState()
    if state.num_processes == 1:
        return
    if kind == "torch":
        shared = broadcast_object_list([torch.get_rng_state()])[0]
        torch.set_rng_state(shared)
    elif kind == "generator":
        if generator is None:
            raise ValueError("synchronize_rng_state('generator') needs the generator")
        generator.set_state(broadcast_object_list([generator.get_state()])[0])
    elif kind in DEVICE_RNG_TYPES:
        module = getattr(torch, kind)
        index = state.device.index if state.device.type == kind else None
        current = module.get_rng_state(index) if index is not None else module.get_rng_state()
        shared = broadcast_object_list([current])[0]
        if index is not None:
            module.set_rng_state(shared, index)
        else:
            module.set_rng_state(shared)
    else:
        raise ValueError(
            f"unknown rng_type {rng_type!r}; valid: torch, generator, {', '.join(DEVICE_RNG_TYPES)}"
        )


def synchronize_rng_states(rng_types: list[Any], generator: torch.Generator | None = None) -> None:
    """``synchronize_rng_state`` for each of ``rng_types``."""
    for rng_type in rng_types:
        synchronize_rng_state(rng_type, generator=generator)


__all__ = ["set_seed", "synchronize_rng_state", "synchronize_rng_states"]
