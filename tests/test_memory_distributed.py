"""MemoryTracker under 2 real processes: one valid JSON per rank, plotted and summarised."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from accelerate_core.testing import run_distributed

pytestmark = pytest.mark.multiprocess


def tracked_training(run_dir: str) -> dict[str, object]:
    from accelerate_core import Accelerator

    accelerator = Accelerator(cpu=True, track_memory=run_dir)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 1))
    optimizer = torch.optim.Adam(model.parameters())
    model, optimizer = accelerator.prepare(model, optimizer)
    held = torch.ones(16 * 2**20 // 4 * (accelerator.process_index + 1))  # 16 / 32 MiB, touched
    for _ in range(20):
        accelerator.backward(model(torch.randn(32, 64)).pow(2).mean())
        optimizer.step()
        optimizer.zero_grad()
    path = accelerator.memory_tracker.stop()
    del held
    accelerator.end_training()
    return {"path": str(path), "rank": accelerator.process_index}


def test_each_rank_writes_its_memory_file_and_the_cli_reads_them(tmp_path):
    results = run_distributed(tracked_training, str(tmp_path))
    assert [r["rank"] for r in results] == [0, 1]
    records = []
    for rank in (0, 1):
        path = tmp_path / f"memory-rank{rank}.json"
        assert str(path) == results[rank]["path"]
        record = json.loads(path.read_text())
        assert record["metadata"]["rank"] == rank and record["metadata"]["world_size"] == 2
        series = record["series"]["cpu_rss"]
        assert len(series) == len(record["timestamps"]) >= 2
        assert record["peaks"]["cpu_rss"]["exact"] >= record["peaks"]["cpu_rss"]["sampled"] > 0
        records.append(record)
    summary = subprocess.run(
        [sys.executable, "-m", "accelerate_core", "memory", "summary", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert summary.returncode == 0, summary.stderr
    assert summary.stdout.count("cpu_rss") == 2
    plot = subprocess.run(
        [sys.executable, "-m", "accelerate_core", "memory", "plot", str(tmp_path), "-o",
         str(tmp_path / "memory.png")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert plot.returncode == 0, plot.stderr
    assert (tmp_path / "memory.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
