"""Surviving a stop: preemption checkpoints and the automatic resume of the next run.

``Accelerator(handle_preemption=True)`` saves and exits on SIGTERM/SIGUSR1 (``preemption``).
``Accelerator(auto_resume=True)`` makes a restarted run (``accel launch --max-restarts``, a
requeued job, the same command run again) continue from the latest complete checkpoint under
``project_dir/checkpoints``: it is loaded as soon as the run has prepared (and registered) the
same objects the checkpoint holds, which is before the training loop reads
``loader.iteration``. A run that starts its first batch without ever matching raises, naming
both sides, rather than training from scratch next to a checkpoint it was meant to continue.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from . import collectives
from .async_checkpoint import wait_for_pending_save
from .checkpoint import checkpoints_root, complete_checkpoints
from .checkpoint_io import read_manifest
from .checkpoint_manifest import OBJECT_KINDS
from .errors import CheckpointError, ConfigurationError
from .preemption import Preemption


class RunGuards:
    """Preemption handling and automatic resume of one ``Accelerator`` (each optional)."""

    def __init__(self, accelerator: Any, handle_preemption: bool, auto_resume: bool) -> None:
        self.accelerator = accelerator
        self.preemption: Preemption | None = None
        self.resume_from: Path | None = None
        self._resume_pending = bool(auto_resume)
        self._decided = not auto_resume
        wanted = [name for name, on in (("handle_preemption", handle_preemption),
                                        ("auto_resume", auto_resume)) if on]  # fmt: skip
        if wanted and accelerator.project_dir is None:
            raise ConfigurationError(
                f"{'/'.join(wanted)}=True writes and reads checkpoints under a project "
                "directory: pass Accelerator(project_dir='runs/my-run') (or project_config)"
            )
        if handle_preemption:
            state = accelerator.state
            self.preemption = Preemption(
                accelerator.gradient_state, accelerator.save_state, state.process_index,
                state.num_processes, state.timeout,
            )  # fmt: skip
        if wanted:
            accelerator.gradient_state.on_batch = self.on_batch

    # ------------------------------------------------------------------ resume

    def prepared(self) -> None:
        """After every ``prepare``/``register_for_checkpointing``: resume once things match."""
        if not self._resume_pending:
            return
        if not self._decided:
            self._decided = True
            found = complete_checkpoints(checkpoints_root(self.accelerator.project_configuration))
            latest = [str(found[-1][1]) if found else None]
            latest = collectives.broadcast_object_list(latest, from_process=0)
            if latest[0] is None:  # a fresh run: nothing to resume (later saves are its own)
                self._resume_pending = False
                return
            self.resume_from = Path(latest[0])
        saved = self._saved_counts()
        if saved == self._counts():
            self._resume_pending = False
            self.accelerator.load_state(self.resume_from)
            if self.accelerator.is_main_process:
                print(f"auto_resume: resumed from {self.resume_from}", file=sys.stderr)

    def _saved_counts(self) -> dict[str, int]:
        objects = read_manifest(self.resume_from)["objects"]
        return {kind: objects[kind] for kind in OBJECT_KINDS}

    def _counts(self) -> dict[str, int]:
        return self.accelerator._training_objects().counts()

    def _refuse_to_start(self) -> None:
        saved, now = self._saved_counts(), self._counts()
        described = ", ".join(f"{kind} {saved[kind]} vs {now[kind]}" for kind in OBJECT_KINDS)
        raise CheckpointError(
            f"auto_resume: the latest checkpoint {self.resume_from} was never loaded: the run "
            f"reached its first batch holding other objects than it (saved vs prepared: "
            f"{described}). Prepare and register_for_checkpointing the same objects before the "
            "training loop, or start afresh in another project_dir"
        )

    # ------------------------------------------------------------------ every batch

    def on_batch(self) -> None:
        if self._resume_pending and self._decided:
            self._refuse_to_start()
        self._resume_pending = False  # a run that trains before preparing anything starts fresh
        if self.preemption is not None:
            self.preemption.at_batch()

    def close(self) -> None:
        """At ``end_training``: signals back to their handlers; an asynchronous save finished."""
        if self.preemption is not None:
            self.preemption.close()
        if self.accelerator.gradient_state.on_batch == self.on_batch:
            self.accelerator.gradient_state.on_batch = None
        wait_for_pending_save()
