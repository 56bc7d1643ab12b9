"""Prepared dataloaders: batches placed on the device, end of epoch known one batch early."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .gradient_state import GradientState


class DataLoaderShard:
    """Iterates a ``DataLoader`` and yields each batch on the training device.

    It looks one batch ahead so that ``end_of_dataloader`` is already True while the last batch is
    being trained on; gradient accumulation uses that to step on an uneven tail. Every attribute
    it does not define (``dataset``, ``batch_size``, ``sampler``, ...) is the wrapped loader's.

    Args:
        dataloader: the user's loader (or one a backend rebuilt for sharding).
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

    def __iter__(self) -> Iterator[Any]:
        state = self.gradient_state
        place = self._place
        self.end_of_dataloader = False
        state.enter_dataloader(self)
        try:
            iterator = iter(self.base_dataloader)
            try:
                current = next(iterator)
            except StopIteration:
                return
            for upcoming in iterator:
                yield current if place is None else place(current)
                current = upcoming
            self.end_of_dataloader = True
            yield current if place is None else place(current)
        finally:
            state.exit_dataloader(self)
            self.end_of_dataloader = False
            self.iteration += 1

    def __len__(self) -> int:
        return len(self.base_dataloader)

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to a sampler that reshuffles per epoch (``set_epoch``)."""
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
        return f"DataLoaderShard({self.base_dataloader!r})"
