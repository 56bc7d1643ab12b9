"""``accel launch`` with the ddp backend: world size, ``--ddp-*`` options, two machines."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.multiprocess

REPORT = """
import json, sys
from accelerate_core import Accelerator
import torch

accelerator = Accelerator()
model = accelerator.prepare(torch.nn.Linear(2, 2))
sys.stdout.write("REPORT " + json.dumps({
    "rank": accelerator.process_index,
    "world": accelerator.num_processes,
    "backend": accelerator.backend,
    "precision": accelerator.mixed_precision,
    "steps": accelerator.gradient_accumulation_steps,
    "options": accelerator.plugin_context.backend_options,
    "find_unused": model.find_unused_parameters,
    "argv": sys.argv[1:],
}) + "\\n")  # one write call: torchrun runs python -u
"""


@pytest.fixture(autouse=True)
def private_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def start(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "accelerate_core", *args], cwd=cwd, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip


def finish(process: subprocess.Popen, timeout: float = 90.0) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"{process.args} did not end within {timeout}s:\n{out}\n{err}")
    return process.returncode, out, err


def reports(output: str) -> list[dict]:
    found = [json.loads(line[7:]) for line in output.splitlines() if line.startswith("REPORT ")]
    return sorted(found, key=lambda r: r["rank"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_get_ddp_and_the_launch_options(tmp_path):
    script = tmp_path / "report.py"
    script.write_text(REPORT)
    code, out, err = finish(
        start(
            "launch", "--cpu", "--num_processes", "2", "--mixed-precision", "bf16",
            "--gradient_accumulation_steps", "4", "--ddp-find-unused-parameters",
            "--ddp_bucket_cap_mb", "8", str(script), "--flag", cwd=tmp_path,
        )
    )  # fmt: skip
    assert code == 0, err
    found = reports(out)
    assert [(r["rank"], r["world"], r["backend"]) for r in found] == [(0, 2, "ddp"), (1, 2, "ddp")]
    for report in found:
        assert (report["precision"], report["steps"], report["argv"]) == ("bf16", 4, ["--flag"])
        assert report["options"] == {"find_unused_parameters": True, "bucket_cap_mb": 8.0}
        assert report["find_unused"] is True  # reached DistributedDataParallel itself


def test_contradicting_the_launch_fails_on_every_rank(tmp_path):
    script = tmp_path / "explicit.py"
    script.write_text(
        "from accelerate_core import Accelerator\nAccelerator(mixed_precision='no')\n"
    )
    started = time.monotonic()
    code, _, err = finish(
        start("launch", "--cpu", "--num-processes", "2", "--mixed-precision", "bf16",
              str(script), cwd=tmp_path)
    )  # fmt: skip
    assert code == 1 and time.monotonic() - started < 30
    message = "Accelerator(mixed_precision='no') contradicts `accel launch --mixed-precision bf16`"
    assert message in err


def test_two_machines_on_loopback_form_one_world(tmp_path):
    script = tmp_path / "report.py"
    script.write_text(REPORT)
    port = str(free_port())
    common = ["--cpu", "--num-processes", "2", "--num-machines", "2",
              "--main-process-ip", "127.0.0.1", "--main-process-port", port]  # fmt: skip
    machines = [
        start("launch", *common, "--machine-rank", str(rank), str(script), f"m{rank}", cwd=tmp_path)
        for rank in (0, 1)
    ]
    results = [finish(m) for m in machines]
    for code, _, err in results:
        assert code == 0, err
    found = [reports(out)[0] for _, out, _ in results]
    assert [(r["rank"], r["world"], r["argv"]) for r in found] == [
        (0, 2, ["m0"]),
        (1, 2, ["m1"]),
    ]


def test_accel_test_passes_on_two_processes(tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text(
        textwrap.dedent("cpu: true\nnum_processes: 2\ngradient_accumulation_steps: 2\n")
    )
    code, out, err = finish(start("test", "--config-file", str(config), cwd=tmp_path))
    assert code == 0, out + err
    assert "2 process(es), backend ddp" in out and "accel test: passed" in out
