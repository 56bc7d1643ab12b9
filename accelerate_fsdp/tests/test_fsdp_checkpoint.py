"""2 real processes: FSDP2 checkpoints (sharded through torch.distributed.checkpoint, and full)
resume bit-identically to a run that never stopped; save_model loads into a plain model."""

from __future__ import annotations

import fsdp_recipes
import pytest
import torch
from safetensors.torch import load_file

from accelerate_core.testing import run_distributed

pytestmark = pytest.mark.multiprocess
SHARDED = {"fsdp_sharded/.metadata", "fsdp_sharded/__0_0.distcp", "fsdp_sharded/__1_0.distcp"}
ACCUMULATED = {"fsdp_grads_0_model_0.safetensors", "fsdp_grads_1_model_0.safetensors"}


def test_fsdp_resume_is_exact_from_sharded_and_full_checkpoints(tmp_path):
    results = run_distributed(fsdp_recipes.checkpoints, str(tmp_path), timeout=240)
    for out in results:
        for case in ("sharded-2", "sharded-6", "sharded-11", "full-11", "zeros-11"):
            resumed = out[case]
            assert resumed["exact"], case  # bit-identical final weights
            assert (resumed["batches"], resumed["lr"]) == (out["batches"], out["lr"]), case
        files = {case: set(out[case]["files"]) for case in out if "-" in case}
        # Sharded: each rank wrote its own shards, no full copy anywhere.
        assert files["sharded-6"] >= SHARDED
        assert not {"model_0.safetensors", "optimizer_0.bin"} & files["sharded-6"]
        # Mid-cycle: every rank's unsharded accumulated gradients are kept too.
        assert files["sharded-11"] >= ACCUMULATED and not ACCUMULATED & files["sharded-6"]
        # Before the first optimizer step the optimizer has no state: saved as its param groups.
        assert "optimizer_0.bin" in files["sharded-2"]
        assert {"model_0.safetensors", "optimizer_0.bin"} <= files["full-11"]
        assert not SHARDED & files["full-11"]
    assert out["batches"] == fsdp_recipes.RESUME_EPOCHS * 7
    # get_state_dict gathers the full weights to CPU on rank 0 only.
    assert set(results[0]["get_state_dict"].values()) == {("cpu", "Tensor")}
    assert len(results[0]["get_state_dict"]) == 4 and results[1]["get_state_dict"] == {}
    for name, tensor in results[0]["weights"].items():
        assert torch.equal(tensor, results[1]["weights"][name])
    # save_model wrote plain, unsharded weights: a model built without any backend loads them.
    plain = fsdp_recipes.resume_model()
    plain.load_state_dict(load_file(tmp_path / "model" / "model.safetensors"))
    for name, tensor in plain.state_dict().items():
        assert torch.equal(tensor, results[0]["weights"][name]), name
