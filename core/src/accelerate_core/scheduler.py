"""The prepared learning-rate scheduler: steps when its optimizer really stepped, HF's way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .gradient_state import GradientState
from .optimizer import AcceleratedOptimizer


class AcceleratedScheduler:
    """Wraps an LR scheduler so that a loop calling ``scheduler.step()`` every batch is right.

    With ``step_with_optimizer`` (the default), ``step()`` does nothing on accumulation
    micro-steps and after an optimizer step that fp16 loss scaling skipped; after a real update it
    steps the scheduler ``steps_per_update`` times: the number of processes, or 1 with
    ``split_batches`` (Hugging Face's rule). A script that sizes its schedule from the unprepared
    dataloader (``len(loader) * epochs`` batches of one process) thus runs the whole schedule on
    any number of processes, each update counting for the batches all processes consumed. A
    ``OneCycleLR``-style scheduler (``total_steps``) is never stepped past its end. Without
    ``step_with_optimizer`` every call steps once.
    """

    def __init__(
        self,
        scheduler: Any,
        optimizers: Sequence[AcceleratedOptimizer],
        gradient_state: GradientState,
        step_with_optimizer: bool = True,
        steps_per_update: int = 1,
    ) -> None:
        self.scheduler = scheduler
        self.optimizers = list(optimizers)
        self.gradient_state = gradient_state
        self.step_with_optimizer = step_with_optimizer
        self.steps_per_update = steps_per_update
        self._total_steps = getattr(scheduler, "total_steps", None)

    def step(self, *args: Any, **kwargs: Any) -> None:
        if not self.step_with_optimizer:
            self.scheduler.step(*args, **kwargs)
            return
        if not self.gradient_state.sync_gradients:
            return
        for optimizer in self.optimizers:
            if optimizer.step_was_skipped:
                return
        scheduler, total = self.scheduler, self._total_steps
        for _ in range(self.steps_per_update):
            if total is not None and scheduler.last_epoch >= total:
                return  # OneCycleLR raises when stepped past total_steps
            scheduler.step(*args, **kwargs)

    def get_last_lr(self) -> list[float]:
        return self.scheduler.get_last_lr()

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state_dict)

    def __getattr__(self, name: str) -> Any:
        if name == "scheduler":
            raise AttributeError(name)
        return getattr(self.scheduler, name)

    def __repr__(self) -> str:
        return f"AcceleratedScheduler({self.scheduler!r})"


__all__ = ["AcceleratedScheduler"]
