"""A rank that never comes to FSDP's gradient reduce-scatter or clipping's norm all-reduce: the
other raises within the timeout, naming the operation and the missing rank (issue 17, item 3)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import torch

from accelerate_core.testing import run_distributed

pytestmark = pytest.mark.multiprocess

TIMEOUT = 3


def stuck(where: str) -> dict[str, object]:
    from accelerate_core import Accelerator, CollectiveError

    accelerator = Accelerator(cpu=True, backend="fsdp", timeout=timedelta(seconds=TIMEOUT))
    torch.manual_seed(0)
    model = accelerator.prepare(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 1)))
    loss = model(torch.ones(2, 4)).sum()
    late = accelerator.process_index == 1
    try:
        if where == "backward" and late:
            time.sleep(TIMEOUT + 4)
            return {"stuck": True}
        accelerator.backward(loss)
        if late:
            time.sleep(TIMEOUT + 4)
            return {"stuck": True}
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
    except CollectiveError as exc:
        return {"error": str(exc)}
    return {"error": None}


@pytest.mark.parametrize(
    ("where", "operation"),
    [("backward", "backward (gradient reduction)"), ("clip", "clip_grad_norm_")],
)
def test_a_missing_rank_is_named(where, operation):
    results = run_distributed(stuck, where, timeout=120)
    assert results[1] == {"stuck": True}
    assert results[0]["error"].startswith(
        f"{operation} failed on rank 0 of 2: rank 1 did not arrive within the process-group "
        "timeout (0:00:03)"
    )
