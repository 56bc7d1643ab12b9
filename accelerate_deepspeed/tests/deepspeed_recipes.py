"""The recipe shared by the deepspeed tests (module-level functions: run_distributed imports them).

The data, model and reference batch schedule are those of accelerate_ddp/tests/test_ddp_training:
the core deals whole batches round-robin and completes the last round from the epoch's start.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

NUM_SAMPLES, BATCH, EPOCHS, MAX_NORM, ACCUMULATION = 90, 4, 2, 0.5, 5  # 90 = 22 batches + 2
LR, GAMMA, STEP_SIZE = 2e-2, 0.8, 2


def build() -> tuple[torch.nn.Module, Any, Any, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(NUM_SAMPLES, 8, generator=generator)
    targets = inputs.sum(dim=1, keepdim=True) + 0.1 * torch.randn(
        NUM_SAMPLES, 1, generator=generator
    )
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 32), torch.nn.GELU(), torch.nn.Linear(32, 1)
    )  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=STEP_SIZE, gamma=GAMMA)
    return model, optimizer, scheduler, inputs, targets


def reference_batches(rank: int, world: int) -> list[list[int]]:
    """Batch k is samples 4k..4k+3; rank r takes batches r, r+2, ...; the last round (batch
    22 = samples 88, 89) is completed from the epoch's start."""
    assert world == 2
    batches = [list(range(4 * k, min(4 * k + 4, NUM_SAMPLES))) for k in range(23)]
    mine = batches[rank:22:2]
    mine.append([88, 89, 0, 1] if rank == 0 else [2, 3, 4, 5])
    return mine


def hand_written_ddp(accumulation: int = ACCUMULATION) -> tuple[dict[str, torch.Tensor], list]:
    """The fp32 recipe written by hand with DistributedDataParallel: weights, clipped norms."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    model, optimizer, scheduler, inputs, targets = build()
    ddp = DistributedDataParallel(model)
    batches = reference_batches(dist.get_rank(), dist.get_world_size())
    norms = []
    for _ in range(EPOCHS):
        for i, indices in enumerate(batches):
            sync = (i + 1) % accumulation == 0 or i + 1 == len(batches)
            with contextlib.nullcontext() if sync else ddp.no_sync():
                loss = torch.nn.functional.mse_loss(ddp(inputs[indices]), targets[indices])
                (loss / accumulation).backward()
            if sync:
                norms.append(float(torch.nn.utils.clip_grad_norm_(ddp.parameters(), MAX_NORM)))
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, norms


def loader(inputs: torch.Tensor, targets: torch.Tensor) -> torch.utils.data.DataLoader:
    from torch.utils.data import DataLoader, TensorDataset

    return DataLoader(TensorDataset(inputs, targets), batch_size=BATCH)


def new_accelerator(**kwargs: Any) -> Any:
    """A fresh Accelerator in a process that keeps its process group between recipes."""
    from accelerate_core import Accelerator
    from accelerate_core.state import reset_state

    reset_state(destroy_process_group=False)
    kwargs.setdefault("gradient_accumulation_steps", ACCUMULATION)
    return Accelerator(backend="deepspeed", cpu=True, **kwargs)


def train(accelerator: Any, model: Any, optimizer: Any, scheduler: Any, data: Any,
          epochs: int = EPOCHS, clip: bool = True) -> dict[str, Any]:  # fmt: skip
    """The user's loop: clip, step and schedule on every batch (the library skips micro-steps)."""
    norms = []
    batches = 0
    for _ in range(epochs):
        for x, y in data:
            batches += 1
            with accelerator.accumulate(model):
                accelerator.backward(torch.nn.functional.mse_loss(model(x), y))
                norm = accelerator.clip_grad_norm_(model.parameters(), MAX_NORM) if clip else None
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                optimizer.zero_grad()
                if norm is not None:
                    norms.append(float(norm))
    return {"batches": batches, "norms": norms}


def max_difference(ours: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    assert ours.keys() == reference.keys(), (sorted(ours), sorted(reference))
    return max(float((ours[k].float() - reference[k].float()).abs().max()) for k in reference)


def optimizer_state_bytes(engine: Any) -> int:
    """Bytes of the torch optimizer's state (Adam moments) this rank holds."""
    inner = engine.optimizer
    torch_optimizer = inner if isinstance(inner, torch.optim.Optimizer) else inner.optimizer
    return sum(
        t.numel() * t.element_size()
        for state in torch_optimizer.state.values()
        for t in state.values()
        if isinstance(t, torch.Tensor) and t.dim() > 0
    )


def parameter_bytes(engine: Any) -> int:
    """Bytes of parameter data this rank holds (its ZeRO-3 partition plus what is gathered)."""
    total = 0
    for p in engine.module.parameters():
        total += p.data.numel() * p.element_size()
        partition = getattr(p, "ds_tensor", None)
        if partition is not None:
            total += partition.numel() * partition.element_size()
    return total
