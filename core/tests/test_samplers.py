"""Batch sharding rules, checked in one process by building every rank's sampler."""

from __future__ import annotations

import pytest
from torch.utils.data import BatchSampler, SequentialSampler

from accelerate_core.samplers import BatchSamplerShard, SharedSeedRandomSampler


def shards(length, batch_size, world=2, drop_last=False, **kwargs):
    base = BatchSampler(SequentialSampler(range(length)), batch_size, drop_last)
    samplers = [BatchSamplerShard(base, world, rank, **kwargs) for rank in range(world)]
    return [list(s) for s in samplers], samplers


def test_whole_batches_round_robin_with_even_tail():
    (rank0, rank1), samplers = shards(10, 2, world=2)
    # batches [0,1] [2,3] [4,5] [6,7] [8,9]: the fifth is completed from the start.
    assert rank0 == [[0, 1], [4, 5], [8, 9]]
    assert rank1 == [[2, 3], [6, 7], [0, 1]]
    assert [len(s) for s in samplers] == [3, 3]
    assert samplers[0].last_round_real == 2


def test_partial_last_batch_is_completed_to_full_size():
    (rank0, rank1), samplers = shards(11, 4, world=2)
    assert rank0 == [[0, 1, 2, 3], [8, 9, 10, 0]]
    assert rank1 == [[4, 5, 6, 7], [1, 2, 3, 4]]
    assert samplers[1].last_round_real == 3


def test_exact_multiple_needs_no_padding():
    (rank0, rank1), samplers = shards(8, 2, world=2)
    assert rank0 == [[0, 1], [4, 5]] and rank1 == [[2, 3], [6, 7]]
    assert samplers[0].last_round_real is None


def test_every_sample_seen_once_plus_padding_across_three_ranks():
    batches, _ = shards(23, 3, world=3)
    flat = [i for rank in batches for batch in rank for i in batch]
    assert sorted(set(flat)) == list(range(23))
    assert len(flat) == 27 and all(len(b) == 3 for rank in batches for b in rank)


def test_uneven_batches_when_even_batches_is_off():
    (rank0, rank1), samplers = shards(10, 2, world=2, even_batches=False)
    assert rank0 == [[0, 1], [4, 5], [8, 9]] and rank1 == [[2, 3], [6, 7]]
    assert [len(s) for s in samplers] == [3, 2]


def test_drop_last_drops_the_incomplete_round():
    (rank0, rank1), samplers = shards(11, 2, world=2, drop_last=True)
    assert rank0 == [[0, 1], [4, 5]] and rank1 == [[2, 3], [6, 7]]
    assert [len(s) for s in samplers] == [2, 2]


def test_split_batches_slices_each_batch():
    (rank0, rank1), samplers = shards(10, 4, world=2, split_batches=True)
    assert rank0 == [[0, 1], [4, 5], [8, 9]]
    assert rank1 == [[2, 3], [6, 7], [0, 1]]
    assert samplers[0].last_round_real == 2


def test_split_batches_needs_a_divisible_batch_size():
    with pytest.raises(ValueError, match="batch size divisible by the 2 processes, got 3"):
        shards(10, 3, world=2, split_batches=True)


def test_shared_seed_sampler_repeats_per_epoch_and_changes_between_epochs():
    sampler = SharedSeedRandomSampler(50, seed=1234)
    first = list(sampler)
    assert sorted(first) == list(range(50)) and list(sampler) == first
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first and sorted(second) == list(range(50))
    other = SharedSeedRandomSampler(50, seed=1234)
    other.load_state_dict(sampler.state_dict())
    assert list(other) == second
