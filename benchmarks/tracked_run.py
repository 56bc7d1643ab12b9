"""A short 2-process training with memory tracking, for the MemoryTracker plot of the suite.

accel launch --cpu --num-processes 2 benchmarks/tracked_run.py RUN_DIR [--quick]
"""

from __future__ import annotations

import sys

import torch

from accelerate_core import Accelerator


def main() -> None:
    run_dir, quick = sys.argv[1], "--quick" in sys.argv[2:]
    width, steps = (256, 10) if quick else (1024, 40)
    accelerator = Accelerator(track_memory=run_dir)
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(8)])
    optimizer = torch.optim.Adam(model.parameters())
    model, optimizer = accelerator.prepare(model, optimizer)
    for _ in range(steps):
        accelerator.backward(
            model(torch.randn(64, width, device=accelerator.device)).square().mean()
        )
        optimizer.step()
        optimizer.zero_grad()
    accelerator.end_training()


if __name__ == "__main__":
    main()
