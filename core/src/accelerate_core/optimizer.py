"""The prepared optimizer: steps only when gradients are synchronised, through the backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .gradient_state import GradientState
from .hang_watch import translated


class AcceleratedOptimizer(torch.optim.Optimizer):
    """Wraps a ``torch.optim.Optimizer`` (``isinstance`` checks keep working).

    ``step()`` and ``zero_grad()`` do nothing on accumulation micro-steps that do not sync, so a
    loop written for one step per batch accumulates correctly. The update itself is the
    backend's/precision's ``step`` function, chosen once at ``prepare``; with fp16 loss scaling a
    step with inf/nan gradients is skipped and ``step_was_skipped`` says so.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_state: GradientState,
        step: Callable[[torch.optim.Optimizer], Any],
        scaler: Any = None,
    ) -> None:
        # Deliberately no super().__init__: the wrapped optimizer holds all optimizer state.
        self.optimizer = optimizer
        self.gradient_state = gradient_state
        self.scaler = scaler
        self._step = step
        self._skipped: Any = False
        self.unscaled = False

    # The attributes torch code reads off an optimizer are the wrapped one's.
    @property
    def state(self) -> Any:
        return self.optimizer.state

    @state.setter
    def state(self, value: Any) -> None:
        self.optimizer.state = value

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.optimizer.param_groups = value

    @property
    def defaults(self) -> dict[str, Any]:
        return self.optimizer.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self.optimizer.defaults = value

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.optimizer.add_param_group(param_group)

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict)

    def zero_grad(self, set_to_none: bool = True) -> None:
        if self.gradient_state.sync_gradients:
            self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Callable[[], Any] | None = None) -> None:  # type: ignore[override]
        if not self.gradient_state.sync_gradients:
            return
        if closure is not None:
            raise TypeError(
                "AcceleratedOptimizer.step does not take a closure: run the forward and "
                "accelerator.backward(loss) yourself, then call optimizer.step()"
            )
        try:
            self._skipped = self._step(self.optimizer)
        except RuntimeError as exc:  # a step that communicates (FSDP, DeepSpeed) lost a peer
            raise translated("optimizer step", exc) from exc
        self.unscaled = False

    @property
    def step_was_skipped(self) -> bool:
        """True when the last step was skipped because the fp16 gradients overflowed."""
        return bool(self._skipped)

    def train(self) -> None:
        if hasattr(self.optimizer, "train"):
            self.optimizer.train()

    def eval(self) -> None:
        if hasattr(self.optimizer, "eval"):
            self.optimizer.eval()

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__.copy()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"AcceleratedOptimizer({self.optimizer!r})"


__all__ = ["AcceleratedOptimizer"]
