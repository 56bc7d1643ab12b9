"""The same HF-style script under Hugging Face Accelerate 1.15 and under accelerate-core.

``hf_parity/parity_script.py`` is written in HF's idiom; it runs as written (HF Accelerate, a
test-only dependency) and with ``accelerate`` renamed to ``accelerate_core`` in its import lines,
on 1 process and on 2 (torchrun, gloo on CPU). Optimizer steps, scheduler steps, the learning
rate after every update and the number of gathered evaluation samples must be the same.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("accelerate", reason="HF Accelerate is a test dependency (core[test])")

pytestmark = pytest.mark.multiprocess

SCRIPT = Path(__file__).resolve().parent / "hf_parity" / "parity_script.py"
IMPORT_LINE = re.compile(r"^(\s*)(from|import) accelerate(?=[\s.])", re.MULTILINE)


def port(text: str) -> str:
    """Rename the module in import lines; nothing else changes."""
    return IMPORT_LINE.sub(r"\1\2 accelerate_core", text)


def run(script: Path, processes: int, out: Path) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ACCELERATE_", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_"))
    }
    env["OMP_NUM_THREADS"] = "1"
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone",
                     f"--nproc-per-node={processes}"]  # fmt: skip
    done = subprocess.run([*launcher, str(script), str(out)], env=env, cwd=script.parent,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def scripts(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("parity")
    hf, ours = directory / "hf_script.py", directory / "ours_script.py"
    text = SCRIPT.read_text()
    hf.write_text(text)
    ours.write_text(port(text))
    assert "from accelerate_core import Accelerator" in ours.read_text()
    return {"hf": hf, "ours": ours}


@pytest.mark.parametrize("processes", [1, 2])
def test_same_steps_learning_rates_and_gathered_counts_as_hf_accelerate(scripts, processes):
    hf = run(scripts["hf"], processes, scripts["hf"].with_suffix(f".{processes}.json"))
    ours = run(scripts["ours"], processes, scripts["ours"].with_suffix(f".{processes}.json"))
    assert ours == hf
    expected_type = "NO" if processes == 1 else "MULTI_CPU"
    assert all(case["distributed_type"] == expected_type for case in ours.values())
    accumulated = ours["accumulation"]
    # 13 batches of 4 per epoch, dealt to the processes; the last batch of an epoch ends an
    # accumulation cycle: 7 updates per epoch on 1 process, 4 (of 2 schedule steps) on 2. A
    # schedule sized from the unprepared loader (13 * 2 epochs // 2 = 13) reaches its end on both.
    assert accumulated["scheduler_steps"] == (14 if processes == 1 else 16)
    assert accumulated["learning_rates"][-1] == 0.0
    assert accumulated["gathered"] == ours["split_batches"]["gathered"] == 21
