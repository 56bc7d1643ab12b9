"""Samplers that give each process its share of every epoch.

``SharedSeedRandomSampler`` draws the same permutation on every process from a generator the
library owns (seed + epoch), a new one each epoch, and exposes its position as state.
``BatchSamplerShard`` deals the batches of a batch sampler out to the processes, so together they
see every sample of the epoch exactly once (plus, with ``even_batches``, a few repeated samples
from the start of the epoch that even out the last round; ``gather_for_metrics`` drops those).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch


class SharedSeedRandomSampler(torch.utils.data.Sampler[int]):
    """A random permutation of ``range(length)`` that is the same on every process.

    The permutation of epoch ``e`` is ``randperm(length)`` drawn from a fresh generator seeded
    with ``seed + e`` (as ``DistributedSampler`` does), so it depends on nothing but the seed, the
    epoch and the length: a resumed run redraws exactly the same order.
    """

    def __init__(self, length: int, seed: int) -> None:
        self.length = length
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.length, generator=generator).tolist())

    def __len__(self) -> int:
        return self.length

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])


class BatchSamplerShard(torch.utils.data.Sampler[list[int]]):
    """This process's batches out of ``batch_sampler``.

    Args:
        batch_sampler: yields lists of indices; must yield the same batches on every process.
        num_processes: the number of processes that share the batches.
        process_index: this process's place among them.
        split_batches: split every batch into ``num_processes`` slices (the batch size is then
            the global one) instead of dealing whole batches round-robin.
        even_batches: complete the last round with samples from the start of the epoch so every
            process gets the same number of batches of the same size. Off, processes may get
            different numbers of batches.
    """

    def __init__(
        self,
        batch_sampler: Any,
        num_processes: int,
        process_index: int,
        split_batches: bool = False,
        even_batches: bool = True,
    ) -> None:
        self.batch_sampler = batch_sampler
        self.num_processes = num_processes
        self.process_index = process_index
        self.split_batches = split_batches
        self.even_batches = even_batches
        self.batch_size = getattr(batch_sampler, "batch_size", None)
        self.drop_last = getattr(batch_sampler, "drop_last", False)
        if split_batches and self.batch_size is not None and self.batch_size % num_processes:
            raise ValueError(
                f"split_batches=True needs a batch size divisible by the {num_processes} "
                f"processes, got {self.batch_size}; change the batch size or use "
                "split_batches=False"
            )
        # Number of real samples in the last round of the epoch (None: that round had no
        # padding). Set while iterating, before the last batch is yielded.
        self.last_round_real: int | None = None

    @property
    def sampler(self) -> Any:
        return getattr(self.batch_sampler, "sampler", None)

    def set_epoch(self, epoch: int) -> None:
        for holder in (self.batch_sampler, self.sampler):
            set_epoch = getattr(holder, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(epoch)
                return

    @property
    def batch_counts(self) -> list[int]:
        """How many batches each process gets this epoch (the same answer on every process)."""
        return [self._length_for(rank) for rank in range(self.num_processes)]

    def __len__(self) -> int:
        return self._length_for(self.process_index)

    def _length_for(self, process_index: int) -> int:
        batches = len(self.batch_sampler)
        if self.split_batches:
            return batches
        if self.drop_last:
            return batches // self.num_processes
        if self.even_batches:
            return -(-batches // self.num_processes)
        return batches // self.num_processes + (
            1 if process_index < batches % self.num_processes else 0
        )

    def __iter__(self) -> Iterator[list[int]]:
        self.last_round_real = None
        if self.split_batches:
            yield from self._iter_split()
        else:
            yield from self._iter_round_robin()

    # ------------------------------------------------------------------ whole batches

    def _iter_round_robin(self) -> Iterator[list[int]]:
        world, rank = self.num_processes, self.process_index
        first: list[int] = []  # the epoch's first indices, to complete an uneven last round
        round_: list[list[int]] = []
        for batch in self.batch_sampler:
            batch = list(batch)
            if len(first) < world * (self.batch_size or len(batch)):
                first.extend(batch)
            round_.append(batch)
            full = self.batch_size is None or len(batch) == self.batch_size
            if len(round_) == world and full:
                yield round_[rank]
                round_ = []
        if not round_:
            return
        if self.drop_last:
            return
        if not self.even_batches:
            if rank < len(round_):
                yield round_[rank]
            return
        size = self.batch_size or len(round_[0])
        tail = [i for batch in round_ for i in batch]
        self.last_round_real = len(tail)
        tail.extend(_cycle(first, world * size - len(tail)))
        yield tail[rank * size : (rank + 1) * size]

    # ------------------------------------------------------------------ split batches

    def _iter_split(self) -> Iterator[list[int]]:
        world, rank = self.num_processes, self.process_index
        first: list[int] = []
        for batch in self.batch_sampler:
            batch = list(batch)
            if not first:
                first = list(batch)
            size = self.batch_size or len(batch)
            if len(batch) < size:  # the last, incomplete batch
                if self.even_batches:
                    self.last_round_real = len(batch)
                    batch = batch + _cycle(first, size - len(batch))
                else:
                    share = _even_share(batch, rank, world)
                    if share:
                        yield share
                    continue
            if len(batch) % world:
                raise ValueError(
                    f"split_batches=True got a batch of {len(batch)} samples for {world} "
                    "processes; the batch size must be divisible by the number of processes"
                )
            per = len(batch) // world
            yield batch[rank * per : (rank + 1) * per]


def _cycle(source: list[int], count: int) -> list[int]:
    out: list[int] = []
    while len(out) < count and source:
        out.extend(source[: count - len(out)])
    return out


def _even_share(items: list[int], rank: int, world: int) -> list[int]:
    per, extra = divmod(len(items), world)
    start = rank * per + min(rank, extra)
    return items[start : start + per + (1 if rank < extra else 0)]
