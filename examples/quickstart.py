"""Quickstart: a small regression model trained through Accelerator.

Runs unchanged on a CPU, one GPU, or several processes (``accel launch``/``torchrun`` once a
distributed backend such as accelerate-ddp is installed). Try ``--mixed-precision bf16`` or
``--gradient-accumulation-steps 4``.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.data import DataLoader, TensorDataset

from accelerate_core import Accelerator, set_seed


def main() -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mixed-precision", default=None, choices=["no", "fp16", "bf16"])
    parser.add_argument("--gradient-accumulation-steps", type=int, default=None)  # launch's
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--cpu", action="store_true")
    args = parser.parse_args()

    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        cpu=args.cpu or None,
    )
    set_seed(0)
    inputs = torch.randn(1024, 16)
    targets = inputs @ torch.randn(16, 1) + 0.05 * torch.randn(1024, 1)
    loader = DataLoader(TensorDataset(inputs, targets), batch_size=32, shuffle=True)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs * 32)

    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    accelerator.print(accelerator)
    loss = torch.tensor(float("nan"))
    for epoch in range(args.epochs):
        total, batches = 0.0, 0
        for x, y in loader:
            with accelerator.accumulate(model):
                loss = torch.nn.functional.mse_loss(model(x), y)
                accelerator.backward(loss)
                accelerator.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            total += loss.item()
            batches += 1
        accelerator.print(f"epoch {epoch}: mean loss {total / batches:.4f}")
    accelerator.end_training()
    return total / batches


if __name__ == "__main__":
    main()
