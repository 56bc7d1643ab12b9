"""Collectives on 2 real processes: nested, uneven, mismatched, timed out."""

from __future__ import annotations

import time
from collections import namedtuple

import pytest
import torch

from accelerate_core.testing import run_distributed

pytestmark = pytest.mark.multiprocess

Pair = namedtuple("Pair", ["a", "b"])


def every_collective() -> dict[str, object]:
    from accelerate_core import Accelerator, CollectiveError
    from accelerate_core.collectives import broadcast, broadcast_object_list, gather_object

    accelerator = Accelerator(cpu=True)
    rank = accelerator.process_index
    out: dict[str, object] = {"num_processes": accelerator.num_processes}

    nested = {
        "x": torch.full((2, 3), float(rank)),
        "pair": Pair(torch.tensor(rank), [torch.ones(1)]),
    }
    out["nested"] = accelerator.gather(nested)
    # Uneven first dimension: rank 0 has 3 rows, rank 1 has 1 row; also bf16 and bool travel.
    rows = torch.arange(3 if rank == 0 else 1, dtype=torch.float32) + 10 * rank
    out["uneven"] = accelerator.gather(rows)
    out["uneven_bf16"] = accelerator.gather(rows.to(torch.bfloat16))
    out["bool"] = accelerator.gather(torch.tensor([rank == 0, True]))
    out["empty_on_one"] = accelerator.gather(torch.ones(0 if rank else 2, 2))
    for name, bad in {
        "mismatch_trailing": torch.zeros(2, 3 if rank == 0 else 4),
        "mismatch_dtype": torch.zeros(2, dtype=torch.float32 if rank == 0 else torch.int64),
        "mismatch_structure": [torch.zeros(1)] * (1 if rank == 0 else 2),
    }.items():
        try:
            accelerator.gather(bad)
            out[name] = "no error"
        except CollectiveError as exc:
            out[name] = str(exc)
    out["after_errors"] = accelerator.gather(torch.tensor([rank]))  # the group still works
    out["sum"] = accelerator.reduce(torch.tensor([1.0, rank]), "sum")
    out["mean"] = accelerator.reduce({"v": torch.tensor([2.0 * (rank + 1)])}, "mean")
    out["mean_bf16"] = accelerator.reduce(torch.tensor([rank + 1.0], dtype=torch.bfloat16), "mean")
    out["broadcast"] = broadcast(torch.tensor([rank + 5]), from_process=1)
    out["objects"] = broadcast_object_list([{"r": rank}, "x"], from_process=0)
    out["gather_object"] = gather_object([f"r{rank}"])
    out["padded"] = accelerator.pad_across_processes(torch.ones(rank + 1, 2), dim=0, pad_index=-1)
    out["padded_first"] = accelerator.pad_across_processes(
        torch.ones(2, rank + 1), dim=1, pad_first=True
    )
    with accelerator.split_between_processes(list(range(5)), apply_padding=True) as share:
        out["split"] = share
    return out


def test_every_collective_on_two_processes():
    results = run_distributed(every_collective)
    for rank, out in enumerate(results):
        assert out["num_processes"] == 2
        nested = out["nested"]
        assert torch.equal(nested["x"], torch.tensor([[0.0] * 3] * 2 + [[1.0] * 3] * 2))
        assert isinstance(nested["pair"], Pair)
        assert torch.equal(nested["pair"].a, torch.tensor([0, 1]))
        assert torch.equal(nested["pair"].b[0], torch.ones(2))
        assert torch.equal(out["uneven"], torch.tensor([0.0, 1.0, 2.0, 10.0]))
        assert out["uneven_bf16"].dtype == torch.bfloat16
        assert torch.equal(out["uneven_bf16"].float(), torch.tensor([0.0, 1.0, 2.0, 10.0]))
        assert torch.equal(out["bool"], torch.tensor([True, True, False, True]))
        assert out["empty_on_one"].shape == (2, 2)
        assert "rank 1 passed a tensor of shape (2, 4)" in out["mismatch_trailing"]
        assert "torch.int64 where rank 0 passed (2,) and torch.float32" in out["mismatch_dtype"]
        assert (
            "different structures (tensors per rank: rank 0: 1, rank 1: 2)"
            in (out["mismatch_structure"])
        )
        assert torch.equal(out["after_errors"], torch.tensor([0, 1]))
        assert torch.equal(out["sum"], torch.tensor([2.0, 1.0]))
        assert torch.equal(out["mean"]["v"], torch.tensor([3.0]))
        assert out["mean_bf16"].dtype == torch.bfloat16 and out["mean_bf16"].item() == 1.5
        assert torch.equal(out["broadcast"], torch.tensor([6]))
        assert out["objects"] == [{"r": 0}, "x"]
        assert out["gather_object"] == ["r0", "r1"]
        assert out["padded"].shape == (2, 2)
        expected_pad = torch.tensor([[1.0, 1.0], [-1.0, -1.0]]) if rank == 0 else torch.ones(2, 2)
        assert torch.equal(out["padded"], expected_pad)
        first = torch.tensor([[0.0, 1.0], [0.0, 1.0]]) if rank == 0 else torch.ones(2, 2)
        assert torch.equal(out["padded_first"], first)
        assert out["split"] == ([0, 1, 2] if rank == 0 else [3, 4, 4])


def stuck_rank() -> dict[str, object]:
    from datetime import timedelta

    from accelerate_core import Accelerator, CollectiveError

    accelerator = Accelerator(cpu=True, timeout=timedelta(seconds=3))
    if accelerator.process_index == 1:
        time.sleep(8)  # never reaches the gather
        return {"rank": 1}
    start = time.monotonic()
    try:
        accelerator.gather(torch.ones(1))
    except CollectiveError as exc:
        return {"rank": 0, "error": str(exc), "seconds": time.monotonic() - start}
    return {"rank": 0, "error": None}


def test_a_stuck_rank_makes_the_others_raise_within_the_timeout():
    results = run_distributed(stuck_rank, timeout=90)
    error, seconds = results[0]["error"], results[0].get("seconds")
    assert error is not None and error.startswith(
        "gather failed on rank 0 of 2: rank 1 did not arrive within the process-group timeout "
        "(0:00:03): hung, busy elsewhere, or exited"
    )
    assert seconds < 10
