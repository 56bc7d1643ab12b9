"""The suite's own safety net: a slow test fails itself, the run goes on, nothing hangs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SLOW = """
import signal, time

def test_slow():
    time.sleep(60)

def test_runs_after_the_slow_one():
    pass

def test_stuck_where_no_signal_reaches():
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])  # as a wait inside C++ can be
    time.sleep(60)
"""


def run_pytest(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    (tmp_path / "test_slow_module.py").write_text(textwrap.dedent(SLOW))
    command = [
        sys.executable, "-m", "pytest", str(tmp_path / "test_slow_module.py"),
        "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path),
        "-p", "accelerate_core.testing", "-o", "timeout=2", "-q", *args,
    ]  # fmt: skip
    start = time.monotonic()
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**__import__("os").environ, "ACCELERATE_CORE_TEST_STUCK_GRACE": "3"},
    )  # fmt: skip
    return done, time.monotonic() - start


def test_a_slow_test_fails_itself_and_the_run_goes_on(tmp_path):
    done, elapsed = run_pytest(tmp_path, "-k", "not stuck")
    assert "1 failed, 1 passed" in done.stdout, done.stdout + done.stderr
    assert "Timeout (>2.0s)" in done.stdout
    assert elapsed < 30


def test_a_test_the_signal_cannot_reach_ends_the_run_with_its_stack(tmp_path):
    done, elapsed = run_pytest(tmp_path, "-k", "stuck")
    assert done.returncode != 0
    assert "test_stuck_where_no_signal_reaches" in done.stderr  # faulthandler's stack dump
    assert elapsed < 30
