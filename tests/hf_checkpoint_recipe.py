"""One training recipe run by Hugging Face Accelerate and by accelerate-core, for
``test_hf_checkpoint.py``. ``python hf_checkpoint_recipe.py hf OUT.pt CKPT_DIR [--resume]``
runs HF Accelerate (a test-only dependency) in its own process."""

from __future__ import annotations

import sys

import torch

SAVE_AT, TOTAL = 5, 8  # batches before the checkpoint, batches in all


class Counter:
    """A registered object: its state must survive the checkpoint."""

    def __init__(self) -> None:
        self.n = 0

    def state_dict(self) -> dict:
        return {"n": self.n}

    def load_state_dict(self, state: dict) -> None:
        self.n = state["n"]


def build():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 16), torch.nn.Dropout(0.3), torch.nn.Linear(16, 1)
    )  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    generator = torch.Generator().manual_seed(1)
    data = torch.utils.data.TensorDataset(
        torch.randn(64, 4, generator=generator), torch.randn(64, 1, generator=generator)
    )
    loader = torch.utils.data.DataLoader(data, batch_size=8, shuffle=False)
    return model, optimizer, scheduler, loader


def train(accelerator, model, optimizer, scheduler, loader, counter, batches):
    for x, y in batches:
        loss = torch.nn.functional.mse_loss(model(x), y)
        accelerator.backward(loss)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        counter.n += 1


def run(accelerator_class, checkpoint: str, resume: bool, save_fn=None) -> dict:
    """Train to SAVE_AT and save, or resume from ``checkpoint`` and train to TOTAL."""
    accelerator = accelerator_class(cpu=True)
    counter = Counter()
    accelerator.register_for_checkpointing(counter)
    model, optimizer, scheduler, loader = build()
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    if not resume:  # one pass over the loader, saving after batch SAVE_AT, going on
        torch.manual_seed(123)  # the dropout stream the checkpoint must carry on
        for i, batch in enumerate(loader):
            train(accelerator, model, optimizer, scheduler, loader, counter, [batch])
            if i + 1 == SAVE_AT:
                accelerator.save_state(checkpoint)
    else:  # the HF way of resuming: load_state, then skip the batches already seen
        accelerator.load_state(checkpoint)
        for batch in accelerator.skip_first_batches(loader, SAVE_AT):
            train(accelerator, model, optimizer, scheduler, loader, counter, [batch])
    weights = {
        k: v.detach().clone() for k, v in accelerator.unwrap_model(model).state_dict().items()
    }
    return {"weights": weights, "counter": counter.n, "lr": scheduler.get_last_lr()}


if __name__ == "__main__":
    from accelerate import Accelerator

    out, checkpoint = sys.argv[2], sys.argv[3]
    torch.save(run(Accelerator, checkpoint, "--resume" in sys.argv), out)
