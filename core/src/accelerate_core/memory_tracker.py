"""Memory tracking: CPU and device memory over time, one JSON file per rank.

A background thread samples the process's resident memory (psutil RSS) and, through the device
plugin's ``accelerate_core_device_memory_stats`` hook, the device's allocated and reserved memory,
so a third-party device reports as well as CUDA. Each rank writes its own
``RUN_DIR/memory-rank{N}.json`` (no collective, so it works the same with one process or many and
never blocks on a rank that died); ``accel memory plot|summary RUN_DIR`` reads them back.

Sampling can miss a short spike, so every series also has an exact peak where a counter exists:
``getrusage(RUSAGE_SELF).ru_maxrss`` for CPU and ``max_allocated`` from the device hook. Both are
high-water marks since the process started (or since the user last reset the device's peak
stats), so they can predate the tracked window; ``exact_at_start`` in the file tells when. The
raw counter is kept as ``counter``; ``exact`` is ``max(counter, sampled)`` because the kernel's
per-CPU batched RSS counters can make ``ru_maxrss`` trail a sample by a few pages.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from .plugins import get_plugin_manager
from .state import PartialState, describe_device

FORMAT = "accelerate-core-memory/1"
FILE_PREFIX = "memory-rank"
FILE_GLOB = f"{FILE_PREFIX}*.json"
DEFAULT_INTERVAL = 0.1
SERIES = ("cpu_rss", "device_allocated", "device_reserved")
MEMORY_STATS_HOOK = "accelerate_core_device_memory_stats"
_JOIN_TIMEOUT = 10.0


def memory_file(run_dir: str | os.PathLike[str], rank: int) -> Path:
    """Where rank ``rank`` writes its samples inside ``run_dir``."""
    return Path(run_dir) / f"{FILE_PREFIX}{rank}.json"


def exact_cpu_peak() -> int | None:
    """The process's peak RSS in bytes from the OS counter (``None`` where there is none)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(maxrss if sys.platform == "darwin" else maxrss * 1024)  # Linux reports KiB


def _device_owner(device: torch.device) -> object:
    manager = get_plugin_manager()
    registered = manager.registry(strict=False)["device"].get(device.type)
    return registered.plugin if registered is not None else manager.defaults


def _device_name(owner: object, device: torch.device) -> str:
    """The name of the device record ``owner`` registered for ``device``'s type."""
    for name, registered in get_plugin_manager().registry(strict=False)["device"].items():
        if registered.plugin is owner and registered.spec.torch_type == device.type:
            return name
    return device.type


class MemoryTracker:
    """Samples CPU and device memory in a daemon thread and writes this rank's JSON file.

    Args:
        run_dir: directory shared by all ranks; this rank writes ``memory-rank{rank}.json``.
        interval: seconds between samples.
        label: free text stored in the metadata (the plot's title shows it).
        rank: defaults to ``PartialState()``'s; pass ``rank``, ``world_size`` and ``device``
            to track without creating the process state (no ``Accelerator`` needed).
        world_size: defaults to ``PartialState()``'s (see ``rank``).
        device: defaults to ``PartialState()``'s (see ``rank``).
        device_owner: the plugin asked for device stats; default: the plugin that registered
            ``device.type`` (the state's ``device_owner`` when the device comes from the state).
        device_name: the selected device's name for the metadata (``example``); default: the
            state's when the device comes from it, else the record ``device_owner`` registered.
        snapshot: also record the device allocator's history and dump a snapshot
            (``memory-rank{N}-snapshot.pickle``, readable by pytorch.org/memory_viz) where the
            device supports it (CUDA); skipped, with the reason in the metadata, elsewhere.

    Use ``start()``/``stop()`` or ``with MemoryTracker(...) as tracker:``. ``stop()`` is
    idempotent, returns the file written, and takes a last sample so short runs have two.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        interval: float = DEFAULT_INTERVAL,
        *,
        label: str | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        device: torch.device | str | None = None,
        device_owner: object | None = None,
        device_name: str | None = None,
        snapshot: bool = False,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"MemoryTracker interval must be > 0 seconds, got {interval!r}")
        if rank is None or world_size is None or device is None:
            state = PartialState()
            rank = state.process_index if rank is None else rank
            world_size = state.num_processes if world_size is None else world_size
            if device is None:
                device = state.device
                device_owner = state.device_owner if device_owner is None else device_owner
                device_name = state.device_spec.name if device_name is None else device_name
        self.device = torch.device(device)
        self.device_owner = device_owner if device_owner is not None else _device_owner(self.device)
        self.device_name = device_name or _device_name(self.device_owner, self.device)
        self.run_dir = Path(run_dir)
        self.interval = float(interval)
        self.label = label
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.snapshot = snapshot
        self.path = memory_file(self.run_dir, self.rank)

        import psutil

        self._process = psutil.Process()
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._start_wall = 0.0
        self._start = 0.0
        self._timestamps: list[float] = []
        self._series: dict[str, list[int]] = {name: [] for name in SERIES}
        self._has_device = False
        self._last_stats: dict[str, int] | None = None
        self._exact_at_start: dict[str, int | None] = {}
        self._exact: dict[str, int | None] = {}
        self._error: str | None = None
        self._snapshot_info: dict[str, Any] = {}
        self._history_enabled_here = False

    # ------------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._thread is not None and not self._stopped

    def start(self) -> MemoryTracker:
        """Take the first sample and start the sampling thread (once per tracker)."""
        if self._thread is not None:
            if self._stopped:
                raise RuntimeError("a MemoryTracker runs once; create a new one to track again")
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.snapshot:
            self._start_history()
        self._start_wall = time.time()
        self._start = time.perf_counter()
        stats = self._device_stats()
        self._has_device = stats is not None
        self._exact_at_start = self._exact_counters(stats)
        self._sample(stats)
        self._thread = threading.Thread(
            target=self._run, name=f"accelerate-core-memory-rank{self.rank}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> Path:
        """Stop sampling, take a last sample, write the JSON file; return its path."""
        if self._thread is None:
            raise RuntimeError("MemoryTracker.stop() called before start()")
        if self._stopped:
            return self.path
        self._stopped = True
        self._stop_event.set()
        self._thread.join(_JOIN_TIMEOUT)
        if self._thread.is_alive():  # a device call hung; the daemon thread dies with the process
            self._error = self._error or f"sampling thread did not stop within {_JOIN_TIMEOUT} s"
        if self._error is None:
            try:
                stats = self._device_stats()
                self._sample(stats)
                self._exact = self._exact_counters(stats)
            except Exception as exc:
                self._error = f"final sample failed: {type(exc).__name__}: {exc}"
        if self.snapshot:
            self._dump_snapshot()
        if self._error is not None:
            warnings.warn(
                f"memory tracking on rank {self.rank} stopped early: {self._error}; "
                f"{self.path} has the samples taken until then",
                RuntimeWarning,
                stacklevel=2,
            )
        self.write()
        return self.path

    def __enter__(self) -> MemoryTracker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def latest(self) -> dict[str, int]:
        """The last sample, in bytes: ``cpu_rss`` and, with a device, ``device_allocated`` and
        ``device_reserved`` (what ``log_system_metrics`` sends to the trackers)."""
        with self._lock:
            return {name: series[-1] for name, series in self._series.items() if series}

    # ------------------------------------------------------------------ sampling

    def _device_stats(self) -> dict[str, int] | None:
        return get_plugin_manager().call_owner(
            MEMORY_STATS_HOOK, self.device_owner, device=self.device
        )

    def _exact_counters(self, stats: dict[str, int] | None) -> dict[str, int | None]:
        exact: dict[str, int | None] = {"cpu_rss": exact_cpu_peak()}
        if self._has_device:
            peak = (stats or {}).get("max_allocated")
            exact["device_allocated"] = None if peak is None else int(peak)
            exact["device_reserved"] = None  # the hook has no max-reserved counter
        return exact

    def _sample(self, stats: dict[str, int] | None) -> None:
        rss = self._process.memory_info().rss
        now = time.perf_counter() - self._start
        with self._lock:
            self._timestamps.append(now)
            self._series["cpu_rss"].append(int(rss))
            if self._has_device:
                self._last_stats = stats = stats or {}
                self._series["device_allocated"].append(int(stats.get("allocated", 0)))
                self._series["device_reserved"].append(int(stats.get("reserved", 0)))

    def _run(self) -> None:
        # Deadlines on a fixed grid, so slow samples do not stretch the interval; Event.wait
        # returns as soon as stop() sets it.
        ticks = 1
        while not self._stop_event.wait(
            max(0.0, self._start + ticks * self.interval - time.perf_counter())
        ):
            try:
                self._sample(self._device_stats())
            except Exception as exc:  # tracking must never take the training run down
                self._error = f"{type(exc).__name__}: {exc}"
                return
            ticks = max(ticks + 1, int((time.perf_counter() - self._start) / self.interval) + 1)

    # ------------------------------------------------------------------ device snapshot

    def _snapshot_unsupported(self) -> str | None:
        if self.device.type != "cuda":
            shown = describe_device(self.device_name, self.device, quote="'")
            return f"device {shown} has no allocator snapshot (only CUDA does)"
        if not torch.cuda.is_available():
            return "CUDA is not available"
        return None

    def _start_history(self) -> None:
        reason = self._snapshot_unsupported()
        if reason is not None:
            self._snapshot_info = {"skipped": reason}
            return
        try:
            torch.cuda.memory._record_memory_history(max_entries=100_000, device=self.device)
            self._history_enabled_here = True
        except Exception as exc:  # private API: absent or changed in this torch
            self._snapshot_info = {"skipped": f"{type(exc).__name__}: {exc}"}

    def _dump_snapshot(self) -> None:
        if "skipped" in self._snapshot_info:
            return
        target = self.run_dir / f"{FILE_PREFIX}{self.rank}-snapshot.pickle"
        try:
            import pickle

            data = torch.cuda.memory._snapshot(self.device)
            with open(target, "wb") as f:
                pickle.dump(data, f)
            self._snapshot_info = {"file": target.name}
        except Exception as exc:
            self._snapshot_info = {"skipped": f"{type(exc).__name__}: {exc}"}
        finally:
            if self._history_enabled_here:
                try:
                    torch.cuda.memory._record_memory_history(enabled=None, device=self.device)
                except Exception:
                    pass

    # ------------------------------------------------------------------ results

    def to_dict(self) -> dict[str, Any]:
        """The record written to the JSON file (usable while running, for a live look)."""
        with self._lock:
            timestamps = list(self._timestamps)
            names = SERIES if self._has_device else SERIES[:1]
            series = {name: list(self._series[name]) for name in names}
        exact = self._exact or self._exact_counters(self._last_stats)
        peaks = {name: self._peak(values, exact.get(name), name) for name, values in series.items()}
        started = datetime.fromtimestamp(self._start_wall, tz=timezone.utc)
        metadata = {
            "rank": self.rank,
            "world_size": self.world_size,
            "device": str(self.device),
            "device_name": self.device_name,
            "interval": self.interval,
            "start_time": self._start_wall,
            "start_time_iso": started.isoformat(),
            "duration": timestamps[-1] if timestamps else 0.0,
            "num_samples": len(timestamps),
            "label": self.label,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "error": self._error,
            "snapshot": self._snapshot_info or None,
        }
        return {
            "format": FORMAT,
            "metadata": metadata,
            "timestamps": timestamps,
            "series": series,
            "peaks": peaks,
        }

    def _peak(self, values: list[int], counter: int | None, name: str) -> dict[str, int | None]:
        # Kernel RSS counters are per-CPU batched, so ru_maxrss can trail a sample by a few
        # pages; a true peak is at least every sample, hence the max.
        sampled = max(values) if values else None
        exact = counter if sampled is None or counter is None else max(counter, sampled)
        return {
            "sampled": sampled,
            "exact": exact,
            "counter": counter,
            "exact_at_start": self._exact_at_start.get(name),
        }

    def write(self) -> Path:
        """Write the record atomically (a reader never sees half a file); return its path."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        os.replace(tmp, self.path)
        return self.path

    def __repr__(self) -> str:
        status = "running" if self.running else ("stopped" if self._stopped else "not started")
        return (
            f"MemoryTracker(rank {self.rank} of {self.world_size}, "
            f"device={describe_device(self.device_name, self.device)}, "
            f"interval={self.interval}, {status}, file={str(self.path)!r})"
        )


def track_memory(
    run_dir: str | os.PathLike[str], interval: float = DEFAULT_INTERVAL, **kwargs: Any
) -> MemoryTracker:
    """Create and start a ``MemoryTracker`` (stop it, or use it as a context manager)."""
    return MemoryTracker(run_dir, interval, **kwargs).start()
