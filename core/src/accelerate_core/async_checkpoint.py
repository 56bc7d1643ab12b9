"""``save_state(async_save=True)``: the training stalls only while the state is copied to host.

The save begins as a synchronous one (``checkpoint.begin_save``: the target refused if it is not
ours, room checked, the temporary directory made), then every object's state is copied to host
memory (the core's files here; a backend with ``accelerate_core_save_state_async`` stages its
own, FSDP through ``torch.distributed.checkpoint.async_save``) and ``save_state`` returns. A
background thread writes the files, waits for the backend's, and finishes exactly as a
synchronous save does (``checkpoint.finish_save``: checksums shared out between the processes,
manifest, atomic rename, rotation, one error on every process). Its collectives use a gloo
process group of its own, so they never interleave with the training's.

One save at a time per process: the next ``save_state`` (either kind), ``load_state``,
``end_training`` and the exit of the process wait for it, and raise its error if it failed (at
exit: printed, and the process exits with 1).
"""

from __future__ import annotations

import atexit
import copy
import os
import sys
import threading
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .checkpoint import (
    SaveJob,
    TrainingObjects,
    backend_save,
    begin_save,
    core_files,
    finish_save,
    save_state,
    write_files,
)
from .checkpoint_space import payload_bytes, write_failure
from .hang_watch import during, translated
from .ops import apply_to_tensors

_state: dict[str, Any] = {"pending": None, "group": None, "world": None, "exit_hook": False}
_buffers: dict[tuple[Any, ...], torch.Tensor] = {}  # host copies, reused by the next save


def to_host(files: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """A copy of every state in host memory, safe from the training that goes on.

    The buffers are kept for the next save of the same layout (they are free again once this
    one is written, which every save waits for): a copy into memory already touched costs one
    pass over the bytes, a fresh allocation twice that (page faults). Device tensors go to
    pinned buffers without blocking, then one synchronisation.
    """
    used: dict[tuple[Any, ...], torch.Tensor] = {}
    on_device = False

    def copy(name: str) -> Any:
        position = iter(range(1 << 62))

        def one(tensor: torch.Tensor) -> torch.Tensor:
            nonlocal on_device
            tensor = tensor.detach()
            key = (name, next(position), tuple(tensor.shape), tensor.dtype)
            buffer = _buffers.get(key)
            if buffer is None:
                pinned = tensor.device.type == "cuda"
                buffer = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=pinned)
            on_device |= tensor.device.type != "cpu"
            used[key] = buffer.copy_(tensor, non_blocking=tensor.device.type != "cpu")
            return buffer

        return one

    copied = [(name, apply_to_tensors(copy(name), saved, copy_leaf)) for name, saved in files]
    if on_device:
        torch.accelerator.synchronize()
    _buffers.clear()
    _buffers.update(used)
    return copied


def copy_leaf(leaf: Any) -> Any:
    return copy.deepcopy(leaf)


def background_group(state: Any) -> Any:
    """The gloo group of the background work (made once, by every process, in a save_state)."""
    if state.num_processes == 1:
        return None
    world = dist.group.WORLD
    if _state["group"] is None or _state["world"] is not world:
        _state["group"] = dist.new_group(backend="gloo", timeout=state.timeout)
        _state["world"] = world
    return _state["group"]


class AsyncSave:
    """One save finishing in a background thread."""

    def __init__(
        self,
        job: SaveJob,
        files: list[tuple[str, Any]],
        wait: Any,
        failure: Any,
        group: Any,
    ) -> None:
        self.job = job
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(files, wait, failure, group), daemon=True,
            name="accelerate-core-async-save",
        )  # fmt: skip
        self._thread.start()

    def _run(self, files: list[tuple[str, Any]], wait: Any, failure: Any, group: Any) -> None:
        job = self.job
        if failure is None:
            try:
                write_files(job.tmp, files)
                if wait is not None:
                    wait()  # the backend's own writes
            except Exception as exc:
                failure = write_failure(exc, job.tmp, job.needed)
        files.clear()  # the host copy is written: give the memory back
        try:
            finish_save(job, failure, group)
        except BaseException as exc:
            self.error = exc

    def result(self) -> Path:
        """Wait for the save; its directory, or the error it failed with."""
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.job.target


def save_state_async(objects: TrainingObjects, output_dir: str | os.PathLike[str] | None) -> Path:
    """Begin a checkpoint, copy the state to host memory and return its (future) directory."""
    wait_for_pending_save()
    group = background_group(objects.state)
    with during("save_state"):
        job = begin_save(objects, output_dir)
        failure = None
        files: list[tuple[str, Any]] = []
        wait = None
        try:
            rest, wait = backend_save(objects, job, group=group)
            files = to_host(core_files(objects, rest, job.mid_cycle))
            job.needed = max(job.needed, payload_bytes(files))
        except Exception as exc:  # reported by the background thread, on every process alike
            failure = write_failure(translated("save_state", exc), job.tmp, job.needed)
    _state["pending"] = AsyncSave(job, files, wait, failure, group)
    if not _state["exit_hook"]:
        atexit.register(_at_exit)  # after the process group's teardown hook: runs before it
        _state["exit_hook"] = True
    return job.target


def save_checkpoint(
    objects: TrainingObjects, output_dir: str | os.PathLike[str] | None, async_save: bool
) -> Path:
    """``Accelerator.save_state``: after the save under way, a new one, in the background
    (``async_save``) or before returning (``checkpoint.save_state``)."""
    if async_save:
        return save_state_async(objects, output_dir)
    wait_for_pending_save()
    return save_state(objects, output_dir)


def wait_for_pending_save() -> Path | None:
    """Wait for the asynchronous save under way, if any; raise its error if it failed."""
    pending, _state["pending"] = _state["pending"], None
    return None if pending is None else pending.result()


def _at_exit() -> None:
    try:
        wait_for_pending_save()
    except BaseException as exc:
        print(f"accelerate-core: the asynchronous checkpoint failed: {exc}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(1)


__all__ = ["save_checkpoint", "save_state_async", "wait_for_pending_save"]
