"""2 real processes (torchrun, gloo, DeepSpeed's CPU accelerator): ZeRO 0-3 train like DDP.

Each launch batches several checks: starting DeepSpeed costs seconds per process.
"""

from __future__ import annotations

import deepspeed_recipes as R
import pytest

from accelerate_core.testing import run_distributed

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(900)]
TOLERANCE = 1e-5


def zero_stages_against_ddp() -> dict[str, object]:
    """ZeRO 0/1/2/3 (fp32, accumulation 5, clipping) next to hand-written DDP, one process group."""
    out: dict[str, dict] = {}
    weights = {}
    for stage in (0, 1, 2, 3):
        # Tiny parameters stay whole under ZeRO-3 unless the persistence threshold is 0.
        config = {"zero_optimization": {"stage": stage, "stage3_param_persistence_threshold": 0}}
        accelerator = R.new_accelerator(backend_options={"config": config})
        model, optimizer, scheduler, inputs, targets = R.build()
        data = R.loader(inputs, targets)
        model, optimizer, scheduler, data = accelerator.prepare(model, optimizer, scheduler, data)
        run = R.train(accelerator, model, optimizer, scheduler, data)
        ours = {k: v.clone() for k, v in accelerator.get_state_dict(model).items()}
        facts = {
            "wrapped": type(model).__name__,
            "zero_stage": model.zero_optimization_stage(),
            "batches": run["batches"],
            "updates": model.global_steps,
            "lr": scheduler.get_last_lr()[0],
            "norms": len(run["norms"]),
            "optimizer_bytes": R.optimizer_state_bytes(model),
            "parameter_bytes": R.parameter_bytes(model),
            "no_autocast": accelerator._autocast is None and accelerator.scaler is None,
        }
        weights[str(stage)] = ours
        out[str(stage)] = facts
    reference = R.hand_written_ddp()  # in the process group the Accelerators started
    if accelerator.is_main_process:
        for stage, ours in weights.items():
            out[stage]["max_difference"] = R.max_difference(ours, reference)
    return out


def test_zero_stages_match_hand_written_ddp_and_partition_state():
    results = run_distributed(zero_stages_against_ddp, timeout=600)
    main = results[0]
    updates = R.EPOCHS * 3  # 12 batches per rank and epoch, accumulation 5: steps at 5, 10, 12
    for rank_results in results:
        for stage, facts in rank_results.items():
            assert facts["wrapped"] == "DeepSpeedEngine" and facts["zero_stage"] == int(stage)
            assert facts["batches"] == R.EPOCHS * 12 and facts["updates"] == updates, facts
            assert facts["norms"] == updates  # one norm per update, none on micro-steps
            assert facts["lr"] == pytest.approx(R.LR * R.GAMMA ** (updates // R.STEP_SIZE))
            assert facts["no_autocast"]
    for stage in "0123":
        assert main[stage]["max_difference"] < TOLERANCE, (stage, main[stage])
    print({stage: main[stage]["max_difference"] for stage in "0123"})
    for rank_results in results:
        base = rank_results["0"]
        for stage in "12":  # optimizer state partitioned over the 2 ranks
            ratio = rank_results[stage]["optimizer_bytes"] / base["optimizer_bytes"]
            assert 0.45 < ratio < 0.56, (stage, ratio)
        assert rank_results["1"]["parameter_bytes"] == base["parameter_bytes"]
        ratio = rank_results["3"]["parameter_bytes"] / base["parameter_bytes"]
        assert 0.45 < ratio < 0.56, ratio  # parameters partitioned under ZeRO-3
        ratio = rank_results["3"]["optimizer_bytes"] / base["optimizer_bytes"]
        assert 0.45 < ratio < 0.56, ratio
