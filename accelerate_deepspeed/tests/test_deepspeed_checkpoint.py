"""2 real processes: save_state/load_state in DeepSpeed's format resume exactly (ZeRO-2, ZeRO-3);
save_model and accel merge-weights give weights a plain model loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import deepspeed_recipes as R
import pytest
import torch
from safetensors.torch import load_file

from accelerate_core.testing import run_distributed

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(900)]
SAVE_AFTER = 10  # batches of epoch 0: the 2nd update (accumulation 5), not mid-cycle


def run(stage: int, directory: str, resume: bool) -> dict[str, object]:
    """Train 2 epochs saving after batch 10 of epoch 0, or resume from that save to the end."""
    from accelerate_core import CheckpointError

    options = {"zero_stage": stage, "gradient_clipping": R.MAX_NORM}
    if stage == 3:
        options["config"] = {"zero_optimization": {"stage3_param_persistence_threshold": 0}}
    accelerator = R.new_accelerator(backend_options=options)
    model, optimizer, scheduler, inputs, targets = R.build()
    model, optimizer, scheduler, data = accelerator.prepare(
        model, optimizer, scheduler, R.loader(inputs, targets)
    )
    out: dict[str, object] = {}
    checkpoint = os.path.join(directory, f"zero{stage}")
    if resume:
        accelerator.load_state(checkpoint)
        out["resumed_at"] = model.global_steps
    for epoch in range(R.EPOCHS):  # resumed: the first pass ends epoch 0, the second is epoch 1
        for i, (x, y) in enumerate(data):
            with accelerator.accumulate(model):
                accelerator.backward(torch.nn.functional.mse_loss(model(x), y))
                accelerator.clip_grad_norm_(model.parameters(), R.MAX_NORM)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            if resume or epoch:
                continue
            if i == 6:  # mid-cycle: refused on every rank
                try:
                    accelerator.save_state(checkpoint)
                except CheckpointError as exc:
                    out["mid_cycle"] = str(exc)
            if i + 1 == SAVE_AFTER:
                accelerator.save_state(checkpoint)
                out["saved"] = {k: v.clone() for k, v in accelerator.get_state_dict(model).items()}
    out["final"] = {k: v.clone() for k, v in accelerator.get_state_dict(model).items()}
    out["updates"] = model.global_steps
    out["lr"] = scheduler.get_last_lr()[0]
    if not resume:
        accelerator.save_model(model, os.path.join(directory, f"model{stage}"))
        out["files"] = sorted(
            str(p.relative_to(checkpoint)) for p in Path(checkpoint).rglob("*") if p.is_file()
        )
    return out


def checkpoints(directory: str) -> dict[int, dict[str, object]]:
    return {
        stage: {"first": run(stage, directory, False), "resumed": run(stage, directory, True)}
        for stage in (2, 3)
    }


def test_save_load_resume_exactly_and_save_model_under_zero_2_and_3(tmp_path):
    results = run_distributed(checkpoints, str(tmp_path), timeout=600)
    main = results[0]
    for stage in (2, 3):
        first, resumed = main[stage]["first"], main[stage]["resumed"]
        assert "in the middle of a gradient-accumulation cycle" in first["mid_cycle"]
        assert (
            "in the middle of a gradient-accumulation cycle"
            in (results[1][stage]["first"]["mid_cycle"])
        )
        assert resumed["resumed_at"] == 2 and resumed["updates"] == first["updates"] == 6
        assert resumed["lr"] == first["lr"]
        for name, tensor in first["final"].items():  # exact resume
            assert torch.equal(tensor, resumed["final"][name]), (stage, name)
        files = first["files"]
        assert "manifest.json" in files and "zero_to_fp32.py" in files
        for rank in (0, 1):  # every rank's partition of the optimizer state
            assert any(f.startswith("model_0/") and f"rank_{rank}_" in f for f in files), files
        # save_model: full weights a plain model loads (ZeRO-3 gathered on the main process)
        plain = R.build()[0]
        plain.load_state_dict(load_file(tmp_path / f"model{stage}" / "model.safetensors"))
        for name, tensor in plain.state_dict().items():
            assert torch.equal(tensor, first["final"][name]), (stage, name)
    assert results[1][3]["first"]["final"] == {}  # ZeRO-3 gathers onto the main process only

    # accel merge-weights: the checkpoint's fp32 master weights, offline, as safetensors
    for stage in (2, 3):
        out = tmp_path / f"merged{stage}"
        script = Path(sys.executable).with_name("accel")
        done = subprocess.run(
            [str(script), "merge-weights", str(tmp_path / f"zero{stage}"), str(out)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        merged = load_file(out / "model.safetensors")
        saved = main[stage]["first"]["saved"]
        assert merged.keys() == saved.keys()
        for name, tensor in saved.items():
            assert torch.equal(merged[name], tensor), (stage, name)
    done = subprocess.run(
        [str(script), "merge-weights", str(tmp_path), str(tmp_path / "nothing")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2 and "no installed plugin reads it" in done.stderr
