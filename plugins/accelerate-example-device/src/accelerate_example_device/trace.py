"""Observability for the example: every hook call is counted, and logged when asked.

``CALLS`` counts calls in this process. With ``ACCELERATE_EXAMPLE_DEVICE_TRACE=/path/file.jsonl``
each call is also appended to that file as one JSON line (hook, pid, rank, device), so a test can
see the calls made by other processes (``accel launch``, torchrun workers, subprocesses).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

TRACE_ENV = "ACCELERATE_EXAMPLE_DEVICE_TRACE"
CALLS: Counter[str] = Counter()


def record(hook: str, **details: Any) -> None:
    """Count one call of ``hook`` and append it to the trace file when one is configured."""
    CALLS[hook] += 1
    path = os.environ.get(TRACE_ENV)
    if not path:
        return
    line = {"hook": hook, "pid": os.getpid(), "rank": os.environ.get("RANK")}
    line.update({key: str(value) for key, value in details.items()})
    with open(path, "a", encoding="utf-8") as f:  # one short write per line: safe to interleave
        f.write(json.dumps(line) + "\n")


def read(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The calls logged in ``path`` (empty when nothing was logged)."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
