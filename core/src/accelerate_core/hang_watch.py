"""Which rank a timed-out collective waited for: the diagnosis behind every ``CollectiveError``.

When a rank waits on the others (a barrier, a gather, the gradient reduction inside backward, an
optimizer step that communicates, a checkpoint's coordination, a dataloader's dispatch) and one
of them never comes, torch's process group raises after its timeout with its own words ("Timed
out waiting 10000ms for recv operation"), naming neither the operation nor the rank. Here every
rank that fails that way writes what it was doing to the process group's key-value store (kept
by the launcher's agent under torchrun, so it outlives the ranks), waits a short grace for the
others to do the same, and raises naming the operation and the ranks that never reported: those
did not arrive (hung, busy elsewhere, or gone). Ranks that reported another operation are named
with it (the ranks took different code paths). Nothing of this runs until something failed.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import torch.distributed as dist

from .errors import CollectiveError

STORE_PREFIX = "accelerate_core/collective_failures"
# Words in which torch's process groups report a peer that never came or went away.
_COMMUNICATION = re.compile(
    r"gloo|nccl|timed out|timeout|connection (?:closed|reset|refused)|broken pipe|"
    r"processgroup|dist(?:backend|network|store)error|socket",
    re.IGNORECASE,
)
_state: dict[str, Any] = {"timeout": None, "failures": 0, "label": None}


def configure(timeout: timedelta) -> None:
    """Record the process-group timeout (said in the messages; sets the grace below)."""
    _state["timeout"] = timeout


def grace_seconds() -> float:
    """How long a failed rank waits for the others to report: a quarter of the timeout, 1-10 s
    (ranks that arrived later than this one time out later too)."""
    timeout = _state["timeout"]
    seconds = timeout.total_seconds() if timeout is not None else 40.0
    return min(10.0, max(1.0, seconds / 4))


@contextlib.contextmanager
def during(label: str) -> Iterator[None]:
    """Name what the collectives in this block serve ("save_state", "dataloader dispatch")."""
    outer, _state["label"] = _state["label"], label
    try:
        yield
    finally:
        _state["label"] = outer


def is_communication_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a process group's failure to hear from a peer (not a user error)."""
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    return isinstance(exc, RuntimeError) and bool(_COMMUNICATION.search(str(exc)))


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _members(group: Any, world: int) -> list[int]:
    """The global ranks taking part in a collective over ``group`` (None: every rank)."""
    if group is None or not isinstance(group, dist.ProcessGroup):
        return list(range(world))
    try:
        return sorted(dist.get_process_group_ranks(group))
    except Exception:  # a group this rank is not in, or torch cannot say: the whole world
        return list(range(world))


def _reports(operation: str, rank: int, members: list[int]) -> dict[int, str] | None:
    """Publish this rank's operation, gather the others' for the grace; None without a store."""
    try:
        store = dist.distributed_c10d._get_default_store()
    except Exception:
        return None
    _state["failures"] += 1
    prefix = f"{STORE_PREFIX}/{_state['failures']}"
    found = {rank: operation}
    try:
        store.set(f"{prefix}/{rank}", json.dumps({"operation": operation}))
        deadline = time.monotonic() + grace_seconds()
        while True:
            for other in members:
                key = f"{prefix}/{other}"
                if other not in found and store.check([key]):
                    found[other] = json.loads(store.get(key))["operation"]
            if len(found) == len(members) or time.monotonic() >= deadline:
                return found
            time.sleep(0.05)
    except Exception:
        return found if len(found) > 1 else None


def _ranks(ranks: list[int]) -> str:
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))


def explain(operation: str, exc: BaseException, group: Any = None) -> CollectiveError:
    """The ``CollectiveError`` for ``exc``, raised while this rank was in ``operation`` over
    ``group`` (default: every rank); only the group's ranks can be missing."""
    rank, world = _world()
    members = _members(group, world)
    label = _state["label"]
    if label and label not in operation:
        operation = f"{operation} during {label}"
    timeout = _state["timeout"]
    within = f"within the process-group timeout ({timeout})" if timeout else "in time"
    reports = _reports(operation, rank, members) if len(members) > 1 else None
    cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    head = f"{operation} failed on rank {rank} of {world}"
    if len(members) < world:
        head += f" (in a group of {_ranks(members)})"
    if reports is None:
        detail = (
            f"another process did not reach this {operation} {within}, or exited. Check the "
            f"other ranks' output (a crash, a hang, or a code path that skips the {operation})"
        )
    else:
        missing = [r for r in members if r not in reports]
        elsewhere = {r: op for r, op in sorted(reports.items()) if op != operation}
        waited = sorted(r for r, op in reports.items() if op == operation)
        parts = []
        if missing:
            parts.append(
                f"{_ranks(missing)} did not arrive {within}: hung, busy elsewhere, or exited "
                "(look at its output and its stack: py-spy dump --pid PID)"
            )
        for other, op in elsewhere.items():
            parts.append(f"rank {other} was in {op} instead (the ranks took different paths)")
        parts.append(f"{_ranks(waited)} waited here")
        if not missing and not elsewhere:
            parts.insert(0, "every rank reached it, but the connection between them failed")
        detail = "; ".join(parts)
    return CollectiveError(f"{head}: {detail}. Cause: {type(exc).__name__}: {cause}")


def translated(operation: str, exc: BaseException) -> BaseException:
    """``explain(operation, exc)`` for a communication failure, else ``exc`` itself."""
    if isinstance(exc, CollectiveError) or not is_communication_failure(exc):
        return exc
    return explain(operation, exc)


class NamedOperation:
    """``with NamedOperation("backward"):`` a block in which this rank waits on the others: a
    communication failure inside it is raised as ``translated(operation, exc)``. Costs two
    method calls when nothing fails."""

    __slots__ = ("operation",)

    def __init__(self, operation: str) -> None:
        self.operation = operation

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, traceback: Any) -> None:
        if isinstance(exc, RuntimeError):  # otherwise (None) the exception goes on unchanged
            better = translated(self.operation, exc)
            if better is not exc:
                raise better from exc
