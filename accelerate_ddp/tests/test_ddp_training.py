"""2 real processes (torchrun, gloo): training through ddp equals hand-written DDP bit for bit."""

from __future__ import annotations

import contextlib

import pytest
import torch

from accelerate_core.testing import run_distributed

pytestmark = pytest.mark.multiprocess

NUM_SAMPLES, BATCH, EPOCHS, MAX_NORM = 90, 4, 2, 0.5  # 90 = 22 full batches + one of 2
DTYPES = {"bf16": torch.bfloat16}


def build():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(NUM_SAMPLES, 8, generator=generator)
    targets = inputs.sum(dim=1, keepdim=True) + 0.1 * torch.randn(
        NUM_SAMPLES, 1, generator=generator
    )
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 32), torch.nn.GELU(), torch.nn.Linear(32, 1)
    )  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.8)
    return model, optimizer, scheduler, inputs, targets


def reference_batches(rank: int, world: int) -> list[list[int]]:
    """The global batches, written out: batch k is samples 4k..4k+3; rank r takes batches r,
    r+2, ...; the last round (batch 22 = samples 88, 89) is completed from the epoch's start."""
    assert world == 2
    batches = [list(range(4 * k, min(4 * k + 4, NUM_SAMPLES))) for k in range(23)]
    mine = batches[rank:22:2]
    mine.append([88, 89, 0, 1] if rank == 0 else [2, 3, 4, 5])
    return mine


def hand_written(mixed_precision: str, accumulation: int) -> dict[str, torch.Tensor]:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    rank, world = dist.get_rank(), dist.get_world_size()
    model, optimizer, scheduler, inputs, targets = build()
    ddp = DistributedDataParallel(model)
    batches = reference_batches(rank, world)
    for _ in range(EPOCHS):
        for i, indices in enumerate(batches):
            sync = (i + 1) % accumulation == 0 or i + 1 == len(batches)
            with contextlib.nullcontext() if sync else ddp.no_sync():
                if mixed_precision in DTYPES:
                    autocast = torch.autocast("cpu", dtype=DTYPES[mixed_precision])
                else:
                    autocast = contextlib.nullcontext()
                with autocast:
                    loss = torch.nn.functional.mse_loss(ddp(inputs[indices]), targets[indices])
                (loss / accumulation).backward()
            if sync:
                torch.nn.utils.clip_grad_norm_(ddp.parameters(), MAX_NORM)
                optimizer.step()
                for _ in range(world):  # HF's rule: a prepared scheduler steps once per process
                    scheduler.step()
                optimizer.zero_grad()
    return {k: v.clone() for k, v in model.state_dict().items()}


def with_accelerator(mixed_precision: str, accumulation: int) -> tuple[dict, dict]:
    from torch.utils.data import DataLoader, TensorDataset

    from accelerate_core import Accelerator
    from accelerate_core.state import reset_state

    reset_state(destroy_process_group=False)
    accelerator = Accelerator(
        mixed_precision=mixed_precision, gradient_accumulation_steps=accumulation, cpu=True
    )
    model, optimizer, scheduler, inputs, targets = build()
    loader = DataLoader(TensorDataset(inputs, targets), batch_size=BATCH)
    model, optimizer, scheduler, loader = accelerator.prepare(model, optimizer, scheduler, loader)
    seen = []
    for _ in range(EPOCHS):
        for x, y in loader:
            seen.append(len(x))
            with accelerator.accumulate(model):
                accelerator.backward(torch.nn.functional.mse_loss(model(x), y))
                accelerator.clip_grad_norm_(model.parameters(), MAX_NORM)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
    facts = {
        "num_processes": accelerator.num_processes,
        "backend": accelerator.backend,
        "wrapped": type(model).__name__,
        "batches": len(seen),
        "lr": scheduler.get_last_lr()[0],
    }
    state = {k: v.clone() for k, v in accelerator.unwrap_model(model).state_dict().items()}
    return state, facts


def compare_all_recipes() -> dict[str, object]:
    out = {}
    for mixed_precision in ("no", "bf16"):
        for accumulation in (1, 5):
            ours, facts = with_accelerator(mixed_precision, accumulation)
            reference = hand_written(mixed_precision, accumulation)
            initial = build()[0].state_dict()
            out[f"{mixed_precision}-{accumulation}"] = {
                **facts,
                "identical": all(torch.equal(ours[k], reference[k]) for k in reference),
                "trained": all(not torch.equal(ours[k], initial[k]) for k in initial),
            }
    return out


def test_ddp_weights_bit_identical_to_hand_written_ddp():
    results = run_distributed(compare_all_recipes, timeout=180)
    for rank_results in results:
        for recipe, facts in rank_results.items():
            assert facts["num_processes"] == 2, recipe
            assert facts["backend"] == "ddp" and facts["wrapped"] == "DistributedDataParallel"
            assert facts["batches"] == EPOCHS * 12, recipe  # 23 batches -> 12 per rank
            assert facts["trained"], recipe
            assert facts["identical"], recipe
    assert results[0] == results[1]  # both ranks hold the same weights and schedule


def options_and_errors() -> dict[str, object]:
    from accelerate_core import Accelerator, ConfigurationError
    from accelerate_core.state import reset_state

    out: dict[str, object] = {}
    accelerator = Accelerator(cpu=True, backend_options={"comm_hook": "fp16", "static_graph": True})
    model, optimizer, _, inputs, targets = build()
    model, optimizer = accelerator.prepare(model, optimizer)
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(3):
        accelerator.backward(torch.nn.functional.mse_loss(model(inputs), targets))
        optimizer.step()
        optimizer.zero_grad()
    out["comm_hook_trains"] = all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    out["static_graph"] = model.static_graph
    frozen = torch.nn.Linear(2, 2).requires_grad_(False)
    out["frozen_not_wrapped"] = accelerator.prepare(frozen) is frozen
    reset_state(destroy_process_group=False)
    try:
        Accelerator(cpu=True, backend_options={"find_unused": True}).prepare(torch.nn.Linear(2, 2))
    except ConfigurationError as exc:
        out["unknown_option"] = str(exc)
    reset_state(destroy_process_group=False)
    try:  # refused when the Accelerator is created, before any collective could wait for it
        Accelerator(cpu=True, backend_options={"typo": 1})
    except ConfigurationError as exc:
        out["at_creation"] = str(exc)
    return out


def test_ddp_options_reach_ddp_and_unknown_ones_are_errors():
    for result in run_distributed(options_and_errors):
        assert result["comm_hook_trains"] and result["static_graph"] is True
        assert result["frozen_not_wrapped"]
        assert result["unknown_option"].startswith("unknown ddp option(s) find_unused; valid: ")
        assert "find_unused_parameters" in result["unknown_option"]
        assert result["at_creation"].startswith("unknown ddp option(s) typo; valid: ")


def no_backend_error() -> str:
    from accelerate_core import Accelerator

    Accelerator(cpu=True)
    return "no error"


def test_two_processes_without_a_distributed_backend_fail_on_every_rank():
    env = {"ACCELERATE_CORE_DISABLE_PLUGIN_AUTOLOAD": "1"}
    results = run_distributed(no_backend_error, allow_errors=True, env=env)
    for result in results:
        assert not result.ok
        assert "says this run has 2 processes but no distributed backend is installed" in (
            result.error
        )
        assert "pip install accelerate-ddp" in result.error


def uneven_epoch() -> dict[str, object]:
    from torch.utils.data import DataLoader, TensorDataset

    from accelerate_core import Accelerator, ConfigurationError

    accelerator = Accelerator(cpu=True, even_batches=False)
    model, optimizer, _, inputs, targets = build()
    loader = DataLoader(TensorDataset(inputs, targets), batch_size=BATCH)  # 23 batches: 12 + 11
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    out: dict[str, object] = {}
    try:
        for _ in loader:
            pass
    except ConfigurationError as exc:
        out["refused"] = str(exc)
    with torch.no_grad():
        out["eval_batches"] = sum(1 for _ in loader)  # evaluation needs no join
    steps = 0
    with accelerator.join_uneven_inputs([model]):
        for x, y in loader:
            accelerator.backward(torch.nn.functional.mse_loss(model(x), y))
            optimizer.step()
            optimizer.zero_grad()
            steps += 1
    out["steps"] = steps
    out["weights"] = accelerator.unwrap_model(model).state_dict()
    return out


def test_uneven_batches_are_refused_without_join_and_train_with_it():
    results = run_distributed(uneven_epoch)
    for out in results:
        assert "different numbers of batches (12, 11)" in out["refused"]
        assert "accelerator.join_uneven_inputs([model])" in out["refused"]
    assert [out["eval_batches"] for out in results] == [12, 11]
    assert [out["steps"] for out in results] == [12, 11]
    for name, tensor in results[0]["weights"].items():
        assert torch.equal(tensor, results[1]["weights"][name])  # still in sync after Join
