"""Training through Accelerator gives bit-identical weights to the same loop written by hand."""

from __future__ import annotations

import contextlib

import pytest
import recipes
import torch

from accelerate_core import Accelerator

EPOCHS = 2
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def hand_written(mixed_precision: str, accumulation: int) -> tuple[torch.nn.Module, list[float]]:
    """The loop a user writes without the library (PyTorch's AMP recipe).

    The scheduler steps only after a real update: under fp16 the first steps overflow and are
    skipped, and a schedule that counted them would run ahead.
    """
    model, optimizer, scheduler, loader = recipes.build()
    scaler = torch.amp.GradScaler("cpu") if mixed_precision == "fp16" else None
    lrs = []
    for _ in range(EPOCHS):
        for i, (x, y) in enumerate(loader):
            if mixed_precision in DTYPES:
                autocast = torch.autocast("cpu", dtype=DTYPES[mixed_precision])
            else:
                autocast = contextlib.nullcontext()
            with autocast:
                loss = recipes.loss_fn(model(x), y)
            loss = loss / accumulation
            (scaler.scale(loss) if scaler else loss).backward()
            if (i + 1) % accumulation == 0 or i + 1 == len(loader):
                if scaler:
                    scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), recipes.MAX_GRAD_NORM)
                stepped = True
                if scaler:
                    scale = scaler.get_scale()
                    scaler.step(optimizer)
                    scaler.update()
                    stepped = scaler.get_scale() >= scale  # the scale shrinks on a skipped step
                else:
                    optimizer.step()
                if stepped:
                    scheduler.step()
                optimizer.zero_grad()
                lrs.append(scheduler.get_last_lr()[0])
    return model, lrs


def with_accelerator(
    mixed_precision: str, accumulation: int
) -> tuple[torch.nn.Module, list[float], Accelerator]:
    """The same recipe through the library, clipping and stepping on every batch."""
    accelerator = Accelerator(
        mixed_precision=mixed_precision, gradient_accumulation_steps=accumulation, cpu=True
    )
    model, optimizer, scheduler, loader = recipes.build()
    # Deliberately not the order they were made in: prepare returns them in the order given.
    loader, model, scheduler, optimizer = accelerator.prepare(loader, model, scheduler, optimizer)
    lrs = []
    for _ in range(EPOCHS):
        for x, y in loader:
            with accelerator.accumulate(model):
                loss = recipes.loss_fn(model(x), y)
                accelerator.backward(loss)
                accelerator.clip_grad_norm_(model.parameters(), recipes.MAX_GRAD_NORM)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                if accelerator.sync_gradients:
                    lrs.append(scheduler.get_last_lr()[0])
    return accelerator.unwrap_model(model), lrs, accelerator


@pytest.mark.parametrize("accumulation", [1, 5])
@pytest.mark.parametrize("mixed_precision", ["no", "bf16", "fp16"])
def test_weights_bit_identical_to_hand_written_loop(mixed_precision: str, accumulation: int):
    reference, reference_lrs = hand_written(mixed_precision, accumulation)
    ours, lrs, accelerator = with_accelerator(mixed_precision, accumulation)

    steps_per_epoch = -(-len(recipes.build()[3]) // accumulation)
    assert len(lrs) == len(reference_lrs) == EPOCHS * steps_per_epoch
    assert lrs == reference_lrs
    reference_state = reference.state_dict()
    for name, tensor in ours.state_dict().items():
        assert torch.equal(tensor, reference_state[name]), name
    assert accelerator.mixed_precision == mixed_precision


def test_training_changes_weights_so_the_comparison_is_meaningful():
    initial, *_ = recipes.build()
    trained, _ = hand_written("no", 5)
    changed = [
        not torch.equal(a, b)
        for a, b in zip(initial.state_dict().values(), trained.state_dict().values())
    ]
    assert all(changed)


def test_accumulation_steps_only_on_cycle_ends_and_the_uneven_tail():
    accelerator = Accelerator(gradient_accumulation_steps=5, cpu=True)
    model, optimizer, _, loader = recipes.build()
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    syncs = []
    for x, y in loader:
        with accelerator.accumulate(model):
            accelerator.backward(recipes.loss_fn(model(x), y))
            syncs.append(accelerator.sync_gradients)
            optimizer.step()
            optimizer.zero_grad()
    # 23 batches: syncs after 5, 10, 15, 20 and on the last batch (the tail of 3).
    assert [i + 1 for i, s in enumerate(syncs) if s] == [5, 10, 15, 20, 23]


def test_loss_is_divided_by_accumulation_steps():
    accelerator = Accelerator(gradient_accumulation_steps=4, cpu=True)
    weight = torch.nn.Parameter(torch.ones(3))
    accelerator.backward((weight * 2.0).sum())
    assert torch.equal(weight.grad, torch.full((3,), 0.5))


def test_clip_grad_norm_returns_total_norm_on_sync_and_none_between():
    accelerator = Accelerator(gradient_accumulation_steps=2, cpu=True)
    model = accelerator.prepare(torch.nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, 4.0]]))
    x = torch.tensor([[1.0, 0.0]])
    with accelerator.accumulate(model):
        accelerator.backward(model(x).sum())
        assert accelerator.clip_grad_norm_(model.parameters(), 0.1) is None
        assert torch.equal(model.weight.grad, torch.tensor([[0.5, 0.0]]))  # not clipped yet
    with accelerator.accumulate(model):
        accelerator.backward(model(x).sum())
        norm = accelerator.clip_grad_norm_(model.parameters(), 0.1)
    assert norm == pytest.approx(1.0)
    assert model.weight.grad.norm().item() == pytest.approx(0.1, rel=1e-5)


def test_clip_grad_value():
    accelerator = Accelerator(cpu=True)
    weight = torch.nn.Parameter(torch.zeros(3))
    (weight * torch.tensor([-5.0, 0.5, 5.0])).sum().backward()
    accelerator.clip_grad_value_([weight], 1.0)
    assert torch.equal(weight.grad, torch.tensor([-1.0, 0.5, 1.0]))
