"""Test helpers for accelerate-core and its plugins (a pytest plugin: ``pytest_plugins = [...]``).

* ``clean_state`` (autouse): every test starts with a fresh plugin manager, a reset process state
  and none of the launcher variables of the surrounding shell.
* ``make_distribution``: writes a real installed distribution (``*.dist-info`` with entry points
  and modules) into a temporary directory on ``sys.path``, for plugin discovery tests.
* ``run_distributed(fn, nprocs=2)``: runs a module-level function under ``torchrun`` (real
  processes, gloo on CPU) and returns each rank's result, or raises with the failing rank's
  traceback. A run that hangs is killed after ``timeout`` seconds.
"""

from __future__ import annotations

import faulthandler
import importlib
import inspect
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .plugins import ENTRY_POINT_GROUP, reset_plugin_manager
from .state import reset_state

LAUNCH_VARIABLES = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "GROUP_RANK",
    "NODE_RANK",
    "TORCHELASTIC_RUN_ID",
)


def clear_launch_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if (
            name in LAUNCH_VARIABLES
            or name.startswith("SLURM_")
            or name.startswith("ACCELERATE_CORE_")
            or name.startswith("PARALLELISM_CONFIG_")  # accel launch --parallelism-config-*
            or name == "ACCELERATE_USE_PARALLELISM_CONFIG"
        ):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def clean_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    clear_launch_environment(monkeypatch)
    reset_state()
    reset_plugin_manager()
    yield
    reset_state()
    reset_plugin_manager()


# A test stuck where pytest-timeout's signal cannot reach it (inside C++ with the signal blocked)
# is stopped this much later by faulthandler, which prints every thread's stack and exits: the
# run ends, but it never hangs. Everything else only fails its own test (timeout_method=signal).
STUCK_GRACE_ENV = "ACCELERATE_CORE_TEST_STUCK_GRACE"


def _timeout_of(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    try:
        return float(item.config.getini("timeout") or 0)
    except ValueError:  # pytest-timeout is not installed
        return 0.0


_REAL_STDERR: list[Any] = []


def _real_stderr(config: pytest.Config) -> Any:
    """The terminal's stderr, not pytest's capture file (which dies with the process)."""
    if not _REAL_STDERR:
        capture = config.pluginmanager.getplugin("capturemanager")
        if capture is not None:
            capture.suspend_global_capture(in_=False)
        try:
            _REAL_STDERR.append(os.fdopen(os.dup(2), "w"))
        finally:
            if capture is not None:
                capture.resume_global_capture()
    return _REAL_STDERR[0]


def pytest_unconfigure(config: pytest.Config) -> None:
    faulthandler.cancel_dump_traceback_later()
    while _REAL_STDERR:
        _REAL_STDERR.pop().close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    limit = _timeout_of(item)
    if limit > 0:
        grace = float(os.environ.get(STUCK_GRACE_ENV, "60"))
        stderr = _real_stderr(item.config)
        faulthandler.dump_traceback_later(limit + grace, exit=True, file=stderr)
    try:
        yield
    finally:
        if limit > 0:
            faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def core_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Behave as if only accelerate-core were installed (the real autoload switch)."""
    monkeypatch.setenv("ACCELERATE_CORE_DISABLE_PLUGIN_AUTOLOAD", "1")
    reset_plugin_manager()


DistributionFactory = Callable[..., Path]


@pytest.fixture
def make_distribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DistributionFactory]:
    """``make_distribution(name, modules={mod: source}, entry_points={ep: "mod"}, requires=[])``."""
    created: list[str] = []

    def make(
        name: str,
        modules: dict[str, str],
        entry_points: dict[str, str],
        version: str = "1.0",
        requires: tuple[str, ...] = (),
    ) -> Path:
        root = tmp_path / f"site-{name}"
        root.mkdir()
        for module, source in modules.items():
            (root / f"{module}.py").write_text(textwrap.dedent(source))
            created.append(module)
        info = root / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
        metadata += [f"Requires-Dist: {r}" for r in requires]
        (info / "METADATA").write_text("\n".join(metadata) + "\n")
        lines = [f"[{ENTRY_POINT_GROUP}]"] + [f"{k} = {v}" for k, v in entry_points.items()]
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        monkeypatch.syspath_prepend(str(root))
        importlib.invalidate_caches()
        reset_plugin_manager()
        return root

    yield make
    for module in created:
        sys.modules.pop(module, None)


WORKER = """
import importlib, os, pickle, sys, traceback
sys.path[:0] = {paths!r}
out_dir = sys.argv[1]
rank = int(os.environ["RANK"])
try:
    with open(os.path.join(out_dir, "call.pkl"), "rb") as f:
        module_name, qualname, args, kwargs = pickle.load(f)
    function = getattr(importlib.import_module(module_name), qualname)
    record = ("ok", function(*args, **kwargs), None)
except BaseException as exc:  # reported to the parent, which decides
    record = ("error", f"{{type(exc).__name__}}: {{exc}}", traceback.format_exc())
with open(os.path.join(out_dir, f"rank{{rank}}.pkl"), "wb") as f:
    pickle.dump(record, f)
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)  # skip interpreter teardown: a broken process group must not hang the exit
"""


@dataclass
class RankResult:
    """What one rank's function returned, or the error it raised."""

    rank: int
    ok: bool
    value: object = None
    error: str | None = None
    traceback: str | None = None


class DistributedRunError(AssertionError):
    """A rank failed (or the run timed out); the message carries every rank's traceback."""


def run_distributed(
    function: Callable[..., object],
    *args: object,
    nprocs: int = 2,
    timeout: float = 120.0,
    allow_errors: bool = False,
    env: dict[str, str] | None = None,
    launcher_args: Sequence[str] = (),
    **kwargs: object,
) -> list:
    """Run ``function(*args, **kwargs)`` on ``nprocs`` torchrun processes; return each rank's.

    ``function`` must be importable by module and name (a module-level function of a test module
    works). With ``allow_errors`` the ``RankResult`` records are returned instead of raising.
    """
    source = os.path.abspath(inspect.getfile(function))
    module_name = inspect.getmodule(function).__name__
    if module_name == "__main__":  # a script: import it by its file name instead
        module_name = os.path.splitext(os.path.basename(source))[0]
    paths = [os.path.dirname(source), *sys.path]
    with tempfile.TemporaryDirectory(prefix="accel-dist-") as out_dir:
        script = os.path.join(out_dir, "worker.py")
        with open(script, "w") as f:
            f.write(WORKER.format(paths=paths))
        with open(os.path.join(out_dir, "call.pkl"), "wb") as f:
            pickle.dump((module_name, function.__qualname__, args, kwargs), f)
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nprocs}", *launcher_args, script, out_dir,
        ]  # fmt: skip
        child_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
        process = subprocess.Popen(
            command, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True,
        )  # fmt: skip
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            raise DistributedRunError(
                f"{function.__qualname__} did not finish within {timeout}s on {nprocs} "
                f"processes (killed). Output:\n{output[-4000:]}"
            ) from None
        results = []
        for rank in range(nprocs):
            path = os.path.join(out_dir, f"rank{rank}.pkl")
            if not os.path.exists(path):
                raise DistributedRunError(
                    f"rank {rank} of {function.__qualname__} wrote no result (exit code "
                    f"{process.returncode}). Output:\n{output[-4000:]}"
                )
            with open(path, "rb") as f:
                status, value, trace = pickle.load(f)
            if status == "ok":
                results.append(RankResult(rank, True, value))
            else:
                results.append(RankResult(rank, False, None, value, trace))
    if allow_errors:
        return results
    failed = [r for r in results if not r.ok]
    if failed:
        report = "\n".join(f"--- rank {r.rank}: {r.error}\n{r.traceback}" for r in failed)
        raise DistributedRunError(f"{len(failed)} rank(s) failed:\n{report}")
    return [r.value for r in results]
