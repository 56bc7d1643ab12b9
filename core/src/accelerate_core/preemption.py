"""Preemption-safe training: SIGTERM or SIGUSR1 ends the run with a checkpoint, on every rank.

``Accelerator(handle_preemption=True)`` installs handlers for SIGTERM (what schedulers and
Kubernetes send before they kill) and SIGUSR1 (SLURM's ``--signal=USR1@SECONDS``). A signal only
sets a flag; the run goes on to the end of its current training step. Steps end where a prepared
dataloader is asked for its next batch after a ``backward`` (a loop of evaluation batches is not
a training step), the same place on every rank, so there the ranks can agree:

* one process: it saves at the next step boundary;
* several: the ranks agree, through the process group's key-value store, on the first step
  boundary every rank can still reach. The rank that got the signal posts a request; a thread on
  every rank watches for it (one store lookup every 0.2 s, nothing on the training path) and
  posts the boundary its rank will reach next; the stop is the largest. A rank never waits for a
  peer that is itself blocked in a collective waiting for it: the peer's thread answers for it.

At the agreed boundary every rank calls ``save_state()`` (a complete, atomic checkpoint under
``project_dir/checkpoints``) and exits with ``PREEMPTED_EXIT_CODE`` (75, ``EX_TEMPFAIL``: try
again). Running the same command again resumes from it (``auto_resume=True``, or
``load_state()``), bit-identical to a run that was never stopped.

Under ``accel launch`` the launcher owns the signal: it forwards it to its ranks and waits for
them, and the ranks' exit code becomes the launch's. A SIGTERM that the launch sends to stop the
ranks because one of them failed is told apart (the launcher marks a real preemption in its
launch directory first): those ranks stop at once, as without this option.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch.distributed as dist

from .errors import CollectiveError, ConfigurationError
from .gradient_state import GradientState

PREEMPTED_EXIT_CODE = 75  # sysexits EX_TEMPFAIL: a temporary failure, try again
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
# Shared with ``accel launch`` and ``cli/worker.py`` (which imports only the standard library
# and spells them out: tests/test_preemption.py checks they agree).
LAUNCH_DIR_ENV = "ACCELERATE_CORE_LAUNCH_DIR"
PREEMPTING_MARKER = "preempting"  # written by the launcher before it forwards a signal
ENABLED_PREFIX = "preemptible-"  # + pid: a rank that handles preemption (the launcher signals it)
REPORT_PREFIX = "preempted-"  # + pid: a rank that saved and is exiting
STORE_PREFIX = "accelerate_core/preemption"
_POLL = 0.2
_LAUNCH_STOP_WAIT = 0.3  # how long a SIGTERM waits for the launcher's mark before it is a stop


class Preemption:
    """The signal handlers, the agreement and the stop of one ``Accelerator``."""

    def __init__(
        self,
        gradient_state: GradientState,
        save: Callable[[], str],
        rank: int,
        world_size: int,
        timeout: timedelta,
    ) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise ConfigurationError(
                "handle_preemption=True installs signal handlers, which Python allows only in "
                "the main thread; create the Accelerator there"
            )
        self.gradient_state = gradient_state
        self._save = save
        self.rank, self.world_size, self.timeout = rank, world_size, timeout
        self.requested = False
        self.signal_name: str | None = None
        self.boundary = 0  # training-step boundaries passed
        self.stop_at: int | None = None
        self._backwards = gradient_state.backwards
        self._promised: int | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._launch_dir = os.environ.get(LAUNCH_DIR_ENV) or None
        self._previous = {sig: signal.signal(sig, self._on_signal) for sig in PREEMPTION_SIGNALS}
        self._store: Any = None
        if world_size > 1:
            self._store = dist.PrefixStore(STORE_PREFIX, dist.distributed_c10d._get_default_store())
            self._thread = threading.Thread(
                target=self._watch, name="accelerate-core-preemption", daemon=True
            )
            self._thread.start()
        self._mark(ENABLED_PREFIX, {"rank": rank})

    # ------------------------------------------------------------------ signals

    def _on_signal(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGTERM and self._launch_dir and not self._launcher_preempting():
            # accel launch stops the ranks with SIGTERM when one of them failed: die as before.
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        if not self.requested:
            print(
                f"[rank {self.rank}] {name} received: finishing this training step, then every "
                "rank saves a checkpoint and exits",
                file=sys.stderr,
                flush=True,
            )
        self.signal_name = self.signal_name or name
        self.requested = True
        self._wake.set()

    def _launcher_preempting(self) -> bool:
        marker = Path(self._launch_dir or ".") / PREEMPTING_MARKER
        deadline = time.monotonic() + _LAUNCH_STOP_WAIT
        while not marker.exists():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    # ------------------------------------------------------------------ agreement

    def _watch(self) -> None:
        """Learn of a request (this rank's signal, or another rank's) and promise a boundary."""
        request = "request"
        try:
            while not self._closed.is_set():
                local = self._wake.wait(_POLL)
                if local:
                    self._store.set(request, json.dumps([self.rank, self.signal_name]))
                elif self._store.check([request]):
                    rank, name = json.loads(self._store.get(request))
                    self.signal_name = self.signal_name or f"{name} (received by rank {rank})"
                else:
                    continue
                self.requested = True  # before reading the boundary: the promise is reachable
                self._promise(self.boundary + 1)
                return
        except Exception:  # the store went away (the run is ending): nothing left to watch
            return

    def _promise(self, boundary: int) -> None:
        with self._lock:
            if self._promised is None:
                self._promised = boundary
                self._store.set(f"promise/{self.rank}", str(boundary))

    def _agree(self) -> int:
        """The boundary every rank stops at: the largest one any rank promised."""
        if self.world_size == 1:
            return self.boundary
        if not self._store.check(["request"]):
            self._store.set("request", json.dumps([self.rank, self.signal_name]))
        self._promise(self.boundary)
        keys = [f"promise/{rank}" for rank in range(self.world_size)]
        try:
            self._store.wait(keys, self.timeout)
        except Exception as exc:
            missing = [r for r, key in enumerate(keys) if not self._store.check([key])]
            raise CollectiveError(
                f"preemption: rank(s) {', '.join(map(str, missing))} did not answer the stop "
                f"request within the process-group timeout ({self.timeout}): they are hung or "
                "gone, so no checkpoint can be written"
            ) from exc
        return max(int(self._store.get(key)) for key in keys)

    # ------------------------------------------------------------------ the training path

    def at_batch(self) -> None:
        """Called around every batch of a prepared dataloader; counts training-step boundaries."""
        backwards = self.gradient_state.backwards
        if backwards == self._backwards:
            return  # no backward since the last call: not the end of a training step
        self._backwards = backwards
        self.boundary += 1
        if not self.requested:
            return
        if self.stop_at is None:
            self.stop_at = self._agree()
        if self.boundary >= self.stop_at:
            self._stop()

    def _stop(self) -> None:
        self.close()
        path = self._save()
        print(
            f"[rank {self.rank}] preempted by {self.signal_name}: every rank stopped after "
            f"training step {self.boundary} and saved checkpoint {path}; exiting with "
            f"{PREEMPTED_EXIT_CODE}. Run again to resume from it",
            file=sys.stderr,
            flush=True,
        )
        self._mark(REPORT_PREFIX, {"rank": self.rank, "checkpoint": path, "step": self.boundary})
        raise SystemExit(PREEMPTED_EXIT_CODE)

    def _mark(self, prefix: str, data: dict[str, Any]) -> None:
        """Tell ``accel launch`` (if it started this process) about this rank."""
        if self._launch_dir is None:
            return
        try:
            path = Path(self._launch_dir) / f"{prefix}{os.getpid()}"
            path.write_text(json.dumps(data))
        except OSError:
            pass

    def close(self) -> None:
        """Stop watching (the handlers stay: a late signal must not kill a save in progress)."""
        self._closed.set()
