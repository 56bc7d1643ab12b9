"""A small training recipe shared by the reference tests: the same weights, data and schedule."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

NUM_SAMPLES = 92  # 23 batches of 4: not a multiple of 5, so accumulation has an uneven tail
BATCH_SIZE = 4
MAX_GRAD_NORM = 0.5


def build(seed: int = 0):
    """Model, optimizer, scheduler and dataloader, identical for a given seed."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(NUM_SAMPLES, 8, generator=generator)
    targets = inputs @ torch.randn(8, 1, generator=generator) + 0.1 * torch.randn(
        NUM_SAMPLES, 1, generator=generator
    )
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 32),
        torch.nn.GELU(),
        torch.nn.Linear(32, 16),
        torch.nn.Tanh(),
        torch.nn.Linear(16, 1),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-2, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.7)
    loader = DataLoader(TensorDataset(inputs, targets), batch_size=BATCH_SIZE, shuffle=False)
    return model, optimizer, scheduler, loader


def loss_fn(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.mse_loss(output, target)
