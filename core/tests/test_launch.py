"""``accel launch`` / ``accel test`` with real processes (torchrun in-process, gloo on CPU).

Scripts here use only torch.distributed and the core, so they run with no backend installed;
training through a distributed backend under ``accel launch`` is in accelerate_ddp's tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from accelerate_core import plugins
from accelerate_core.cli.main import main

pytestmark = pytest.mark.multiprocess


@pytest.fixture(autouse=True)
def private_home(tmp_path, monkeypatch):
    """Never read or write the real ~/.cache: the default config lives in the test's tmp dir."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def accel(
    *args: str, cwd: Path, timeout: float = 90.0
) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``accel ARGS`` in a new session (killed whole on timeout); return it and its time."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "accelerate_core", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"accel {' '.join(args)} did not end within {timeout}s:\n{out}\n{err}")
    elapsed = time.monotonic() - start
    return subprocess.CompletedProcess(process.args, process.returncode, out, err), elapsed


def script(tmp_path: Path, source: str, name: str = "script.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


REPORT = """
import json, os, sys
from accelerate_core.state import detect_environment
from accelerate_core.process_settings import check_world_size

environment = detect_environment()
check_world_size(environment.world_size, environment.source, environment.rank)
if environment.world_size > 1:
    import torch, torch.distributed as dist
    dist.init_process_group("gloo")
    total = torch.ones(1)
    dist.all_reduce(total)
    assert int(total.item()) == dist.get_world_size()
    dist.destroy_process_group()  # exiting with a live gloo group can abort (SIGABRT) at teardown
sys.stdout.write("REPORT " + json.dumps({
    "rank": environment.rank,
    "world": environment.world_size,
    "source": environment.source,
    "argv": sys.argv[1:],
    "name": __name__,
    "env": {k: v for k, v in os.environ.items() if k.startswith("ACCELERATE_CORE_")},
}) + "\\n")  # one write call: torchrun runs python -u
"""


def reports(output: str) -> list[dict]:
    found = [json.loads(line[7:]) for line in output.splitlines() if line.startswith("REPORT ")]
    return sorted(found, key=lambda r: r["rank"])


def test_one_process_runs_the_script_in_the_launcher_with_its_settings(tmp_path):
    path = script(
        tmp_path,
        """
        import json, sys
        from accelerate_core import Accelerator

        accelerator = Accelerator()
        print("RESULT " + json.dumps([accelerator.num_processes, accelerator.backend,
              accelerator.mixed_precision, accelerator.gradient_accumulation_steps,
              accelerator.device.type, sys.argv[1:], __name__]))
        """,
    )
    result, _ = accel(
        "launch", "--cpu", "--mixed-precision", "bf16", "--gradient_accumulation_steps", "2",
        str(path), "--epochs", "1", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT "))
    assert json.loads(line[7:]) == [1, "none", "bf16", 2, "cpu", ["--epochs", "1"], "__main__"]


def test_two_processes_on_cpu_form_a_world_of_two(tmp_path):
    path = script(tmp_path, REPORT)
    result, _ = accel("launch", "--cpu", "--num-processes", "2", str(path), "a", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    found = reports(result.stdout)
    assert [(r["rank"], r["world"], r["source"]) for r in found] == [
        (0, 2, "torchrun"),
        (1, 2, "torchrun"),
    ]
    assert all(r["argv"] == ["a"] and r["name"] == "__main__" for r in found)
    assert all(r["env"]["ACCELERATE_CORE_NUM_PROCESSES"] == "2" for r in found)
    assert all(r["env"]["ACCELERATE_CORE_USE_CPU"] == "1" for r in found)


@pytest.mark.parametrize("peer", ["sleeps", "waits in a collective"])
def test_a_failing_rank_ends_the_launch_within_seconds(tmp_path, peer):
    waiting = "time.sleep(120)" if peer == "sleeps" else "dist.barrier(); time.sleep(120)"
    path = script(
        tmp_path,
        f"""
        import time
        import torch.distributed as dist

        dist.init_process_group("gloo")
        if dist.get_rank() == 1:
            print(f"FAILING_AT {{time.time()}}", flush=True)
            raise ValueError("boom from rank 1")
        {waiting}
        """,
    )
    result, elapsed = accel("launch", "--cpu", "--num-processes", "2", str(path), cwd=tmp_path)
    ended = time.time()
    assert result.returncode == 1, result.stdout + result.stderr
    failed_at = float(result.stdout.split("FAILING_AT ", 1)[1].split()[0])
    assert ended - failed_at < 5.0, f"the launch took {ended - failed_at:.1f}s to end"
    assert elapsed < 30.0
    err = result.stderr
    assert "[rank 1] failed:\nTraceback (most recent call last):" in err
    assert 'raise ValueError("boom from rank 1")' in err and "runpy" not in err
    first = err.index("[rank 1] failed:")
    assert "[rank 0]" not in err[:first]  # the failing rank's traceback comes first
    assert "rank 1 (local rank 1" in err and "failed first" in err
    assert "ValueError: boom from rank 1 (its traceback is printed above)" in err


KILLED = """
import os, signal, time
import torch.distributed as dist

dist.init_process_group("gloo")
dist.barrier()
if dist.get_rank() == 1:
    os.kill(os.getpid(), signal.{signal})  # what the kernel's OOM killer does (SIGKILL)
dist.barrier()  # rank 0: its peer is gone, gloo raises "Connection closed by peer"
time.sleep(60)
"""


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("SIGKILL", "out of memory? the kernel's OOM killer sends SIGKILL; see dmesg"),
        ("SIGSEGV", "a crash in native code"),
    ],
)
def test_a_rank_killed_by_a_signal_is_the_root_cause(tmp_path, name, hint):
    path = script(tmp_path, KILLED.format(signal=name))
    result, elapsed = accel("launch", "--cpu", "--num-processes", "2", str(path), cwd=tmp_path)
    number = int(getattr(signal, name))
    assert result.returncode == 128 + number, result.stderr
    summary = result.stderr.split("accel launch: ", 1)[1]
    assert summary.startswith("rank 1 (local rank 1, pid ")
    assert f"failed first: it was killed by {name} ({hint})\n" in summary
    assert "(no traceback: the process was killed, it did not raise in Python)" in summary
    assert "the other ranks ended after it:\n  rank 0: " in summary
    assert elapsed < 30


EXITS_IN_A_COLLECTIVE = """
import sys, time
import torch.distributed as dist

dist.init_process_group("gloo")
dist.barrier()
if dist.get_rank() == 1:
    sys.exit(3)  # the cause; rank 0, in the barrier below, then fails with "Connection closed"
dist.barrier()
time.sleep(60)
"""


def test_a_rank_that_calls_sys_exit_is_blamed_not_the_peer_it_left_waiting(tmp_path):
    """torch stamps a failure without an error file in whole seconds; the peer's error is exact.
    The worker records the time of ``sys.exit`` so rank 1 is named first, with where it exited."""
    path = script(tmp_path, EXITS_IN_A_COLLECTIVE)
    result, elapsed = accel("launch", "--cpu", "--num-processes", "2", str(path), cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    summary = result.stderr.split("accel launch: ", 1)[1]
    assert summary.startswith("rank 1 (local rank 1, pid "), summary
    assert "failed first: it exited with code 3\n" in summary
    assert "    sys.exit(3)" in summary and "SystemExit: 3" in summary
    assert "the other ranks ended after it:\n  rank 0: exit code 1 (" in summary
    assert "[rank 0] stopped after rank 1 failed: " in result.stderr  # no traceback of rank 0
    assert elapsed < 30


EXITS_3 = """
import os, sys, time
if os.environ.get("RANK", "0") == "1" or os.environ.get("WORLD_SIZE", "1") == "1":
    sys.exit(3)
time.sleep(60)  # rank 0 of two: the launch must stop it once rank 1 has failed
"""


@pytest.mark.parametrize(
    "options",
    [[], ["--num-processes", "2"], ["--max-restarts", "1"]],
    ids=["one process", "two processes", "one process under torchrun"],
)
def test_the_exit_code_of_a_rank_is_the_launchs(tmp_path, options):
    path = script(tmp_path, EXITS_3)
    result, elapsed = accel("launch", "--cpu", *options, str(path), cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert elapsed < 30
    if options:
        assert "failed first: it exited with code 3" in result.stderr


def test_accel_test_trains_and_says_passed(tmp_path):
    result, _ = accel("test", "--cpu", "--gradient-accumulation-steps", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "accel test: passed" in result.stdout
    assert "1 process(es), backend none" in result.stdout and "accumulation 2" in result.stdout


def test_accel_test_fails_with_an_unusable_configuration(tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text("cpu: true\nnum_processes: 2\nbackend: none\n")
    result, _ = accel("test", "--config-file", str(config), cwd=tmp_path)
    assert result.returncode == 1
    assert "accel test: FAILED" in result.stdout
    assert "backend 'none' runs a single process but 2 processes" in result.stderr


def test_accel_env_lists_broken_and_uninstalled_plugins(make_distribution, monkeypatch, capsys):
    make_distribution(
        "accelerate-broken",
        {"broken_launch_env_plugin": "raise ImportError('needs libfoo')"},
        {"broken": "broken_launch_env_plugin"},
    )
    make_distribution("accelerate-gone", {}, {"gone": "gone_launch_env_plugin_module"})
    monkeypatch.setenv("ACCELERATE_CORE_MIXED_PRECISION", "bf16")
    monkeypatch.setitem(plugins.KNOWN_DISTRIBUTIONS, "nevermind", "accelerate-nevermind")
    with pytest.warns(UserWarning, match="failed to load"):
        assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert "broken: accelerate-broken 1.0 [failed] ImportError: needs libfoo" in out
    assert "gone: accelerate-gone 1.0 [failed] ModuleNotFoundError" in out
    assert "nevermind: not installed (pip install accelerate-nevermind)" in out
    assert "- this process would use: environment single, rank 0, world_size 1" in out
    assert "mixed_precision bf16" in out
    assert "- accel launch: config_file None, num_processes" in out
    with pytest.warns(UserWarning):
        assert main(["env", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["selection"]["mixed_precision"] == "bf16"
    assert info["not_installed"]["nevermind"] == "pip install accelerate-nevermind"
    assert {p["name"]: p["status"] for p in info["plugins"]}["gone"] == "failed"
