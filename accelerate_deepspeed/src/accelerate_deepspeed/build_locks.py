"""Stale build locks of torch C++ extensions: removed with a warning, never waited on in silence.

DeepSpeed compiles some ops on first use (on CPU, ``deepspeed_shm_comm``) through
``torch.utils.cpp_extension.load``, which serialises builds with a ``lock`` file in the op's
build directory (``torch.utils.file_baton.FileBaton``): the builder creates it (keeping it open)
and removes it when done; everyone else polls until it is gone, without a word and without end.
A run killed during the build leaves the file behind, and every later DeepSpeed run then hangs.

Before DeepSpeed is used, every lock under the extensions root is checked: one that no running
process holds open is left from a killed build, and is removed with a warning; one that a live
process holds is a build in progress, and the warning names that process (the wait that follows
is legitimate, and no longer silent). Where open files cannot be listed (no ``/proc``), the
warning names the file to delete by hand.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

EXTENSIONS_DIR_ENV = "TORCH_EXTENSIONS_DIR"


def extensions_root() -> Path:
    """Where ``torch.utils.cpp_extension.load`` builds (``TORCH_EXTENSIONS_DIR`` or torch's
    default, ``~/.cache/torch_extensions``)."""
    configured = os.environ.get(EXTENSIONS_DIR_ENV)
    if configured:
        return Path(configured)
    from torch.utils.cpp_extension import get_default_build_root

    return Path(get_default_build_root())


def build_locks(root: Path) -> list[Path]:
    """The ``lock`` files of the extension builds under ``root`` (``<root>/<python_cuda>/<op>``
    by default, ``<root>/<op>`` with ``TORCH_EXTENSIONS_DIR``)."""
    if not root.is_dir():
        return []
    return sorted({*root.glob("*/lock"), *root.glob("*/*/lock")})


def holders(lock: Path) -> list[int] | None:
    """The pids of the processes that have ``lock`` open; None when that cannot be known."""
    proc = Path("/proc")
    if not (proc / "self" / "fd").is_dir():
        return None
    target = os.path.realpath(lock)
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) == target:
                    found.append(int(entry.name))
                    break
        except OSError:  # gone meanwhile, or not ours to look at
            continue
    return found


def clear_stale_build_locks(root: Path | None = None) -> list[Path]:
    """Remove the locks no live process holds; warn about each lock found. Returns the removed."""
    root = extensions_root() if root is None else root
    removed = []
    for lock in build_locks(root):
        pids = holders(lock)
        op = lock.parent.name
        if pids is None:
            warnings.warn(
                f"a torch extension build lock exists: {lock}. DeepSpeed waits (silently, "
                f"without end) until it is gone. If no build of '{op}' is running, delete it",
                stacklevel=2,
            )
        elif pids:
            warnings.warn(
                f"process(es) {', '.join(map(str, pids))} are building DeepSpeed's op '{op}' "
                f"(lock {lock}): this run waits for that build to finish",
                stacklevel=2,
            )
        else:
            try:
                lock.unlink()
            except FileNotFoundError:
                continue  # another rank removed it first
            removed.append(lock)
            warnings.warn(
                f"removed the stale build lock {lock}: a build of DeepSpeed's op '{op}' was "
                "killed before it finished and no running process holds the lock; without "
                "this every DeepSpeed run would wait for it forever. The op is built again",
                stacklevel=2,
            )
    return removed
