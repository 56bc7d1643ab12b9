"""``accel launch``'s side of preemption: forward SIGTERM/SIGUSR1 to the ranks and wait for them.

torchrun's agent answers SIGTERM by stopping its ranks (SIGTERM, then SIGKILL 30 s later) and
dies of SIGUSR1. While ``accel launch`` runs torchrun it takes both signals itself
(``--signals-to-handle`` leaves torchrun SIGINT, SIGHUP and SIGQUIT):

* ranks that handle preemption (``Accelerator(handle_preemption=True)``; each announces itself
  in the launch directory) get the signal, after the launcher has marked the launch directory,
  so that they tell it from the SIGTERM torchrun sends to stop them when a rank failed. They
  finish their step, save, write a report and exit; the launch then exits with 75 and says
  where the checkpoint is, however long the save took;
* otherwise, or at a second signal, the launch stops as torchrun does (``SignalException``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..preemption import (
    ENABLED_PREFIX,
    LAUNCH_DIR_ENV,
    PREEMPTED_EXIT_CODE,
    PREEMPTING_MARKER,
    REPORT_PREFIX,
)

FORWARDED = (signal.SIGTERM, signal.SIGUSR1)
# torchrun's own handlers for the other signals (its default list less SIGTERM).
TORCHRUN_SIGNALS = "--signals-to-handle=SIGINT,SIGHUP,SIGQUIT"


def _is_our_child(pid: int) -> bool:
    """A rank of this launch (torchrun starts each as a session leader, a child of this process):
    never signal a process that merely reused the pid of one that ended."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return fields[0] != "Z" and int(fields[1]) == os.getpid()
    except (OSError, IndexError, ValueError):  # no /proc (macOS): the session check alone
        try:
            return os.getsid(pid) == pid
        except OSError:
            return False


class Forwarder:
    """The signal handler of the launcher while torchrun runs."""

    def __init__(self, launch_dir: Path) -> None:
        self.launch_dir = launch_dir
        self.forwarded: signal.Signals | None = None

    def preemptible(self) -> list[int]:
        found = self.launch_dir.glob(ENABLED_PREFIX + "*")
        pids = [int(path.name[len(ENABLED_PREFIX) :]) for path in found]
        return [pid for pid in pids if _is_our_child(pid)]

    def handle(self, signum: int, frame: Any) -> None:
        from torch.distributed.elastic.multiprocessing.api import SignalException

        sig = signal.Signals(signum)
        pids = self.preemptible()
        if self.forwarded is not None or not pids:
            raise SignalException(f"Process {os.getpid()} got signal: {sig}", sigval=sig)
        (self.launch_dir / PREEMPTING_MARKER).touch()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        self.forwarded = sig
        print(
            f"accel launch: {sig.name} received: forwarded to {len(pids)} rank(s), waiting for "
            "their checkpoint (a second signal stops them at once)",
            file=sys.stderr,
            flush=True,
        )

    def reports(self) -> list[dict[str, Any]]:
        found = []
        for path in sorted(self.launch_dir.glob(REPORT_PREFIX + "*")):
            with contextlib.suppress(OSError, ValueError):
                found.append(json.loads(path.read_text()))
        return found

    def outcome(self, code: int) -> int:
        """The launch's exit code: 75 and where the checkpoint is when the ranks were preempted."""
        reports = self.reports()
        if not reports:
            return code
        checkpoints = sorted({r["checkpoint"] for r in reports})
        steps = sorted({r["step"] for r in reports})
        print(
            f"accel launch: preempted: {len(reports)} rank(s) stopped after training step "
            f"{'/'.join(map(str, steps))} and saved checkpoint {', '.join(checkpoints)}; exiting "
            f"with {PREEMPTED_EXIT_CODE}. Run the same command again to resume",
            file=sys.stderr,
            flush=True,
        )
        return PREEMPTED_EXIT_CODE


@contextlib.contextmanager
def forwarding_signals() -> Iterator[Forwarder]:
    """For the block (torchrun running here): the launch directory and the signal handlers."""
    launch_dir = Path(tempfile.mkdtemp(prefix="accel-launch-"))
    saved = os.environ.get(LAUNCH_DIR_ENV)
    os.environ[LAUNCH_DIR_ENV] = str(launch_dir)
    forwarder = Forwarder(launch_dir)
    previous = {sig: signal.signal(sig, forwarder.handle) for sig in FORWARDED}
    try:
        yield forwarder
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if saved is None:
            os.environ.pop(LAUNCH_DIR_ENV, None)
        else:
            os.environ[LAUNCH_DIR_ENV] = saved
        shutil.rmtree(launch_dir, ignore_errors=True)
