"""Disk space and I/O failures of a checkpoint save: checked up front, explained when they happen.

Before writing, every process estimates the bytes it will write (tensors of models, optimizer
state and accumulated gradients: what dominates a checkpoint) and the processes that write to the
same file system (same machine, same device) add theirs up: a save that cannot fit is refused
before anything is written. A write that fails anyway (the estimate leaves out small files and
user objects; another program filled the disk) is reported by ``write_failure``: disk full or
not, with the path and the bytes needed against the bytes free.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from . import collectives
from .ops import apply_to_tensors

# How torch.save and safetensors report a full disk when they give no errno.
_DISK_FULL_TEXT = (
    "no space left",
    "storagefull",
    "unexpected pos",
    "file write failed",
    "os error 28",
)
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def _local(tensor: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The tensor this process holds, and whether it is a shard (every process writes its own)."""
    to_local = getattr(tensor, "to_local", None)  # DTensor: only the local shard is written
    if callable(to_local):
        return to_local(), True
    return tensor, False


def _bytes(tensors: Iterable[torch.Tensor], is_main: bool) -> int:
    total = 0
    for tensor in tensors:
        local, sharded = _local(tensor)
        if sharded or is_main:  # a replicated tensor is written once, by the main process
            total += local.numel() * local.element_size()
    return total


def _state_tensors(state: Any) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    apply_to_tensors(found.append, state)
    return found


def estimate_bytes(
    models: Iterable[Any], optimizers: Iterable[Any], is_main: bool, with_grads: bool
) -> int:
    """At least the bytes this process will write for ``models`` and ``optimizers``.

    Reads tensors where they are (no ``state_dict()`` call, nothing gathered): a lower bound
    for what backends that partition state their own way (DeepSpeed) write.
    """
    total = 0
    for model in models:
        params = list(model.parameters())
        total += _bytes([*params, *model.buffers()], is_main)
        if with_grads:  # accumulated gradients of an unfinished cycle: every process writes its
            total += sum(_local(p.grad)[0].nbytes for p in params if p.grad is not None)
    for optimizer in optimizers:
        total += _bytes(_state_tensors(dict(getattr(optimizer, "state", {}))), is_main)
    return total


def existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (a directory may exist only on another machine)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(existing(path)).free


def size(count: int) -> str:
    """``4,199,888 bytes (4.0 MiB)``."""
    value, unit = float(count), "bytes"
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{count:,} bytes" + ("" if unit == "bytes" else f" ({value:.1f} {unit})")


def check_space(directory: Path, target: Path, needed: int) -> str | None:
    """Whether every file system the processes write to has room for what they write there.

    Collective with several processes (one ``gather_object``); returns the same message on every
    process when one of them lacks room, else None.
    """
    where = existing(directory)
    mine = (socket.gethostname(), os.stat(where).st_dev, needed, free_bytes(where), str(where))
    every = collectives.gather_object(mine)
    groups: dict[tuple[str, int], list[Any]] = {}
    for host, device, wanted, free, path in every:
        group = groups.setdefault((host, device), [0, free, path])
        group[0] += wanted
    for (host, _), (wanted, free, path) in sorted(groups.items()):
        if wanted > free:
            machine = f" on {host}" if len(groups) > 1 else ""
            return (
                f"not enough disk space for checkpoint {target}: it needs at least "
                f"{size(wanted)} and {path}{machine} has {size(free)} free. Free some space, "
                "lower ProjectConfiguration.total_limit, or save elsewhere. Nothing was written"
            )
    return None


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or its cause) says the disk is full, however the writer phrased it."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _DISK_FULL_ERRNOS:
            return True
        if any(text in str(seen).lower() for text in _DISK_FULL_TEXT):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def payload_bytes(files: Iterable[tuple[str, Any]]) -> int:
    """The bytes of the tensors in ``(name, state)`` pairs about to be written."""
    return sum(t.numel() * t.element_size() for _, saved in files for t in _state_tensors(saved))


def write_failure(exc: BaseException, directory: Path, needed: int) -> tuple[str, str, int]:
    """``("disk full" or "error", what went wrong, bytes needed)`` of a write into a directory."""
    first_line = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    cause = f"{type(exc).__name__}: {first_line}"
    if is_disk_full(exc):
        return "disk full", f"the disk is full at {existing(directory).parent} ({cause})", needed
    return "error", cause, needed


def removal_report(disk_full: bool, directory: Path, needed: int) -> str:
    """Said once the partial save is gone: how much room there is now against the need."""
    if not disk_full:
        return ""
    return (
        f". It needs at least {size(needed)}; {size(free_bytes(directory))} are free now. Free "
        "some space, lower ProjectConfiguration.total_limit, or save elsewhere"
    )
