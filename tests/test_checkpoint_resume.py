"""Exact resume: stop, save, resume in a fresh state, and end bit-identical to no stop at all."""

from __future__ import annotations

import pytest
import resume_recipe
import torch

from accelerate_core.testing import run_distributed

# 13 batches per epoch, accumulation 3: 5 = mid-cycle in epoch 0, 20 = mid-cycle in epoch 1,
# 26 = the end of epoch 1, 30 = a syncing step in epoch 2.
STOPS = (5, 20, 26, 30)


def assert_same(resumed: dict, reference: dict) -> None:
    assert resumed["batches"] == reference["batches"] == resume_recipe.EPOCHS * 13
    assert resumed["lr"] == reference["lr"]
    for name, tensor in reference["weights"].items():
        assert torch.equal(resumed["weights"][name], tensor), name


@pytest.mark.parametrize("stop", STOPS)
def test_single_process_resume_is_exact(stop, tmp_path):
    reference = resume_recipe.train(str(tmp_path / "unused"))
    resume_recipe.train(str(tmp_path / "ckpt"), stop_after=stop)
    assert_same(resume_recipe.train(str(tmp_path / "ckpt"), resume=True), reference)


def test_hugging_face_style_skip_first_batches_is_exact(tmp_path):
    reference = resume_recipe.train(str(tmp_path / "unused"))
    resume_recipe.train(str(tmp_path / "ckpt"), stop_after=20)
    resumed = resume_recipe.train(str(tmp_path / "ckpt"), resume=True, hf_style=True)
    assert_same(resumed, reference)


def test_fp16_resume_is_exact(tmp_path):
    reference = resume_recipe.train(str(tmp_path / "unused"), mixed_precision="fp16")
    resume_recipe.train(str(tmp_path / "ckpt"), stop_after=20, mixed_precision="fp16")
    resumed = resume_recipe.train(str(tmp_path / "ckpt"), resume=True, mixed_precision="fp16")
    assert_same(resumed, reference)


def resume_on_every_rank(directory: str) -> dict[str, object]:
    reference = resume_recipe.train(directory + "/unused")
    outcome = {}
    for stop in (5, 20):  # 13 batches -> 7 per rank per epoch: epoch 0 and epoch 2
        path = f"{directory}/ckpt-{stop}"
        resume_recipe.train(path, stop_after=stop)
        resumed = resume_recipe.train(path, resume=True)
        outcome[stop] = (
            all(torch.equal(resumed["weights"][k], v) for k, v in reference["weights"].items())
            and resumed["batches"] == reference["batches"] == resume_recipe.EPOCHS * 7
        )
    return {"exact": outcome, "weights": reference["weights"]}


@pytest.mark.multiprocess
def test_two_process_resume_is_exact_and_refuses_another_world_size(tmp_path):
    results = run_distributed(resume_on_every_rank, str(tmp_path), timeout=240)
    for result in results:
        assert result["exact"] == {5: True, 20: True}
    for name, tensor in results[0]["weights"].items():
        assert torch.equal(tensor, results[1]["weights"][name])
    from accelerate_core import CheckpointError

    with pytest.raises(CheckpointError, match=r"saved by 2 process\(es\) and this run has 1"):
        resume_recipe.train(str(tmp_path / "ckpt-5"), resume=True)
