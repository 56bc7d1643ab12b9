"""The training ``accel test`` launches: small, quick, and checked on every rank.

Fits a linear model for a few epochs with whatever the launch configured (processes, backend,
precision, accumulation), then checks that the loss fell, that every rank holds the same weights,
and that evaluation saw each sample exactly once. Exits non-zero with the reason otherwise.
"""

from __future__ import annotations

import sys

import torch
from torch.utils.data import DataLoader, TensorDataset

from accelerate_core.accelerator import Accelerator
from accelerate_core.seeding import set_seed
from accelerate_core.state import describe_device


def main() -> int:
    accelerator = Accelerator()
    set_seed(0)
    inputs = torch.randn(256, 8)
    targets = inputs @ torch.randn(8, 1)
    train = DataLoader(TensorDataset(inputs, targets), batch_size=16, shuffle=True)
    evaluation = DataLoader(TensorDataset(inputs[:50], targets[:50]), batch_size=16)
    model = torch.nn.Linear(8, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    model, optimizer, train, evaluation = accelerator.prepare(model, optimizer, train, evaluation)

    def evaluate() -> tuple[float, int]:
        model.eval()
        errors = []
        with torch.no_grad():
            for x, y in evaluation:
                errors.append(accelerator.gather_for_metrics((model(x).float() - y) ** 2))
        model.train()
        stacked = torch.cat(errors)
        return stacked.mean().item(), stacked.shape[0]

    first, seen = evaluate()
    for _ in range(4):
        for x, y in train:
            with accelerator.accumulate(model):
                loss = torch.nn.functional.mse_loss(model(x).float(), y)
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
    last, _ = evaluate()
    weights = torch.cat([p.detach().float().flatten() for p in model.parameters()])
    everyone = accelerator.gather(weights.unsqueeze(0))
    problems = []
    if not last < first / 2:
        problems.append(f"the loss did not fall enough ({first:.4f} -> {last:.4f})")
    if not torch.allclose(everyone, everyone[0].expand_as(everyone)):
        problems.append("the ranks ended with different weights")
    if seen != 50:
        problems.append(f"evaluation saw {seen} samples instead of 50")
    accelerator.print(
        f"accel test: {accelerator.num_processes} process(es), backend {accelerator.backend}, "
        f"mixed precision {accelerator.mixed_precision}, "
        f"device {describe_device(accelerator.state.device_name, accelerator.device)}, "
        f"accumulation {accelerator.gradient_accumulation_steps}: loss {first:.4f} -> {last:.4f}"
    )
    for problem in problems:
        print(f"accel test: rank {accelerator.process_index}: {problem}", file=sys.stderr)
    accelerator.end_training()
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
