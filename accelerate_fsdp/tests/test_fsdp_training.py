"""2 real processes (torchrun, gloo), real sharding: FSDP2 training against hand-written DDP,
optimizer rebinding, per-rank memory, options and errors. Each test is one launch."""

from __future__ import annotations

import fsdp_recipes
import pytest

from accelerate_core.testing import run_distributed

pytestmark = pytest.mark.multiprocess


def test_fsdp_trains_like_hand_written_ddp_with_an_optimizer_made_before_prepare():
    results = run_distributed(fsdp_recipes.compare_with_ddp, timeout=240)
    for out in results:
        for accumulation in (1, 5):
            facts = out[f"fp32-{accumulation}"]
            assert facts["backend"] == "fsdp" and facts["type"] == "FSDPSequential"
            assert facts["trained"], accumulation
            # Same weights as DDP up to float rounding (reduce-scatter vs all-reduce order).
            assert facts["max_diff"] <= 1e-6, (accumulation, facts["max_diff"])
            # The optimizer built before prepare now holds the shards, kept its two groups'
            # hyper-parameters, and the unsharded parameters were freed.
            assert facts["rebound"] and facts["old_params_freed"]
            assert facts["groups"] == [(3e-2, 1e-2), (2e-2, 5e-2)]
            steps = 24 if accumulation == 1 else 6  # 12 batches per rank and epoch
            assert len(facts["norms"]) == steps  # clipping only on syncing steps
        assert out["before_vs_after"] == {"identical": True, "rebound": True}
        # Activation checkpointing reruns every block's forward in backward (3 blocks, 24
        # batches, twice) and changes nothing in the result.
        assert out["activation_checkpointing"] == {"identical": True, "calls": 3 * 24 * 2}
        assert out["bf16"]["max_diff"] < 5e-3  # bf16 compute, fp32 reduction: close to DDP
    assert results[0]["fp32-5"]["norms"] == results[1]["fp32-5"]["norms"]  # global norm


def test_fsdp_halves_model_state_memory_and_applies_its_options():
    results = run_distributed(fsdp_recipes.options_and_memory, timeout=240)
    for out in results:
        ratio = out["bytes_fsdp"] / out["bytes_ddp"]
        assert 0.45 <= ratio <= 0.55, ratio
        assert out["reshard_True"] == "DTensor"  # resharded after forward
        assert out["reshard_False"] == "Parameter"  # kept gathered for backward
        assert out["offload"] is True
        assert out["size_units"] == {"0.linear": False, "1.linear": True, "2.linear": False}
        assert out["bf16_dtypes"] == ("torch.bfloat16", "torch.float32")
        assert out["late_rebound"]
        assert out["stepped_before_prepare"] <= 1e-6  # optimizer state sharded, then trains on
        assert out["rank0_loading"] and out["rank0_loading_trains"]
        assert out["unknown_class"] == (
            "fsdp wrap_classes TransformerBlock not found in Sequential; its module classes "
            "are: Block, Linear, Sequential"
        )
        assert out["unknown_option"].startswith("unknown fsdp option(s) shard_strategy; valid: ")
        assert "reshard_after_forward" in out["unknown_option"]
        assert out["bad_value"] == (
            "fsdp option state_dict_type must be 'sharded' or 'full', got 'zip'"
        )
        assert "set backend_options wrap_classes" in out["checkpoint_without_units"]
        assert out["meta_rank1"].startswith(
            "Sequential has parameters on the meta device on rank(s) 1; to build it on the meta "
            "device on ranks other than 0, set backend_options cpu_ram_efficient_loading=True"
        )
        assert "but rank 0 built Sequential on the meta device" in out["meta_rank0"]
        # Accumulation micro-steps keep gradients local (nothing reduce-scattered yet).
        assert not any(out["no_sync_grads"]) and all(out["sync_grads"])
        assert out["norms"][0] < 1e-6 and out["norms"][1]  # global 2-norm and inf-norm
        assert out["clipped_by_value"] <= 1.0001e-3  # 1e-3 in float32
        assert out["unwrap_is_model"]  # fully_shard shards the user's module in place
        # fp16: loss scaling on sharded gradients; an overflow skips the step on every rank.
        assert out["fp16"]["skipped"][0] and not all(out["fp16"]["skipped"])
        if "fp8-False" in out:  # torchao installed: fp8 Linears converted before sharding
            for all_gather, local in (
                (False, "Tensor"),
                (True, "WeightWithDynamicFloat8CastTensor"),
            ):
                fp8 = out[f"fp8-{all_gather}"]
                assert fp8["trained"] and fp8["local"] == local, all_gather
                # With fp8 all-gather the scales are precomputed after every optimizer step.
                assert fp8["precomputed"] is all_gather
                assert fp8["max_diff"] <= 1e-6, (all_gather, fp8["max_diff"])  # = fp8 under DDP
    assert results[0]["fp16"]["skipped"] == results[1]["fp16"]["skipped"]  # ranks agree
