"""The README's quickstart runs and learns, on one process, with and without mixed precision."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "extra", [[], ["--mixed-precision", "bf16", "--gradient-accumulation-steps", "2"]]
)
def test_quickstart_loss_falls(extra):
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "quickstart.py"),
            "--cpu",
            "--epochs",
            "3",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    losses = [float(x) for x in re.findall(r"mean loss ([0-9.]+)", out.stdout)]
    assert len(losses) == 3
    assert losses[-1] < losses[0] / 10
    assert "backend='none'" in out.stdout
