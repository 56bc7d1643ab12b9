"""Time, CPU memory and accelerator memory around a block of work.

The CPU peak is reported twice: by a thread sampling the process's resident memory every
millisecond (what HF's benchmark does, without its busy loop, which would take a whole core
from the work it measures), and by the kernel's own high-water mark (``ru_maxrss``), which
misses nothing but only ever grows, so it is exact for the first block measured in a process
and an upper bound after that.
"""

from __future__ import annotations

import gc
import resource
import sys
import threading
import time
from typing import Any

import psutil
import torch

MiB = 2**20


def rss() -> int:
    return psutil.Process().memory_info().rss


def kernel_peak() -> int:
    """The process's peak resident memory in bytes, from the kernel."""
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(maxrss if sys.platform == "darwin" else maxrss * 1024)


class PeakSampler:
    """Samples the resident memory in a daemon thread; ``stop()`` returns the highest seen."""

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.peak = rss()
        self._running = True
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while self._running:
            self.peak = max(self.peak, rss())
            time.sleep(self.interval)

    def stop(self) -> int:
        self._running = False
        self._thread.join()
        return max(self.peak, rss())


def accelerator_indices() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


class Measure:
    """``with Measure() as m: ...``; then ``m.result`` holds seconds and memory in MiB."""

    def __enter__(self) -> Measure:
        gc.collect()
        self.devices = accelerator_indices()
        for index in self.devices:
            torch.cuda.synchronize(index)
            torch.cuda.reset_peak_memory_stats(index)
        self.gpu_before = {i: torch.cuda.memory_allocated(i) for i in self.devices}
        self.rss_before = rss()
        self.kernel_before = kernel_peak()
        self.sampler = PeakSampler()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        for index in self.devices:
            torch.cuda.synchronize(index)
        seconds = time.perf_counter() - self.start
        sampled = self.sampler.stop()
        kernel = kernel_peak()
        result: dict[str, Any] = {
            "seconds": seconds,
            "rss_before_mib": self.rss_before / MiB,
            "rss_growth_mib": (rss() - self.rss_before) / MiB,
            "sampled_peak_growth_mib": (sampled - self.rss_before) / MiB,
            # exact when no earlier block of the process peaked higher (see the module docstring)
            "kernel_peak_growth_mib": (kernel - self.rss_before) / MiB,
            "kernel_peak_raised": kernel > self.kernel_before,
        }
        for index in self.devices:
            before = self.gpu_before[index]
            result[f"gpu{index}_allocated_mib"] = (
                torch.cuda.memory_allocated(index) - before
            ) / MiB
            result[f"gpu{index}_peak_mib"] = (torch.cuda.max_memory_allocated(index) - before) / MiB
        self.result = result
