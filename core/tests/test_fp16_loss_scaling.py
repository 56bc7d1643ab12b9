"""fp16 dynamic loss scaling: an overflowing step is skipped, the scale shrinks, then grows."""

from __future__ import annotations

import torch

from accelerate_core import Accelerator, GradScalerKwargs


def test_inf_gradient_skips_step_shrinks_scale_then_grows():
    accelerator = Accelerator(
        mixed_precision="fp16",
        cpu=True,
        kwargs_handlers=[GradScalerKwargs(init_scale=1024.0, growth_interval=2)],
    )
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    x = torch.randn(8, 4)

    scales, skipped, changed = [], [], []
    for step in range(4):
        before = [p.detach().clone() for p in model.parameters()]
        accelerator.backward(model(x).pow(2).mean())
        if step == 1:  # inject an overflow into one gradient
            model.weight.grad[0, 0] = float("inf")
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        scales.append(accelerator.scaler.get_scale())
        skipped.append(accelerator.optimizer_step_was_skipped)
        changed.append(any(not torch.equal(b, p) for b, p in zip(before, model.parameters())))

    assert skipped == [False, True, False, False]
    assert changed == [True, False, True, True]
    # 1024 kept after one good step, halved by the overflow, doubled after two good steps.
    assert scales == [1024.0, 512.0, 512.0, 1024.0]
    # The scheduler stepped only after the three real updates.
    assert scheduler.scheduler.last_epoch == 3
    assert scheduler.get_last_lr() == [0.1 / 4]


def test_fp16_forward_runs_in_half_and_returns_fp32():
    accelerator = Accelerator(mixed_precision="fp16", cpu=True)
    seen = {}
    model = torch.nn.Sequential(torch.nn.Linear(4, 2))
    model[0].register_forward_hook(lambda m, i, o: seen.update(dtype=o.dtype))
    model = accelerator.prepare(model)
    out = model(torch.randn(3, 4))
    assert seen["dtype"] == torch.float16
    assert out.dtype == torch.float32
    plain = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    seen.clear()
    assert plain(torch.randn(3, 4)).dtype == torch.float32
    assert seen["dtype"] == torch.float32


def test_unscale_happens_once_before_clipping():
    accelerator = Accelerator(
        mixed_precision="fp16", cpu=True, kwargs_handlers=[GradScalerKwargs(init_scale=256.0)]
    )
    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = accelerator.prepare(torch.optim.SGD([weight], lr=1.0))
    accelerator.backward((weight * torch.tensor([3.0, 4.0])).sum())
    assert torch.equal(weight.grad, torch.tensor([768.0, 1024.0]))  # scaled by 256
    norm = accelerator.clip_grad_norm_([weight], 100.0)
    accelerator.clip_grad_norm_([weight], 100.0)  # a second call must not unscale again
    assert norm.item() == 5.0
    assert torch.equal(weight.grad, torch.tensor([3.0, 4.0]))
    optimizer.step()
    assert torch.equal(weight.detach(), torch.tensor([-3.0, -4.0]))


def _device_reads_of_a_training(monkeypatch, with_scheduler: bool, fused: bool = False) -> int:
    """``Tensor.item`` calls (device reads, a sync on GPUs) made by 6 fp16 training steps."""
    from accelerate_core.state import reset_state

    reset_state()
    accelerator = Accelerator(mixed_precision="fp16", cpu=True)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1, fused=fused)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    objects = (model, optimizer, scheduler) if with_scheduler else (model, optimizer)
    model, optimizer, *rest = accelerator.prepare(*objects)
    reads = []
    real_item = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda t: reads.append(1) or real_item(t))
    for _ in range(6):
        accelerator.backward(model(torch.randn(8, 4)).pow(2).mean())
        optimizer.step()
        for scheduler in rest:
            scheduler.step()
        optimizer.zero_grad()
    monkeypatch.undo()
    return len(reads)


def test_a_prepared_scheduler_reads_nothing_from_the_device_under_fp16(monkeypatch):
    """The skip flag comes from a post-step hook: the scheduler's check costs no device sync."""
    plain = _device_reads_of_a_training(monkeypatch, with_scheduler=False)
    scheduled = _device_reads_of_a_training(monkeypatch, with_scheduler=True)
    assert scheduled == plain


def test_a_fused_optimizer_skips_inside_its_kernel_and_the_flag_says_so():
    """Fused optimizers step on every call and skip in the kernel; the flag reads found_inf."""
    accelerator = Accelerator(mixed_precision="fp16", cpu=True)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1, fused=True)
    model, optimizer = accelerator.prepare(model, optimizer)
    skipped = []
    for step in range(3):
        accelerator.backward(model(torch.randn(8, 4)).pow(2).mean())
        if step == 1:
            model.weight.grad[0, 0] = float("inf")
        optimizer.step()
        optimizer.zero_grad()
        skipped.append(accelerator.optimizer_step_was_skipped)
    assert skipped == [False, True, False]
