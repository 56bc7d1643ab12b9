"""HF's ``accelerate.data_loader`` names: the prepared loaders and ``skip_first_batches``."""

from __future__ import annotations

from typing import Any

from .data import DataLoaderDispatcher, DataLoaderShard, SkipBatches, prepare_data_loader
from .gradient_state import GradientState
from .samplers import BatchSamplerShard, SharedSeedRandomSampler


def skip_first_batches(dataloader: Any, num_batches: int = 0) -> Any:
    """A loader whose next pass starts at batch ``num_batches`` of the epoch (then whole epochs).

    A prepared loader keeps its sharding and position bookkeeping; a plain ``DataLoader`` is
    wrapped (batches stay where the loader puts them).
    """
    if not isinstance(dataloader, DataLoaderShard):
        dataloader = DataLoaderShard(dataloader, GradientState(), None)
    return dataloader.skip_batches(num_batches)


# HF's names for the seedable sampler prepared loaders shuffle with, and the batch skipper.
SeedableRandomSampler = SharedSeedRandomSampler
SkipBatchSampler = SkipBatches

__all__ = [
    "BatchSamplerShard",
    "SkipBatchSampler",
    "DataLoaderDispatcher",
    "DataLoaderShard",
    "SeedableRandomSampler",
    "prepare_data_loader",
    "skip_first_batches",
]
