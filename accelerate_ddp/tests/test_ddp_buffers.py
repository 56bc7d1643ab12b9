"""Buffers under ddp (2 real processes): broadcast from rank 0 by default, kept per rank when
turned off, and no deprecation warning on any rank either way (torch >= 2.13 warns whenever
``broadcast_buffers`` is passed)."""

from __future__ import annotations

import warnings

import pytest
import torch

from accelerate_core.testing import run_distributed

pytestmark = pytest.mark.multiprocess


class WithBuffer(torch.nn.Module):
    def __init__(self, rank: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)
        self.register_buffer("seen", torch.full((1,), float(rank)))

    def forward(self, x):
        self.seen += 1
        return self.linear(x)


def prepare_and_step(**backend_options):
    import torch.distributed as dist

    from accelerate_core import Accelerator

    rank = dist.get_rank() if dist.is_initialized() else int(__import__("os").environ["RANK"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        accelerator = Accelerator(cpu=True, backend="ddp", backend_options=backend_options)
        model = accelerator.prepare(WithBuffer(rank))
        after_prepare = model.module.seen.item()
        model(torch.ones(1, 2)).sum().backward()
    return {
        "after_prepare": after_prepare,
        "after_forward": model.module.seen.item(),
        "warnings": [str(w.message) for w in caught if "broadcast_buffers" in str(w.message)],
    }


def test_buffers_are_broadcast_by_default_without_a_warning():
    results = run_distributed(prepare_and_step)
    assert [r["after_prepare"] for r in results] == [0.0, 0.0]  # rank 0's, at wrapping
    assert [r["after_forward"] for r in results] == [1.0, 1.0]
    assert [r["warnings"] for r in results] == [[], []]


def test_buffers_stay_per_rank_when_broadcast_is_off_without_a_warning():
    results = run_distributed(prepare_and_step, broadcast_buffers=False)
    assert [r["after_prepare"] for r in results] == [0.0, 1.0]
    assert [r["after_forward"] for r in results] == [1.0, 2.0]
    assert [r["warnings"] for r in results] == [[], []]
