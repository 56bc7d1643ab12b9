"""Stand-ins for an optimizer and a scheduler that the DeepSpeed config defines.

``Accelerator.prepare`` accepts any object that declares ``__accelerate_core_kind__``; the
``deepspeed`` backend replaces these with the engine's own optimizer and scheduler, and uses their
arguments to fill the ``"auto"`` values of the config's ``optimizer``/``scheduler`` sections.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


class DummyOptim:
    """The optimizer of the DeepSpeed config (``"optimizer": {"type": ..., "params": ...}``).

    Args:
        params: the parameters (or parameter groups) to optimise, as for a torch optimizer.
        lr: fills an ``"auto"`` entry of ``optimizer.params``; a value the config also sets
            differently is an error naming both. ``None`` means not given.
        weight_decay: the same for ``weight_decay``.
        **kwargs: the same for any other entry of ``optimizer.params``.
    """

    __accelerate_core_kind__ = "optimizer"

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | None = None,
        weight_decay: float | None = None,
        **kwargs: Any,
    ) -> None:
        self.params = list(params)
        self.lr = lr
        self.weight_decay = weight_decay
        self.kwargs = kwargs

    def hyperparameters(self) -> dict[str, Any]:
        """The values given here, by their name in ``optimizer.params``."""
        given = {"lr": self.lr, "weight_decay": self.weight_decay, **self.kwargs}
        return {k: v for k, v in given.items() if v is not None}

    def __repr__(self) -> str:
        return f"DummyOptim({len(self.params)} parameter entries, {self.hyperparameters()})"


class DummyScheduler:
    """The LR scheduler of the DeepSpeed config (``"scheduler": {"type": ..., "params": ...}``).

    Args:
        optimizer: the ``DummyOptim`` (or prepared optimizer) it schedules.
        total_num_steps: fills an ``"auto"`` entry of ``scheduler.params``; ``None`` means
            not given.
        warmup_num_steps: the same for ``warmup_num_steps``.
        **kwargs: the same for any other entry of ``scheduler.params``.
        lr_scheduler_callable: without a ``scheduler`` section, a function building the
            scheduler from the engine's optimizer (``lambda opt: LambdaLR(opt, ...)``).
    """

    __accelerate_core_kind__ = "scheduler"

    def __init__(
        self,
        optimizer: Any,
        total_num_steps: int | None = None,
        warmup_num_steps: int | None = None,
        lr_scheduler_callable: Callable[[Any], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.optimizer = optimizer
        self.total_num_steps = total_num_steps
        self.warmup_num_steps = warmup_num_steps
        self.lr_scheduler_callable = lr_scheduler_callable
        self.kwargs = kwargs

    def hyperparameters(self) -> dict[str, Any]:
        """The values given here, by their name in ``scheduler.params``."""
        given = {
            "total_num_steps": self.total_num_steps,
            "warmup_num_steps": self.warmup_num_steps,
            **self.kwargs,
        }
        return {k: v for k, v in given.items() if v is not None}

    def __repr__(self) -> str:
        return f"DummyScheduler({self.hyperparameters()})"
