"""``accel launch --max-restarts``: 10 crashes in a row, each restart forms its group and resumes
from the latest checkpoint; the run finishes bit-identical to one that never crashed (issue 17,
item 7). About 60 s on 2 idle cores (11 attempts of 2 processes)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import resume_recipe
import torch
from safetensors.torch import load_file

from accelerate_core.testing import run_distributed

pytestmark = pytest.mark.multiprocess

SCRIPT = str(Path(__file__).with_name("restart_train.py"))
CRASHES = 10


@pytest.mark.timeout(600)
def test_ten_crashes_in_a_row_each_restart_and_the_run_finishes_exactly(tmp_path):
    out = tmp_path / "weights.safetensors"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "accelerate_core", "launch", "--cpu", "--num-processes", "2",
         "--max-restarts", str(CRASHES), SCRIPT, str(tmp_path / "project"), str(out),
         str(CRASHES)],
        capture_output=True, text=True, timeout=540, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-6000:]
    assert f"DONE attempt {CRASHES} steps 21" in result.stdout
    assert "connectFullMesh" not in result.stderr  # every restart formed its group at once
    for attempt in range(CRASHES):
        assert f"RuntimeError: crash of attempt {attempt} after step {2 * attempt + 1}" in (
            result.stderr
        )
    # Attempt 0 crashed before the first checkpoint; every later attempt resumed.
    assert result.stderr.count("auto_resume: resumed from") == CRASHES - 1
    reference = run_distributed(resume_recipe.train, str(tmp_path / "unused"))[0]["weights"]
    weights = load_file(out)
    assert all(torch.equal(weights[k], v) for k, v in reference.items())
    print(f"{CRASHES} restarts and the finished run took {elapsed:.0f} s")
