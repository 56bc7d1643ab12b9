"""``LocalSGD``: train without gradient synchronisation, average the weights every K steps.

Each process updates its own copy of the model for ``local_sgd_steps`` optimizer steps, then all
processes average their parameters (an all-reduce of the weights instead of one per step). On
one process it does nothing. Gradient sync is switched off through the backend's own ``no_sync``
(for DDP, ``DistributedDataParallel.no_sync``); sharded backends are refused, because each
process holds only a shard of the weights to average.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any

import torch

from .errors import ConfigurationError

# Distributed types whose processes each hold the whole model (HF's list).
REPLICATED = ("NO", "MULTI_")


class LocalSGD:
    """Context manager: ``with LocalSGD(accelerator, model, local_sgd_steps=8) as local_sgd:``.

    Call ``local_sgd.step()`` after each ``optimizer.step()``; the weights are averaged every
    ``local_sgd_steps`` calls and when the block ends.

    Args:
        accelerator: the ``Accelerator`` that prepared ``model``.
        model: the prepared model whose parameters are averaged.
        local_sgd_steps: optimizer steps between two averages.
        enabled: ``False`` turns it into a no-op.
    """

    def __init__(
        self, accelerator: Any, model: torch.nn.Module, local_sgd_steps: int, enabled: bool = True
    ) -> None:
        kind = str(accelerator.distributed_type.value)
        if not kind.startswith(REPLICATED):
            raise ConfigurationError(
                f"LocalSGD averages whole models; the '{accelerator.backend}' backend "
                f"({kind}) shards them. Use a data-parallel backend (ddp)"
            )
        if enabled and (not isinstance(local_sgd_steps, int) or local_sgd_steps < 1):
            raise ConfigurationError(
                f"local_sgd_steps must be an integer >= 1, got {local_sgd_steps!r}"
            )
        self.enabled = enabled and accelerator.num_processes > 1
        self.num_steps = 0
        self.accelerator = accelerator
        self.model = model
        self.local_sgd_steps = local_sgd_steps
        self._no_sync: AbstractContextManager | None = None

    def __enter__(self) -> LocalSGD:
        if self.enabled:
            self._no_sync = self.accelerator.no_sync(self.model)
            self._no_sync.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self.enabled:
            return
        try:
            if exc_type is None:  # a failing process must not wait in a collective
                self._sync_and_avg_model_params()
        finally:
            assert self._no_sync is not None
            self._no_sync.__exit__(exc_type, exc, traceback)

    def step(self) -> None:
        """Count one optimizer step; average the weights every ``local_sgd_steps`` of them."""
        self.num_steps += 1
        if self.enabled and self.num_steps % self.local_sgd_steps == 0:
            self._sync_and_avg_model_params()

    @torch.no_grad()
    def _sync_and_avg_model_params(self) -> None:
        """Replace every parameter by its average over the processes."""
        self.accelerator.wait_for_everyone()
        for param in self.accelerator.unwrap_model(self.model).parameters():
            param.copy_(self.accelerator.reduce(param.detach(), reduction="mean"))


__all__ = ["LocalSGD"]
