"""The prepared learning-rate scheduler: steps only when its optimizer really stepped."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .gradient_state import GradientState
from .optimizer import AcceleratedOptimizer


class AcceleratedScheduler:
    """Wraps an LR scheduler so that a loop calling ``scheduler.step()`` every batch is right.

    With ``step_with_optimizer`` (the default), ``step()`` does nothing on accumulation
    micro-steps and after an optimizer step that fp16 loss scaling skipped, so the schedule counts
    real updates, as a hand-written loop that steps the scheduler after each update would.
    """

    def __init__(
        self,
        scheduler: Any,
        optimizers: Sequence[AcceleratedOptimizer],
        gradient_state: GradientState,
        step_with_optimizer: bool = True,
    ) -> None:
        self.scheduler = scheduler
        self.optimizers = list(optimizers)
        self.gradient_state = gradient_state
        self.step_with_optimizer = step_with_optimizer

    def step(self, *args: Any, **kwargs: Any) -> None:
        if self.step_with_optimizer:
            if not self.gradient_state.sync_gradients:
                return
            for optimizer in self.optimizers:
                if optimizer.step_was_skipped:
                    return
        self.scheduler.step(*args, **kwargs)

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
