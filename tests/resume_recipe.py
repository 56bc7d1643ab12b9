"""A training run that can stop at any batch, save, and resume in a fresh state (tests)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

EPOCHS = 3
NUM_SAMPLES = 50  # batches of 4: 13 per epoch (the last of 2)
BATCH = 4
ACCUMULATION = 3


def build(seed: int = 0):
    from accelerate_core import set_seed

    set_seed(seed)
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(NUM_SAMPLES, 6, generator=generator)
    targets = inputs.sum(dim=1, keepdim=True)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 24), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(24, 1)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.7)
    loader = DataLoader(TensorDataset(inputs, targets), batch_size=BATCH, shuffle=True)
    return model, optimizer, scheduler, loader


class Counter:
    """A user object registered for checkpointing."""

    def __init__(self) -> None:
        self.count = 0

    def state_dict(self) -> dict[str, int]:
        return {"count": self.count}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.count = state["count"]


def train(
    directory: str,
    stop_after: int | None = None,
    resume: bool = False,
    hf_style: bool = False,
    mixed_precision: str = "no",
) -> dict[str, object]:
    """Train; with ``stop_after`` save after that many batches and return; with ``resume``
    start from the checkpoint in ``directory`` (in a fresh process state)."""
    from accelerate_core import Accelerator
    from accelerate_core.state import reset_state

    reset_state(destroy_process_group=False)
    accelerator = Accelerator(
        cpu=True, gradient_accumulation_steps=ACCUMULATION, mixed_precision=mixed_precision
    )
    # A different seed for the resumed run: everything must come from the checkpoint.
    model, optimizer, scheduler, loader = build(seed=123 if resume else 0)
    model, optimizer, scheduler, loader = accelerator.prepare(model, optimizer, scheduler, loader)
    counter = Counter()
    accelerator.register_for_checkpointing(counter)
    start_epoch, skip = 0, 0
    if resume:
        accelerator.load_state(directory)
        start_epoch = loader.iteration
        if hf_style:  # the script tracks its own position, as with Hugging Face Accelerate
            skip = counter.count % len(loader)
            start_epoch = counter.count // len(loader)
    for epoch in range(start_epoch, EPOCHS):
        active = loader
        if hf_style and epoch == start_epoch and skip:
            active = accelerator.skip_first_batches(loader, skip)
        for x, y in active:
            with accelerator.accumulate(model):
                loss = torch.nn.functional.mse_loss(model(x), y)
                accelerator.backward(loss)
                accelerator.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            counter.count += 1
            if stop_after is not None and counter.count == stop_after:
                accelerator.save_state(directory)
                return {"stopped": counter.count}
    return {
        "weights": {k: v.clone() for k, v in accelerator.unwrap_model(model).state_dict().items()},
        "batches": counter.count,
        "lr": scheduler.get_last_lr()[0],
    }
