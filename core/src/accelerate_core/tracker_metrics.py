"""Opt-in figures logged beside the user's values: memory and seconds per step.

``Accelerator(log_system_metrics=True)`` adds them to every ``accelerator.log`` call on the
processes that run trackers, so memory curves appear next to the loss. Memory comes from the
running ``MemoryTracker`` (``track_memory=...``), read from its last sample (no device call
on the logging path); step time is the wall time since the previous ``log`` divided by the
steps between the two calls' ``step`` arguments (per call when no step is given).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from .errors import ConfigurationError

KINDS = ("memory", "step_time")
MIB = 2**20


def system_metric_kinds(value: bool | str | Sequence[str] | None, track_memory: bool) -> tuple:
    """Validate ``log_system_metrics``: True means both kinds; "memory" needs ``track_memory``."""
    if not value:
        return ()
    if value is True:
        return KINDS
    kinds = (value,) if isinstance(value, str) else tuple(value)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ConfigurationError(
            f"log_system_metrics: unknown {', '.join(map(repr, unknown))}; choose from "
            f"{', '.join(KINDS)} (or True for both)"
        )
    if "memory" in kinds and not track_memory:
        raise ConfigurationError(
            "log_system_metrics=['memory'] logs the samples of the memory tracker, which is off; "
            "pass track_memory=True (or a run directory) as well"
        )
    return kinds


class SystemMetrics:
    """Called with the step of each ``log``; returns ``{"system/...": value}``."""

    def __init__(self, kinds: Sequence[str], memory_tracker: Callable[[], Any]) -> None:
        self.kinds = tuple(kinds)
        self.memory_tracker = memory_tracker
        self._last: tuple[float, int | None] | None = None

    def __call__(self, step: int | None) -> dict[str, float]:
        values: dict[str, float] = {}
        if "step_time" in self.kinds:
            now = time.perf_counter()
            if self._last is not None:
                last_time, last_step = self._last
                steps = 1
                if step is not None and last_step is not None and step > last_step:
                    steps = step - last_step
                values["system/step_time_s"] = (now - last_time) / steps
            self._last = (now, step)
        if "memory" in self.kinds:
            tracker = self.memory_tracker()
            if tracker is not None:
                for name, value in tracker.latest().items():
                    values[f"system/{name}_mib"] = value / MIB
        return values
