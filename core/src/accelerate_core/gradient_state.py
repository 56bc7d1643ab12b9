"""Gradient-accumulation bookkeeping shared by the Accelerator, its optimizers and dataloaders."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class GradientState:
    """Whether this micro-step synchronises gradients and steps the optimizer.

    ``sync_gradients`` is True on the last micro-step of each accumulation cycle and on the last
    batch of a prepared dataloader (so an uneven tail still steps). The innermost dataloader being
    iterated decides ``end_of_dataloader``.
    """

    __slots__ = (
        "_dataloaders",
        "backwards",
        "has_joinable_models",
        "joined",
        "num_steps",
        "on_batch",
        "step",
        "sync_gradients",
        "sync_with_dataloader",
    )

    def __init__(self, num_steps: int = 1, sync_with_dataloader: bool = True) -> None:
        self.num_steps = num_steps
        self.sync_with_dataloader = sync_with_dataloader
        self.step = 0
        self.sync_gradients = True
        self._dataloaders: list[Any] = []
        # Uneven batch counts: a model that synchronises in backward (a torch ``Joinable``)
        # would wait forever for a process that ran out of batches, unless inside ``Join``.
        self.has_joinable_models = False
        self.joined = False
        self.backwards = 0  # Accelerator.backward calls: a step trained since a batch began
        # Called by prepared dataloaders before a pass and after each batch (preemption, resume).
        self.on_batch: Callable[[], None] | None = None

    @property
    def end_of_dataloader(self) -> bool:
        return bool(self._dataloaders) and self._dataloaders[-1].end_of_dataloader

    @property
    def mid_cycle(self) -> bool:
        """True between the micro-steps of an unfinished accumulation cycle: gradients are
        accumulated but not yet applied (a checkpoint must keep them)."""
        return self.step % self.num_steps != 0

    @property
    def active_dataloader(self) -> Any:
        return self._dataloaders[-1] if self._dataloaders else None

    def enter_dataloader(self, dataloader: Any) -> None:
        self._dataloaders.append(dataloader)

    def exit_dataloader(self, dataloader: Any) -> None:
        if dataloader in self._dataloaders:
            self._dataloaders.remove(dataloader)

    def advance(self) -> bool:
        """Count one micro-step; return (and record) whether it synchronises."""
        if self.sync_with_dataloader and self.end_of_dataloader:
            self.step = 0
            self.sync_gradients = True
        else:
            self.step += 1
            self.sync_gradients = self.step % self.num_steps == 0
        return self.sync_gradients
