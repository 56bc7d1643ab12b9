"""MemoryTracker and ``accel memory``: real threads, real allocations, real files."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from accelerate_core import DeviceSpec, hookimpl
from accelerate_core.cli.main import main
from accelerate_core.memory_tracker import MemoryTracker, exact_cpu_peak, track_memory
from accelerate_core.plugins import get_plugin_manager

MIB = 1024 * 1024
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
METADATA_KEYS = {
    "rank",
    "world_size",
    "device",
    "device_name",
    "interval",
    "start_time",
    "start_time_iso",
    "duration",
    "num_samples",
    "label",
    "hostname",
    "pid",
    "error",
    "snapshot",
}
PEAK_KEYS = {"sampled", "exact", "counter", "exact_at_start"}


def _hold(nbytes: int, seconds: float) -> int:
    """Allocate and touch ``nbytes`` (fresh pages: numpy mmaps blocks this size), keep them."""
    block = np.ones(nbytes, dtype=np.uint8)
    time.sleep(seconds)
    total = int(block.sum())
    del block
    return total


def _record(run_dir: Path, **kwargs) -> dict:
    return json.loads((run_dir / f"memory-rank{kwargs.get('rank', 0)}.json").read_text())


def test_rss_rises_by_the_allocation_and_exact_peak_covers_it(tmp_path):
    size = 192 * MIB
    with track_memory(tmp_path, interval=0.01, label="alloc") as tracker:
        time.sleep(0.05)
        assert _hold(size, 0.1) == size
        time.sleep(0.05)
    assert (tracker.rank, tracker.world_size, tracker.device.type) == (0, 1, "cpu")  # the state
    record = _record(tmp_path)
    rss = record["series"]["cpu_rss"]
    rise = max(rss) - rss[0]
    assert 0.9 * size <= rise <= size + 48 * MIB, f"RSS rose {rise / MIB:.1f} MiB for 192 MiB"
    assert rss[-1] < max(rss) - 0.9 * size  # freed again: the series shows it
    peak = record["peaks"]["cpu_rss"]
    assert peak["sampled"] == max(rss)
    assert peak["exact"] >= peak["sampled"]
    assert peak["counter"] >= rss[0] + 0.9 * size  # ru_maxrss saw the allocation too
    assert set(record["series"]) == {"cpu_rss"}  # the CPU reports no device series


def test_stop_is_prompt_idempotent_and_takes_a_last_sample(tmp_path):
    tracker = MemoryTracker(tmp_path, interval=30.0, rank=3, world_size=4, device="cpu").start()
    assert tracker.running and tracker._thread.daemon
    begin = time.perf_counter()
    path = tracker.stop()
    assert time.perf_counter() - begin < 1.0, "stop() waited for the interval"
    assert not tracker._thread.is_alive() and not tracker.running
    assert tracker.stop() == path == tmp_path / "memory-rank3.json"  # second stop: no-op
    assert _record(tmp_path, rank=3)["metadata"]["num_samples"] == 2  # first and last
    with pytest.raises(RuntimeError, match="runs once"):
        tracker.start()
    with pytest.raises(RuntimeError, match="before start"):
        MemoryTracker(tmp_path, rank=0, world_size=1, device="cpu").stop()
    with pytest.raises(ValueError, match="interval"):
        MemoryTracker(tmp_path, interval=0, rank=0, world_size=1, device="cpu")


def test_json_file_has_the_documented_keys(tmp_path):
    run_dir = tmp_path / "new" / "run"  # created on start
    with MemoryTracker(run_dir, 0.02, label="keys", rank=1, world_size=2, device="cpu") as t:
        time.sleep(0.15)
        live = t.to_dict()  # readable while running
    assert live["metadata"]["num_samples"] >= 1
    record = _record(run_dir, rank=1)
    assert set(record) == {"format", "metadata", "timestamps", "series", "peaks"}
    assert record["format"] == "accelerate-core-memory/1"
    meta = record["metadata"]
    assert set(meta) == METADATA_KEYS
    assert (meta["rank"], meta["world_size"], meta["device"]) == (1, 2, "cpu")
    assert meta["device_name"] == "cpu"
    assert (meta["interval"], meta["label"], meta["error"], meta["snapshot"]) == (
        0.02,
        "keys",
        None,
        None,
    )
    assert abs(meta["start_time"] - time.time()) < 60
    times = record["timestamps"]
    assert times[0] < 0.01 and times == sorted(times) and meta["duration"] == times[-1]
    assert 4 <= meta["num_samples"] == len(times) == len(record["series"]["cpu_rss"])
    assert set(record["peaks"]) == {"cpu_rss"}
    assert set(record["peaks"]["cpu_rss"]) == PEAK_KEYS
    assert not list(run_dir.glob(".*tmp"))  # the atomic write left nothing behind


class VendorDevice:
    """A third-party device plugin: owns ``meta`` and counts its own real allocations."""

    def __init__(self) -> None:
        self.blocks: list[bytearray] = []
        self.peak = 0
        self.asked: set[str] = set()

    def allocate(self, nbytes: int) -> None:
        self.blocks.append(bytearray(nbytes))
        self.peak = max(self.peak, self.allocated)

    @property
    def allocated(self) -> int:
        return sum(len(b) for b in self.blocks)

    @hookimpl
    def accelerate_core_devices(self) -> list[DeviceSpec]:
        return [DeviceSpec(name="meta")]

    @hookimpl
    def accelerate_core_device_memory_stats(self, device: torch.device) -> dict[str, int]:
        self.asked.add(str(device))
        allocated = self.allocated
        return {"allocated": allocated, "reserved": allocated + MIB, "max_allocated": self.peak}


def test_a_third_party_device_reports_through_its_hook(tmp_path):
    vendor = VendorDevice()
    get_plugin_manager().register(vendor, "accelerate-vendor 1.0")
    with MemoryTracker(tmp_path, 0.01, rank=0, world_size=1, device="meta") as tracker:
        assert tracker.device_owner is vendor
        time.sleep(0.05)
        vendor.allocate(8 * MIB)
        time.sleep(0.05)
        vendor.blocks.clear()  # a spike the samples caught; max_allocated keeps it
        time.sleep(0.05)
    assert vendor.asked == {"meta"}
    record = _record(tmp_path)
    assert set(record["series"]) == {"cpu_rss", "device_allocated", "device_reserved"}
    allocated = record["series"]["device_allocated"]
    assert allocated[0] == 0 and max(allocated) == 8 * MIB and allocated[-1] == 0
    assert record["series"]["device_reserved"][0] == MIB
    peaks = record["peaks"]
    assert peaks["device_allocated"]["sampled"] == peaks["device_allocated"]["exact"] == 8 * MIB
    assert peaks["device_allocated"]["exact_at_start"] == 0
    assert peaks["device_reserved"] == {
        "sampled": 9 * MIB,
        "exact": None,
        "counter": None,
        "exact_at_start": None,
    }


def test_a_spike_between_samples_is_kept_by_the_exact_peak(tmp_path):
    vendor = VendorDevice()
    get_plugin_manager().register(vendor, "accelerate-vendor 1.0")
    tracker = MemoryTracker(tmp_path, 30.0, rank=0, world_size=1, device="meta").start()
    vendor.allocate(4 * MIB)
    vendor.blocks.clear()  # allocated and freed between two samples
    tracker.stop()
    peak = _record(tmp_path)["peaks"]["device_allocated"]
    assert (peak["sampled"], peak["exact"]) == (0, 4 * MIB)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the skip path off CUDA")
def test_snapshot_is_skipped_cleanly_where_unsupported(tmp_path):
    with MemoryTracker(tmp_path, 0.05, rank=0, world_size=1, device="cpu", snapshot=True):
        pass
    snapshot = _record(tmp_path)["metadata"]["snapshot"]
    assert "only CUDA" in snapshot["skipped"]
    assert not list(tmp_path.glob("*.pickle"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_allocations_and_snapshot(tmp_path):
    device = torch.device("cuda", 0)
    with MemoryTracker(tmp_path, 0.01, rank=0, world_size=1, device=device, snapshot=True):
        time.sleep(0.03)
        block = torch.ones(64 * MIB, dtype=torch.uint8, device=device)
        torch.cuda.synchronize()
        time.sleep(0.05)
        del block
        time.sleep(0.03)
    record = _record(tmp_path)
    allocated = record["series"]["device_allocated"]
    assert max(allocated) - allocated[0] >= 64 * MIB
    assert (
        record["peaks"]["device_allocated"]["exact"]
        >= record["peaks"]["device_allocated"]["sampled"]
    )
    assert max(record["series"]["device_reserved"]) >= max(allocated)
    snapshot = record["metadata"]["snapshot"]
    assert snapshot == {"file": "memory-rank0-snapshot.pickle"}, snapshot
    assert (tmp_path / snapshot["file"]).stat().st_size > 0


@pytest.fixture
def two_rank_run(tmp_path) -> Path:
    """Two ranks' files in one directory, as a 2-process run writes them (rank given here)."""

    def rank(index: int) -> None:
        with MemoryTracker(tmp_path, 0.01, label="pair", rank=index, world_size=2, device="cpu"):
            _hold((16 + 16 * index) * MIB, 0.1)

    threads = [threading.Thread(target=rank, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["memory-rank0.json", "memory-rank1.json"]
    return tmp_path


def test_plot_draws_every_rank_into_a_png(two_rank_run, tmp_path, capsys):
    out = tmp_path / "figures" / "memory.png"
    assert main(["memory", "plot", str(two_rank_run), "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 20_000
    assert main(["memory", "plot", str(two_rank_run)]) == 0  # default: RUN_DIR/memory.png
    assert (two_rank_run / "memory.png").read_bytes()[:8] == PNG_MAGIC


def test_summary_prints_the_peaks_of_every_rank(two_rank_run, capsys):
    assert main(["memory", "summary", str(two_rank_run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["rank", "series", "sampled", "peak", "MiB", "exact", "peak", "MiB"]
    rows = [line.split() for line in lines[2:4]]
    for index, row in enumerate(rows):
        peak = _record(two_rank_run, rank=index)["peaks"]["cpu_rss"]
        assert row == [
            str(index),
            "cpu_rss",
            f"{peak['sampled'] / MIB:.1f}",
            f"{peak['exact'] / MIB:.1f}",
        ]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: d / "missing", "does not exist"),
        (lambda d: d, "no memory-rank*.json files in"),
        (lambda d: (d / "memory-rank0.json").write_text('{"metadata": ') and d, "not valid JSON"),
        (lambda d: (d / "memory-rank0.json").write_text("[1, 2]") and d, "not a MemoryTracker"),
        (lambda d: (d / "memory-rank0.json").write_text("x") and d / "memory-rank0.json", "not a"),
    ],
    ids=["missing", "empty", "invalid-json", "not-a-record", "a-file"],
)
@pytest.mark.parametrize("command", ["summary", "plot"])
def test_a_bad_run_directory_is_a_clear_error(tmp_path, capsys, setup, message, command):
    run_dir = setup(tmp_path)
    assert main(["memory", command, str(run_dir)]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("accel memory: error: ") and message in captured.err
    assert "Traceback" not in captured.err and captured.out == ""


def test_plot_without_matplotlib_names_the_install(two_rank_run, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an environment without it does
    assert main(["memory", "plot", str(two_rank_run)]) == 1
    err = capsys.readouterr().err
    assert "needs matplotlib" in err and "pip install matplotlib" in err
    assert "accelerate-core[plot]" in err


def test_memory_without_a_subcommand_prints_usage(capsys):
    assert main(["memory"]) == 2
    assert "{plot,summary}" in capsys.readouterr().err


def test_exact_cpu_peak_is_in_bytes():
    import psutil

    assert exact_cpu_peak() >= psutil.Process().memory_info().rss * 0.9  # KiB would be 1/1024
