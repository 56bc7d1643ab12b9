"""Sharded dataloaders on 2 real processes: coverage per epoch, shuffling, exact metrics."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from accelerate_core.testing import run_distributed

pytestmark = pytest.mark.multiprocess


class Stream(IterableDataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self):
        return iter(torch.arange(self.n).tolist())


def sharded_loaders() -> dict[str, object]:
    from accelerate_core import Accelerator, set_seed
    from accelerate_core.state import reset_state

    out: dict[str, object] = {}
    set_seed(0)
    accelerator = Accelerator(cpu=True)
    out["num_processes"] = accelerator.num_processes
    data = TensorDataset(torch.arange(45))
    shuffled = accelerator.prepare(DataLoader(data, batch_size=4, shuffle=True))
    out["epochs"] = [accelerator.gather(torch.cat([b for (b,) in shuffled])) for _ in range(3)]
    out["len"] = len(shuffled)

    evaluation = accelerator.prepare(DataLoader(data, batch_size=4))
    out["metrics"] = torch.cat([accelerator.gather_for_metrics(b) for (b,) in evaluation])
    out["metrics_objects"] = [
        item for (b,) in evaluation for item in accelerator.gather_for_metrics(b.tolist())
    ]
    out["metrics_shuffled"] = torch.cat([accelerator.gather_for_metrics(b) for (b,) in shuffled])

    stream = accelerator.prepare(DataLoader(Stream(21), batch_size=4))
    out["stream_local"] = [b.tolist() for b in stream]
    out["stream_metrics"] = torch.cat([accelerator.gather_for_metrics(b) for b in stream])

    reset_state(destroy_process_group=False)
    split = Accelerator(cpu=True, split_batches=True)
    loader = split.prepare(DataLoader(data, batch_size=4))
    out["split_local"] = [b.tolist() for (b,) in loader]
    out["split_metrics"] = torch.cat([split.gather_for_metrics(b) for (b,) in loader])

    reset_state(destroy_process_group=False)
    uneven = Accelerator(cpu=True, even_batches=False)
    loader = uneven.prepare(DataLoader(data, batch_size=4))
    out["uneven_local"] = [b.tolist() for (b,) in loader]
    return out


def test_sharded_dataloaders_on_two_processes():
    results = run_distributed(sharded_loaders)
    everything = list(range(45))
    for out in results:
        assert out["num_processes"] == 2
        assert out["len"] == 6  # 12 batches of 4 (the last of 1) -> 6 rounds
        epochs = [e.tolist() for e in out["epochs"]]
        for epoch in epochs:
            # 48 slots: all 45 samples once, plus 3 repeated from the start of the epoch.
            assert len(epoch) == 48 and sorted(set(epoch)) == everything
        assert epochs[0] != epochs[1] != epochs[2]
        assert out["metrics"].tolist() == everything  # exact count, dataset order
        assert out["metrics_objects"] == everything
        assert sorted(out["metrics_shuffled"].tolist()) == everything
        assert out["stream_metrics"].tolist() == list(range(21))
        assert sum(len(b) for b in out["split_local"]) == 24  # 12 global batches of 4, halves
        assert out["split_metrics"].tolist() == everything
    assert results[0]["epochs"][0].tolist() == results[1]["epochs"][0].tolist()  # same order
    assert results[0]["stream_local"] == [[0, 1, 2, 3], [8, 9, 10, 11], [16, 17, 18, 19]]
    assert results[1]["stream_local"] == [[4, 5, 6, 7], [12, 13, 14, 15], [20]]
    assert [len(b) for b in results[0]["uneven_local"]] == [4, 4, 4, 4, 4, 4]
    assert [len(b) for b in results[1]["uneven_local"]] == [4, 4, 4, 4, 4, 1]


def epochs_with_a_seed_per_rank() -> list[list[int]]:
    """Every rank seeds torch differently (as ``set_seed(..., device_specific=True)`` does):
    the shuffle order must still be one order, agreed by the ranks."""
    from accelerate_core import Accelerator, set_seed

    set_seed(1234, device_specific=True)
    accelerator = Accelerator(cpu=True)
    loader = accelerator.prepare(
        DataLoader(TensorDataset(torch.arange(40)), batch_size=4, shuffle=True)
    )
    return [accelerator.gather(torch.cat([b for (b,) in loader])).tolist() for _ in range(3)]


def test_ranks_seeded_differently_still_see_every_sample_once_per_epoch():
    results = run_distributed(epochs_with_a_seed_per_rank)
    assert results[0] == results[1]
    for epoch in results[0]:  # 40 samples, 10 batches dealt to 2 ranks: no repeats needed
        assert sorted(epoch) == list(range(40))
    assert results[0][0] != results[0][1]  # a new order each epoch
