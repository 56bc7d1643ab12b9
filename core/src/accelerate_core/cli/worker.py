"""What every process of ``accel launch`` runs: the user's script, with failures reported.

``accel launch`` starts ``python .../accelerate_core/cli/worker.py [--module] TARGET ARGS...``
under torchrun (by path, so that this file imports only the standard library). The worker runs
TARGET exactly as ``python TARGET ARGS`` (or ``python -m``) would, in the same interpreter. When
it raises, the worker prints the traceback at once (so the failing rank's is the first one
printed), records it in torchrun's error file for the launcher's report, and exits without
interpreter teardown, which could hang on a process group whose peers are gone. Ranks that fail
only because another rank failed first print one line instead of a traceback.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import time
import traceback
from pathlib import Path

ACCEL_TIME_KEY = "accelerate_core_time"
PRINTED_KEY = "accelerate_core_printed"
_SKIPPED_FILES = {os.path.abspath(__file__), os.path.abspath(runpy.__file__)}


def exit_code(code: object) -> int:
    """The process exit code ``sys.exit(code)`` would give."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def run_target(target: str, args: list[str], module: bool = False) -> int:
    """Run a script (or module) as ``__main__`` with ``args``; return its exit code."""
    sys.argv = [target, *args]
    try:
        if module:
            sys.path[0] = os.getcwd()  # as python -m: modules are found from the working dir
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            if not os.path.exists(target):
                print(f"accel launch: error: no such script {target!r}", file=sys.stderr)
                return 2
            sys.path[0] = os.path.dirname(os.path.abspath(target))
            runpy.run_path(target, run_name="__main__")
    except SystemExit as exc:
        code = exit_code(exc.code)
        if code and not (code == PREEMPTED_EXIT_CODE and _preempted_under_launcher()):
            record_exit(exc)
        return code
    except BaseException as exc:  # report every failure, KeyboardInterrupt included
        report_failure(exc)
        return 1
    return 0


def format_exception(exc: BaseException) -> str:
    """The traceback as Python prints it, without the worker's and runpy's own frames."""
    tb = exc.__traceback__
    while tb is not None and (
        os.path.abspath(tb.tb_frame.f_code.co_filename) in _SKIPPED_FILES
        or tb.tb_frame.f_globals.get("__name__") == "runpy"
    ):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _earlier_failure(error_file: Path) -> str | None:
    """The rank of a process of this machine that recorded a failure before this one."""
    for other in error_file.parent.parent.glob("*/error.json"):
        if other == error_file:
            continue
        try:
            extra = json.loads(other.read_text())["message"]["extraInfo"]
            return str(extra.get("rank", "?"))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def report_failure(exc: BaseException) -> None:
    """Print the failure (first rank: full traceback) and write torchrun's error file."""
    text = format_exception(exc)
    rank = os.environ.get("RANK")
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    earlier = _earlier_failure(Path(error_file)) if error_file else None
    prefix = f"[rank {rank}] " if rank is not None else ""
    if earlier is not None:
        print(
            f"{prefix}stopped after rank {earlier} failed: {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
    else:
        print(f"{prefix}failed:\n{text}", file=sys.stderr, end="")
    sys.stderr.flush()
    if error_file:
        now = time.time()
        data = {
            "message": {
                "message": f"{type(exc).__name__}: {exc}",
                "extraInfo": {
                    "py_callstack": text,
                    "timestamp": str(int(now)),
                    ACCEL_TIME_KEY: now,
                    PRINTED_KEY: earlier is None,
                    "rank": rank,
                },
            }
        }
        try:
            Path(error_file).parent.mkdir(parents=True, exist_ok=True)
            Path(error_file).write_text(json.dumps(data))
        except OSError:
            pass


def record_exit(exc: SystemExit) -> None:
    """``sys.exit(N)`` with N != 0: torchrun's error file with the exact time and where it was
    called. Without it torch knows only the whole second it noticed the exit, and the launch's
    report would blame a peer that failed because this rank left ("Connection closed by peer")."""
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not error_file or os.path.exists(error_file):
        return
    now = time.time()
    extra = {
        "py_callstack": format_exception(exc),
        "timestamp": str(int(now)),
        ACCEL_TIME_KEY: now,
        "rank": os.environ.get("RANK"),
    }
    data = {"message": {"message": f"SystemExit: {exc.code}", "extraInfo": extra}}
    try:
        Path(error_file).parent.mkdir(parents=True, exist_ok=True)
        Path(error_file).write_text(json.dumps(data))
    except OSError:
        pass


# As ``accelerate_core.preemption`` spells them (this file imports only the standard library).
PREEMPTED_EXIT_CODE = 75
LAUNCH_DIR_ENV = "ACCELERATE_CORE_LAUNCH_DIR"
REPORT_PREFIX = "preempted-"


def _preempted_under_launcher() -> bool:
    """This rank saved a preemption checkpoint and reported it to ``accel launch``."""
    launch_dir = os.environ.get(LAUNCH_DIR_ENV)
    return bool(launch_dir) and (Path(launch_dir) / f"{REPORT_PREFIX}{os.getpid()}").exists()


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    module = bool(argv) and argv[0] == "--module"
    if module:
        argv = argv[1:]
    if not argv:
        print("usage: python worker.py [--module] TARGET [ARGS...]")
        raise SystemExit(2)
    code = run_target(argv[0], argv[1:], module)
    if code == PREEMPTED_EXIT_CODE and _preempted_under_launcher():
        code = 0  # torchrun must neither restart nor blame it: accel launch reports the stop
    sys.stdout.flush()
    sys.stderr.flush()
    if code:
        os._exit(code)  # no teardown: a peer may be gone and destroying the group could hang


if __name__ == "__main__":
    main()
