"""Prepared dataloaders: each process's share, placed on the device, end of epoch known early.

Map-style datasets are sharded by batch: the batch sampler is dealt out to the processes
(``BatchSamplerShard``), and a shuffling sampler is replaced by one that draws the same order on
every process from a seed the library owns. Iterable datasets are read by the main process only
and their batches dispatched to the others (``dispatch_batches``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, IterableDataset, RandomSampler

from .collectives import broadcast_object_list, tensor_leaves
from .errors import ConfigurationError
from .gradient_state import GradientState
from .ops import apply_to_tensors
from .samplers import BatchSamplerShard, SharedSeedRandomSampler

# DataLoader arguments carried over when a loader is rebuilt around a new batch sampler.
LOADER_SETTINGS = (
    "num_workers", "collate_fn", "pin_memory", "timeout", "worker_init_fn",
    "multiprocessing_context", "generator", "prefetch_factor", "persistent_workers",
    "pin_memory_device", "in_order",
)  # fmt: skip


class DataLoaderShard:
    """Iterates a ``DataLoader`` and yields each batch on the training device.

    It looks one batch ahead so that ``end_of_dataloader`` is already True while the last batch is
    being trained on; gradient accumulation uses that to step on an uneven tail. Every attribute
    it does not define (``dataset``, ``batch_size``, ``sampler``, ...) is the wrapped loader's.

    Args:
        dataloader: the loader to iterate (already sharded for this process, if needed).
        gradient_state: shared with the Accelerator.
        place: moves one batch to the device; ``None`` leaves batches where they are.
    """

    def __init__(
        self,
        dataloader: Any,
        gradient_state: GradientState,
        place: Callable[[Any], Any] | None = None,
    ) -> None:
        self.base_dataloader = dataloader
        self.gradient_state = gradient_state
        self._place = place
        self.end_of_dataloader = False
        self.iteration = 0
        self.batches_yielded = 0  # in the current pass: the position a checkpoint saves
        self._skip = 0  # batches to skip at the start of the next pass (resume)

    @property
    def remainder(self) -> int | None:
        """Real samples in the last global batch when the library padded it, else None."""
        batch_sampler = getattr(self.base_dataloader, "batch_sampler", None)
        return getattr(batch_sampler, "last_round_real", None)

    def _batches(self, skip: int = 0) -> Iterator[Any]:
        loader = self.base_dataloader
        if skip and isinstance(loader, DataLoader) and loader.batch_sampler is not None:
            # Skip by index: the skipped batches are never loaded.
            return iter(_rebuild(loader, SkipBatches(loader.batch_sampler, skip)))
        iterator: Iterator[Any] = iter(loader)
        for _ in range(skip):
            next(iterator, None)
        return iterator

    def _check_uneven_end(self) -> None:
        """Refuse (on every process alike) an epoch that would hang a synchronising model."""
        state = self.gradient_state
        counts = getattr(self.base_dataloader.batch_sampler, "batch_counts", None)
        if counts is None or len(set(counts)) == 1 or state.joined:
            return
        if state.has_joinable_models and torch.is_grad_enabled():
            raise ConfigurationError(
                f"even_batches=False gives the processes different numbers of batches "
                f"({', '.join(map(str, counts))}); training on them would hang the processes "
                "that finish first. Wrap the loop in "
                "`with accelerator.join_uneven_inputs([model]):`, or keep even_batches=True "
                "(evaluation under torch.no_grad() is fine)"
            )

    def __iter__(self) -> Iterator[Any]:
        state = self.gradient_state
        place = self._place
        self.end_of_dataloader = False
        self._check_uneven_end()
        self.set_epoch(self.iteration)
        skip, self._skip = self._skip, 0
        self.batches_yielded = skip
        state.enter_dataloader(self)
        try:
            # A resumed pass must leave the RNG as the uninterrupted run had it after fetching
            # this batch: creating a DataLoader iterator draws a seed from torch's RNG.
            rng = torch.get_rng_state() if skip else None
            iterator = self._batches(skip)
            try:
                current = next(iterator)
            except StopIteration:
                return
            finally:
                if rng is not None:
                    torch.set_rng_state(rng)
            for upcoming in iterator:
                self.batches_yielded += 1
                yield current if place is None else place(current)
                current = upcoming
            self.end_of_dataloader = True
            self.batches_yielded += 1
            yield current if place is None else place(current)
        finally:
            state.exit_dataloader(self)
            self.end_of_dataloader = False
            self.iteration += 1
            self.batches_yielded = 0

    def skip_batches(self, count: int) -> DataLoaderShard:
        """Start the next pass at batch ``count`` of the current epoch (resume)."""
        if count < 0:
            raise ValueError(f"cannot skip {count} batches")
        self._skip = count
        return self

    def state_dict(self) -> dict[str, Any]:
        """Position in the epoch and the library sampler's seed: what an exact resume needs."""
        sampler = library_sampler(self.base_dataloader)
        return {
            "iteration": self.iteration,
            "batches_yielded": self.batches_yielded,
            "sampler": sampler.state_dict() if sampler is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        sampler = library_sampler(self.base_dataloader)
        if state.get("sampler") is not None and sampler is not None:
            sampler.load_state_dict(state["sampler"])
        self.iteration = int(state["iteration"])
        self._skip = int(state["batches_yielded"])

    def __len__(self) -> int:
        return len(self.base_dataloader)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch (the shuffle order of a library-owned sampler depends on it)."""
        self.iteration = epoch
        for holder in (
            getattr(self.base_dataloader, "batch_sampler", None),
            getattr(self.base_dataloader, "sampler", None),
        ):
            set_epoch = getattr(holder, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(epoch)
                return

    def __getattr__(self, name: str) -> Any:
        if name == "base_dataloader":  # not set yet (unpickling): avoid infinite recursion
            raise AttributeError(name)
        return getattr(self.base_dataloader, name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_dataloader!r})"


class SkipBatches(torch.utils.data.Sampler[list[int]]):
    """The batches of ``batch_sampler`` after the first ``skip`` (indices only, nothing loaded)."""

    def __init__(self, batch_sampler: Any, skip: int) -> None:
        self.batch_sampler = batch_sampler
        self.skip = skip

    def __iter__(self) -> Iterator[list[int]]:
        return islice(iter(self.batch_sampler), self.skip, None)

    def __len__(self) -> int:
        return max(len(self.batch_sampler) - self.skip, 0)


def library_sampler(loader: Any) -> SharedSeedRandomSampler | None:
    """The shuffling sampler the library put in ``loader``, if any (its seed is resume state)."""
    holder = getattr(loader, "batch_sampler", None)
    for _ in range(4):
        if holder is None or isinstance(holder, SharedSeedRandomSampler):
            return holder
        holder = getattr(holder, "batch_sampler", None) or getattr(holder, "sampler", None)
    return None


def _rebuild(dataloader: DataLoader[Any], batch_sampler: Any) -> DataLoader[Any]:
    """``dataloader`` with another batch sampler and every other setting kept."""
    settings = {k: getattr(dataloader, k) for k in LOADER_SETTINGS if hasattr(dataloader, k)}
    if settings.get("num_workers", 0) == 0:
        settings.pop("prefetch_factor", None)
        settings["persistent_workers"] = False
    return DataLoader(dataloader.dataset, batch_sampler=batch_sampler, **settings)


class DataLoaderDispatcher(DataLoaderShard):
    """For iterable datasets: the main process reads the loader and sends each process its batch.

    Without ``split_batches`` each round reads one batch per process; with it, one batch split
    into ``num_processes`` slices. With ``even_batches`` a short last round is completed by
    repeating its batches (``remainder`` tells ``gather_for_metrics`` how many samples are real).
    """

    def __init__(
        self,
        dataloader: Any,
        gradient_state: GradientState,
        place: Callable[[Any], Any] | None,
        num_processes: int,
        process_index: int,
        split_batches: bool = False,
        even_batches: bool = True,
        reader: bool | None = None,
    ) -> None:
        super().__init__(dataloader, gradient_state, place)
        self.num_processes = num_processes
        self.process_index = process_index
        # The main process reads (it is data-parallel rank 0; so are its TP/CP peers).
        self.reader = process_index == 0 if reader is None else reader
        self.split_batches = split_batches
        self.even_batches = even_batches
        self._remainder: int | None = None

    @property
    def remainder(self) -> int | None:
        return self._remainder

    def _round(self, iterator: Iterator[Any]) -> list[Any] | None:
        """On the main process: one batch per process, or None when the epoch is over."""
        world = self.num_processes
        if self.split_batches:
            batch = next(iterator, None)
            if batch is None:
                return None
            return [_slice_batch(batch, rank, world) for rank in range(world)]
        batches = list(islice(iterator, world))
        if not batches:
            return None
        if len(batches) < world:
            if not self.even_batches:
                return batches + [None] * (world - len(batches))
            real = sum(_batch_length(b) for b in batches)
            batches = batches + [batches[i % len(batches)] for i in range(world - len(batches))]
            return [("padded", real, b) for b in batches]
        return batches

    def _batches(self, skip: int = 0) -> Iterator[Any]:
        batches = self._dispatched()
        return islice(batches, skip, None) if skip else batches

    def _dispatched(self) -> Iterator[Any]:
        self._remainder = None
        iterator = iter(self.base_dataloader) if self.reader else None
        while True:
            payloads: list[Any] = [None]
            if iterator is not None:  # the main process reads, the others receive
                payloads = [self._round(iterator)]
            broadcast_object_list(payloads, from_process=0)
            group = payloads[0]
            if group is None:
                return
            mine = group[self.process_index]
            if isinstance(mine, tuple) and len(mine) == 3 and mine[0] == "padded":
                self._remainder = mine[1]
                mine = mine[2]
            if mine is None:
                continue  # uneven end without padding: this process has no batch this round
            yield mine


def _batch_length(batch: Any) -> int:
    leaves = tensor_leaves(batch)
    return int(leaves[0].shape[0]) if leaves and leaves[0].dim() else 1


def _slice_batch(batch: Any, rank: int, world: int) -> Any:
    return apply_to_tensors(lambda t: torch.tensor_split(t, world)[rank], batch)


def shared_seed(generator: torch.Generator | None, num_processes: int) -> int:
    """A shuffle seed drawn once (from the user's generator, else torch's default, which
    ``set_seed`` controls) and the same on every process (the main process's)."""
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    if num_processes > 1:
        seed = broadcast_object_list([seed], from_process=0)[0]
    return seed


def _library_shuffled(batch_sampler: Any, dataset: Any, num_processes: int) -> Any:
    """The same batches, but shuffled by a sampler the library owns (same order on every rank)."""
    if type(batch_sampler) is not BatchSampler or type(batch_sampler.sampler) is not RandomSampler:
        return batch_sampler
    sampler = batch_sampler.sampler
    if sampler.replacement or sampler._num_samples is not None:
        return batch_sampler
    seed = shared_seed(sampler.generator, num_processes)
    return BatchSampler(
        SharedSeedRandomSampler(len(dataset), seed), batch_sampler.batch_size,
        batch_sampler.drop_last,
    )  # fmt: skip


def prepare_data_loader(
    dataloader: DataLoader[Any],
    num_processes: int,
    process_index: int,
    gradient_state: GradientState,
    place: Callable[[Any], Any] | None,
    split_batches: bool = False,
    even_batches: bool = True,
    dispatch_batches: bool | None = None,
    main_process: bool | None = None,
) -> DataLoaderShard:
    """Return this process's share of ``dataloader`` as a prepared loader.

    ``num_processes``/``process_index`` are the data-parallel size and rank (processes that
    share a batch, as tensor-parallel ranks do, pass the same rank); ``main_process`` (given
    when there are several processes) tells which one reads an iterable dataset and sends the
    others their batches, so that processes sharing a data-parallel rank get the same ones.
    """
    dataset = dataloader.dataset
    if isinstance(dataset, IterableDataset):
        if num_processes == 1 and main_process is None:  # one process (TP peers: dispatched)
            return DataLoaderShard(dataloader, gradient_state, place)
        if dispatch_batches is False:
            raise ConfigurationError(
                "an IterableDataset cannot be sharded by sampler; keep dispatch_batches=True "
                "(the main process reads it and sends each process its batches) or shard the "
                "stream yourself and pass a map-style dataset"
            )
        return DataLoaderDispatcher(
            dataloader, gradient_state, place, num_processes, process_index, split_batches,
            even_batches, main_process,
        )  # fmt: skip
    batch_sampler = dataloader.batch_sampler
    if batch_sampler is None:
        raise ConfigurationError(
            "prepare() needs a DataLoader that batches (batch_size=None turns batching off); "
            "give it a batch_size or a batch_sampler"
        )
    new_sampler = _library_shuffled(batch_sampler, dataset, num_processes)
    if num_processes > 1:
        new_sampler = BatchSamplerShard(
            new_sampler, num_processes, process_index, split_batches, even_batches
        )
    if new_sampler is batch_sampler:
        return DataLoaderShard(dataloader, gradient_state, place)
    return DataLoaderShard(_rebuild(dataloader, new_sampler), gradient_state, place)


__all__ = ["DataLoaderDispatcher", "DataLoaderShard", "prepare_data_loader"]
