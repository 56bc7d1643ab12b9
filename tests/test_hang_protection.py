"""A rank that never comes: every waiting rank raises within the timeout, naming the operation
and the rank(s) that did not arrive (issue 17, item 3). Real processes, gloo, 3 s timeouts."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from accelerate_core.testing import run_distributed

pytestmark = pytest.mark.multiprocess

TIMEOUT = 3.0
LATE = TIMEOUT + 4  # the stuck rank sleeps past the others' timeout and grace, then returns


def new_accelerator():
    from accelerate_core import Accelerator

    return Accelerator(cpu=True, timeout=timedelta(seconds=TIMEOUT))


def outcome(call) -> dict[str, object]:
    from accelerate_core import CollectiveError

    start = time.monotonic()
    try:
        call()
    except CollectiveError as exc:
        return {"error": str(exc), "seconds": time.monotonic() - start}
    return {"error": None, "seconds": time.monotonic() - start}


def stuck_before_backward(stuck: int) -> dict[str, object]:
    accelerator = new_accelerator()
    model = accelerator.prepare(torch.nn.Linear(4, 1))
    loss = model(torch.ones(2, 4)).sum()
    if accelerator.process_index == stuck:
        time.sleep(LATE)  # say, a slow data pipeline on this rank only
        return {"stuck": True}
    return outcome(lambda: accelerator.backward(loss))


def test_a_rank_stuck_before_ddp_backward_is_named():
    results = run_distributed(stuck_before_backward, 1, timeout=90)
    error, seconds = results[0]["error"], results[0]["seconds"]
    assert error.startswith(
        "backward (gradient reduction) failed on rank 0 of 2: rank 1 did not arrive within the "
        "process-group timeout (0:00:03): hung, busy elsewhere, or exited (look at its output "
        "and its stack: py-spy dump --pid PID); rank 0 waited here. Cause: RuntimeError: "
    )
    assert "Timed out waiting 3000ms" in error
    assert TIMEOUT <= seconds < TIMEOUT + 3  # the timeout plus the 1 s grace
    assert results[1] == {"stuck": True}


def different_paths() -> dict[str, object]:
    accelerator = new_accelerator()
    model = accelerator.prepare(torch.nn.Linear(4, 1))
    loss = model(torch.ones(2, 4)).sum()
    if accelerator.process_index == 1:  # a code path that skips the step on one rank
        return outcome(accelerator.wait_for_everyone)
    return outcome(lambda: accelerator.backward(loss))


def test_ranks_on_different_paths_each_name_where_the_other_was():
    first, second = run_distributed(different_paths, timeout=90)
    assert first["error"].startswith(
        "backward (gradient reduction) failed on rank 0 of 2: rank 1 was in wait_for_everyone "
        "instead (the ranks took different paths); rank 0 waited here. Cause: "
    )
    assert second["error"].startswith(
        "wait_for_everyone failed on rank 1 of 2: rank 0 was in backward (gradient reduction) "
        "instead (the ranks took different paths); rank 1 waited here. Cause: "
    )


def one_of_three_missing() -> dict[str, object]:
    accelerator = new_accelerator()
    if accelerator.process_index == 1:
        time.sleep(LATE)
        return {"stuck": True}
    return outcome(accelerator.wait_for_everyone)


def test_with_three_ranks_both_waiting_ranks_name_the_missing_one():
    results = run_distributed(one_of_three_missing, nprocs=3, timeout=90)
    for rank in (0, 2):
        assert results[rank]["error"].startswith(
            f"wait_for_everyone failed on rank {rank} of 3: rank 1 did not arrive within the "
            "process-group timeout (0:00:03)"
        )
        assert "; ranks 0, 2 waited here. Cause: " in results[rank]["error"]


def missing_in_a_subgroup() -> dict[str, object]:
    import torch.distributed as dist

    from accelerate_core.collectives import reduce

    accelerator = new_accelerator()
    pair = dist.new_group([0, 1])  # rank 2 is not in this collective: it can never be missing
    if accelerator.process_index != 0:
        time.sleep(LATE)  # rank 1 never comes; rank 2 is busy elsewhere
        return {"stuck": True}
    return outcome(lambda: reduce(torch.ones(1), group=pair))


def test_a_collective_over_a_group_names_only_the_groups_missing_ranks():
    result = run_distributed(missing_in_a_subgroup, nprocs=3, timeout=90)[0]
    assert result["error"].startswith(
        "reduce failed on rank 0 of 3 (in a group of ranks 0, 1): rank 1 did not arrive within "
        "the process-group timeout (0:00:03): hung, busy elsewhere, or exited (look at its "
        "output and its stack: py-spy dump --pid PID); rank 0 waited here. Cause: "
    ), result["error"]


class Stream(IterableDataset):
    def __iter__(self):
        return iter(torch.arange(8.0).reshape(8, 1))


def stuck_in_dispatch() -> dict[str, object]:
    accelerator = new_accelerator()
    loader = accelerator.prepare(DataLoader(Stream(), batch_size=2))
    if accelerator.process_index == 1:
        time.sleep(LATE)
        return {"stuck": True}
    return outcome(lambda: next(iter(loader)))


def stuck_in_checkpoint(directory: str) -> dict[str, object]:
    accelerator = new_accelerator()
    accelerator.prepare(torch.nn.Linear(1, 1), DataLoader(TensorDataset(torch.ones(4, 1))))
    if accelerator.process_index == 1:
        time.sleep(LATE)
        return {"stuck": True}
    return outcome(lambda: accelerator.save_state(directory))


def test_dataloader_dispatch_names_the_missing_rank():
    result = run_distributed(stuck_in_dispatch, timeout=90)[0]
    assert result["error"].startswith(
        "broadcast_object_list during dataloader dispatch failed on rank 0 of 2: rank 1 did not "
        "arrive within the process-group timeout (0:00:03)"
    )


def test_checkpoint_coordination_names_the_missing_rank(tmp_path):
    result = run_distributed(stuck_in_checkpoint, str(tmp_path / "c"), timeout=90)[0]
    assert result["error"].startswith(
        "broadcast_object_list during save_state failed on rank 0 of 2: rank 1 did not arrive "
        "within the process-group timeout (0:00:03)"
    )
    assert not (tmp_path / "c").exists()
