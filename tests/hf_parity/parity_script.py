"""A training script in Hugging Face Accelerate's idiom, run by HF Accelerate and by us.

``tests/test_hf_parity.py`` runs this file as written (``from accelerate import ...``) and with the
module renamed in its import lines (``accelerate_core``), on 1 and 2 processes, and compares
what rank 0 writes to ``argv[1]``: optimizer steps, scheduler steps, the learning rate after
every update and how many samples the evaluation gathered. Two cases: gradient accumulation
with an uneven last batch, and ``split_batches``.
"""

import json
import sys

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from torch.utils.data import DataLoader, TensorDataset


def run_case(accumulation, split_batches):
    accelerator = Accelerator(
        cpu=True,
        gradient_accumulation_steps=accumulation,
        dataloader_config=DataLoaderConfiguration(split_batches=split_batches),
    )
    set_seed(0)
    x = torch.randn(50, 4)
    train = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4, shuffle=True)
    evaluation = DataLoader(TensorDataset(x[:21], x[:21].sum(1, keepdim=True)), batch_size=4)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    epochs = 2
    # HF's examples size the schedule from the dataloader before prepare.
    total = len(train) * epochs // accumulation
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1 - s / total))
    steps = []
    optimizer.register_step_post_hook(lambda *args: steps.append(1))
    torch_scheduler = schedule
    model, optimizer, train, evaluation, schedule = accelerator.prepare(
        model, optimizer, train, evaluation, schedule
    )
    learning_rates = []
    for _ in range(epochs):
        model.train()
        for inputs, targets in train:
            with accelerator.accumulate(model):
                loss = torch.nn.functional.mse_loss(model(inputs), targets)
                accelerator.backward(loss)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()
            if accelerator.sync_gradients:
                learning_rates.append(round(schedule.get_last_lr()[0], 10))
    model.eval()
    gathered = 0
    for inputs, targets in evaluation:
        with torch.no_grad():
            predictions = model(inputs)
        predictions, references = accelerator.gather_for_metrics((predictions, targets))
        gathered += len(predictions)
        assert len(references) == len(predictions)
    result = {
        "num_processes": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type.value),
        "optimizer_steps": len(steps),
        "scheduler_steps": torch_scheduler.last_epoch,
        "learning_rates": learning_rates,
        "gathered": gathered,
        "train_batches": len(train),
    }
    accelerator.wait_for_everyone()
    return result


if __name__ == "__main__":
    results = {
        "accumulation": run_case(accumulation=2, split_batches=False),
        "split_batches": run_case(accumulation=1, split_batches=True),
    }
    if int(__import__("os").environ.get("RANK", "0")) == 0:
        with open(sys.argv[1], "w") as f:
            json.dump(results, f, indent=1)
