"""Training recipes run on 2 real processes by the fsdp tests (module-level: run_distributed).

The reference is hand-written ``DistributedDataParallel`` on the batch schedule the core's
prepared dataloader deals out (whole batches round-robin, the last round completed from the
start of the epoch), the same as in accelerate_ddp's tests.
"""

from __future__ import annotations

import contextlib
import gc
import weakref

import torch
from torch.utils.data import DataLoader, TensorDataset

NUM_SAMPLES, BATCH, EPOCHS, MAX_NORM = 90, 4, 2, 0.5  # 90 = 22 full batches + one of 2
WRAP = {"wrap_classes": ["Block"]}


class Block(torch.nn.Module):
    """A unit of sharding; counts its forward runs (activation checkpointing recomputes)."""

    calls = 0

    def __init__(self, width_in: int, width_out: int, act: bool = True) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(width_in, width_out)
        self.act = act
        # Non-persistent: in no state dict, must still reach every rank (rank-0 loading).
        self.register_buffer("offset", torch.full((width_out,), 0.01), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        Block.calls += 1
        y = self.linear(x) + self.offset
        return torch.nn.functional.gelu(y) if self.act else y


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    # The last block's weight has 1 row: rank 1 holds an empty shard of it.
    return torch.nn.Sequential(Block(8, 32), Block(32, 32), Block(32, 1, act=False))


def data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(NUM_SAMPLES, 8, generator=generator)
    noise = 0.1 * torch.randn(NUM_SAMPLES, 1, generator=generator)
    return inputs, inputs.sum(dim=1, keepdim=True) + noise


def make_optimizer(params) -> torch.optim.Optimizer:
    # Two groups with their own hyper-parameters: rebinding must keep them.
    params = list(params)
    return torch.optim.AdamW(
        [{"params": params[:2], "lr": 3e-2}, {"params": params[2:], "weight_decay": 0.05}],
        lr=2e-2,
    )


def reference_batches(rank: int) -> list[list[int]]:
    """Batch k is samples 4k..4k+3; rank r takes batches r, r+2, ...; the last round (batch 22
    = samples 88, 89) is completed from the epoch's start."""
    batches = [list(range(4 * k, min(4 * k + 4, NUM_SAMPLES))) for k in range(23)]
    mine = batches[rank:22:2]
    mine.append([88, 89, 0, 1] if rank == 0 else [2, 3, 4, 5])
    return mine


def hand_written_ddp(accumulation: int, mixed_precision: str = "no") -> dict[str, torch.Tensor]:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    model = make_model()
    optimizer = make_optimizer(model.parameters())
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.8)
    ddp = DistributedDataParallel(model)
    inputs, targets = data()
    batches = reference_batches(dist.get_rank())
    for _ in range(EPOCHS):
        for i, indices in enumerate(batches):
            sync = (i + 1) % accumulation == 0 or i + 1 == len(batches)
            with contextlib.nullcontext() if sync else ddp.no_sync():
                autocast = (
                    torch.autocast("cpu", dtype=torch.bfloat16)
                    if mixed_precision == "bf16"
                    else contextlib.nullcontext()
                )
                with autocast:
                    out = ddp(inputs[indices])
                loss = torch.nn.functional.mse_loss(out.float(), targets[indices])
                (loss / accumulation).backward()
            if sync:
                torch.nn.utils.clip_grad_norm_(ddp.parameters(), MAX_NORM)
                optimizer.step()
                for _ in range(dist.get_world_size()):  # HF's rule: once per process
                    scheduler.step()
                optimizer.zero_grad()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def full_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every rank's copy of the full weights (the test compares them on both ranks)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    return {k: v.detach().clone() for k, v in state.items()}


def new_accelerator(**kwargs):
    from accelerate_core import Accelerator
    from accelerate_core.state import reset_state

    reset_state(destroy_process_group=False)
    kwargs.setdefault("backend", "fsdp")
    return Accelerator(cpu=True, **kwargs)


def with_accelerator(
    accumulation: int,
    optimizer_first: bool = True,
    mixed_precision: str = "no",
    options: dict | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    accelerator = new_accelerator(
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=accumulation,
        backend_options={**WRAP, **(options or {})},
    )
    model = make_model()
    inputs, targets = data()
    loader = DataLoader(TensorDataset(inputs, targets), batch_size=BATCH)
    facts: dict[str, object] = {}
    if optimizer_first:  # the usual script: optimizer (and scheduler) built before prepare
        optimizer = make_optimizer(model.parameters())
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.8)
        old = [weakref.ref(p) for p in model.parameters()]
        model, optimizer, scheduler, loader = accelerator.prepare(
            model, optimizer, scheduler, loader
        )
        gc.collect()
        facts["old_params_freed"] = all(ref() is None for ref in old)
        facts["groups"] = [(g["lr"], g["weight_decay"]) for g in optimizer.param_groups]
    else:
        model, loader = accelerator.prepare(model, loader)
        optimizer = make_optimizer(model.parameters())
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.8)
        optimizer, scheduler = accelerator.prepare(optimizer, scheduler)
    sharded = {id(p) for p in model.parameters()}
    facts["rebound"] = all(id(p) in sharded for g in optimizer.param_groups for p in g["params"])
    norms = []
    for _ in range(EPOCHS):
        for x, y in loader:
            with accelerator.accumulate(model):
                accelerator.backward(torch.nn.functional.mse_loss(model(x), y))
                norm = accelerator.clip_grad_norm_(model.parameters(), MAX_NORM)
                if norm is not None:
                    norms.append(float(norm))
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
    facts["norms"] = norms
    facts["type"] = type(model).__name__
    facts["backend"] = accelerator.backend
    return full_weights(model), facts


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


# --------------------------------------------------------------------------- launches


def compare_with_ddp() -> dict[str, object]:
    """fp32 against hand-written DDP (accumulation 1 and 5), optimizer before/after prepare,
    bf16 against DDP under autocast, and activation checkpointing against none."""
    out: dict[str, object] = {}
    initial = make_model().state_dict()
    for accumulation in (1, 5):
        ours, facts = with_accelerator(accumulation)
        reference = hand_written_ddp(accumulation)
        out[f"fp32-{accumulation}"] = {
            **facts,
            "max_diff": max_difference(ours, reference),
            "trained": all(not torch.equal(ours[k], initial[k]) for k in initial),
        }
        if accumulation == 5:
            after, after_facts = with_accelerator(accumulation, optimizer_first=False)
            out["before_vs_after"] = {
                "identical": all(torch.equal(ours[k], after[k]) for k in ours),
                "rebound": after_facts["rebound"],
            }
            Block.calls = 0
            checkpointed, _ = with_accelerator(
                accumulation, options={"activation_checkpointing": True}
            )
            out["activation_checkpointing"] = {
                "identical": all(torch.equal(ours[k], checkpointed[k]) for k in ours),
                "calls": Block.calls,
            }
    ours, facts = with_accelerator(1, mixed_precision="bf16")
    reference = hand_written_ddp(1, mixed_precision="bf16")
    out["bf16"] = {**facts, "max_diff": max_difference(ours, reference)}
    return out


def local_bytes(model: torch.nn.Module, optimizer) -> int:
    """Bytes this rank holds for parameters, gradients and optimizer state (local shards)."""
    from torch.distributed.tensor import DTensor

    def size(t: torch.Tensor) -> int:
        t = t.to_local() if isinstance(t, DTensor) else t
        return t.numel() * t.element_size()

    total = 0
    for p in model.parameters():
        total += size(p) + (size(p.grad) if p.grad is not None else 0)
    for state in optimizer.state.values():
        total += sum(size(v) for v in state.values() if isinstance(v, torch.Tensor))
    return total


def options_and_memory() -> dict[str, object]:
    """Per-rank memory against DDP, options reaching fully_shard, rank-0 loading, errors."""
    from torch.distributed.fsdp import FSDPModule

    from accelerate_core import ConfigurationError

    out: dict[str, object] = {}
    # Memory: DDP then FSDP2, one step of AdamW each on the same model (widths divisible by 2).
    for backend in ("ddp", "fsdp"):
        options = {} if backend == "ddp" else WRAP
        accelerator = new_accelerator(backend=backend, backend_options=options)
        torch.manual_seed(0)
        model = torch.nn.Sequential(*(Block(128, 128) for _ in range(4)))
        optimizer = torch.optim.AdamW(model.parameters())
        model, optimizer = accelerator.prepare(model, optimizer)
        accelerator.backward(model(torch.randn(4, 128)).square().mean())
        optimizer.step()
        out[f"bytes_{backend}"] = local_bytes(model, optimizer)
        del model, optimizer
    # reshard_after_forward: after a forward, blocks hold sharded (True) or gathered parameters.
    for reshard in (True, False):
        accelerator = new_accelerator(
            backend_options={**WRAP, "reshard_after_forward": reshard, "cpu_offload": True}
        )
        model = accelerator.prepare(make_model())
        output = model(torch.randn(2, 8))
        out[f"reshard_{reshard}"] = type(model[0].linear.weight).__name__
        output.sum().backward()
        state = model[0]._get_fsdp_state()._fsdp_param_groups[0]
        out["offload"] = state.fsdp_params[0].offload_to_cpu
    # min_num_params: blocks of 32*32+32 parameters are units, the small first one is not.
    accelerator = new_accelerator(backend_options={"min_num_params": 1000})
    model = accelerator.prepare(make_model())
    out["size_units"] = {
        f"{i}.linear": isinstance(b.linear, FSDPModule) for i, b in enumerate(model)
    }
    # bf16: the gathered parameters are bf16 in forward, the sharded ones stay fp32.
    accelerator = new_accelerator(backend_options=WRAP, mixed_precision="bf16")
    model = accelerator.prepare(make_model())
    seen = []
    model[1].register_forward_pre_hook(lambda m, a: seen.append(m.linear.weight.dtype))
    model(torch.randn(2, 8))
    out["bf16_dtypes"] = (str(seen[0]), str(next(model.parameters()).dtype))
    # An optimizer prepared in a later call than its model is rebound too.
    accelerator = new_accelerator(backend_options=WRAP)
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model = accelerator.prepare(model)
    optimizer = accelerator.prepare(optimizer)
    sharded = {id(p) for p in model.parameters()}
    out["late_rebound"] = all(id(p) in sharded for p in optimizer.param_groups[0]["params"])
    # An optimizer that already stepped before prepare: its state is cut to the shards.
    inputs = torch.randn(4, 8, generator=torch.Generator().manual_seed(3))  # same on both ranks
    reference = make_model()
    reference_optimizer = make_optimizer(reference.parameters())
    for _ in range(3):
        reference(inputs).square().mean().backward()
        reference_optimizer.step()
        reference_optimizer.zero_grad()
    accelerator = new_accelerator(backend_options=WRAP)
    model = make_model()
    optimizer = make_optimizer(model.parameters())
    model(inputs).square().mean().backward()
    optimizer.step()
    optimizer.zero_grad()
    model, optimizer = accelerator.prepare(model, optimizer)
    for _ in range(2):
        accelerator.backward(model(inputs).square().mean())
        optimizer.step()
        optimizer.zero_grad()
    out["stepped_before_prepare"] = max_difference(full_weights(model), reference.state_dict())
    # Rank-0 loading: rank 1 builds the model on the meta device.
    accelerator = new_accelerator(backend_options={**WRAP, "cpu_ram_efficient_loading": True})
    if accelerator.process_index == 0:
        model = make_model()
    else:
        with torch.device("meta"):
            model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    expected = make_model().state_dict()
    loaded = full_weights(model)
    out["rank0_loading"] = all(torch.equal(loaded[k], expected[k]) for k in expected) and all(
        torch.equal(b.offset, torch.full_like(b.offset, 0.01)) for b in model
    )
    accelerator.backward(model(torch.randn(2, 8)).square().mean())
    optimizer.step()
    trained = full_weights(model)["0.linear.weight"]
    out["rank0_loading_trains"] = not torch.equal(trained, expected["0.linear.weight"])
    # No communication on accumulation micro-steps: no sharded gradient until the syncing one.
    accelerator = new_accelerator(backend_options=WRAP, gradient_accumulation_steps=2)
    model = accelerator.prepare(make_model())
    with accelerator.no_sync(model):
        accelerator.backward(model(torch.randn(2, 8)).sum())
    out["no_sync_grads"] = [p.grad is not None for p in model.parameters()]
    accelerator.backward(model(torch.randn(2, 8)).sum())
    out["sync_grads"] = [p.grad is not None for p in model.parameters()]
    # Clipping on sharded gradients: the norms are the full gradients' (2 and inf), and value
    # clipping clamps every shard.
    full = torch.cat([p.grad.full_tensor().flatten() for p in model.parameters()])
    norm_2 = accelerator.clip_grad_norm_(model.parameters(), 1e9)
    norm_inf = accelerator.clip_grad_norm_(model.parameters(), 1e9, norm_type=float("inf"))
    out["norms"] = (
        abs(float(norm_2) - float(full.norm())) / float(full.norm()),
        float(norm_inf) == float(full.abs().max()),
    )
    accelerator.clip_grad_value_(model.parameters(), 1e-3)
    local = [p.grad.to_local() for p in model.parameters()]
    out["clipped_by_value"] = max(float(g.abs().max()) for g in local if g.numel())
    out["unwrap_is_model"] = accelerator.unwrap_model(model) is model
    out.update(precisions())
    # Meta-device weights nobody fills: refused on every rank, naming the ranks.
    for name, options in (
        ("meta_rank1", WRAP),
        ("meta_rank0", {"cpu_ram_efficient_loading": True}),
    ):
        accelerator = new_accelerator(backend_options=options)
        meta = accelerator.process_index == (1 if name == "meta_rank1" else 0)
        with torch.device("meta") if meta else contextlib.nullcontext():
            model = make_model()
        try:
            accelerator.prepare(model)
            out[name] = "no error"
        except ConfigurationError as exc:
            out[name] = str(exc)
    # Errors.
    for name, options in (
        ("unknown_class", {"wrap_classes": ["TransformerBlock"]}),
        ("unknown_option", {"shard_strategy": "full"}),
        ("bad_value", {"state_dict_type": "zip"}),
        ("checkpoint_without_units", {"activation_checkpointing": True}),
    ):
        try:
            new_accelerator(backend_options=options).prepare(make_model())
            out[name] = "no error"
        except ConfigurationError as exc:
            out[name] = str(exc)
    return out


# --------------------------------------------------------------------------- checkpoints

RESUME_SAMPLES, RESUME_EPOCHS, RESUME_ACCUMULATION = 50, 3, 3  # 13 batches: 7 per rank


class Counter:
    """Batches seen, registered for checkpointing."""

    def __init__(self) -> None:
        self.count = 0

    def state_dict(self) -> dict[str, int]:
        return {"count": self.count}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.count = state["count"]


def resume_model() -> torch.nn.Module:
    return torch.nn.Sequential(Block(6, 24), torch.nn.Dropout(0.2), Block(24, 1, act=False))


def resume_train(
    directory: str,
    stop_after: int | None = None,
    resume: bool = False,
    options: dict | None = None,
    set_to_none: bool = True,
) -> dict[str, object]:
    """Train; with ``stop_after`` save after that many batches and return; with ``resume``
    continue from ``directory`` in a fresh process state (everything from the checkpoint)."""
    from accelerate_core import set_seed

    accelerator = new_accelerator(
        gradient_accumulation_steps=RESUME_ACCUMULATION, backend_options={**WRAP, **(options or {})}
    )
    set_seed(123 if resume else 0)  # a resumed run must take nothing from its own start
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(RESUME_SAMPLES, 6, generator=generator)
    loader = DataLoader(
        TensorDataset(inputs, inputs.sum(dim=1, keepdim=True)), batch_size=4, shuffle=True
    )
    model = resume_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.7)
    model, optimizer, scheduler, loader = accelerator.prepare(model, optimizer, scheduler, loader)
    counter = Counter()
    accelerator.register_for_checkpointing(counter)
    if resume:
        accelerator.load_state(directory)
    for _ in range(loader.iteration, RESUME_EPOCHS):
        for x, y in loader:
            with accelerator.accumulate(model):
                accelerator.backward(torch.nn.functional.mse_loss(model(x), y))
                accelerator.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=set_to_none)
            counter.count += 1
            if stop_after is not None and counter.count == stop_after:
                accelerator.save_state(directory)
                return {"stopped": counter.count, "files": sorted(_listing(directory))}
    return {
        "weights": full_weights(model),
        "lr": scheduler.get_last_lr()[0],
        "batches": counter.count,
        "accelerator": accelerator,
        "model": model,
    }


def _listing(directory: str) -> list[str]:
    from pathlib import Path

    root = Path(directory)
    return [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]


def checkpoints(directory: str) -> dict[str, object]:
    """Exact resume from sharded and full checkpoints at several points; save_model."""
    reference = resume_train(f"{directory}/unused")
    accelerator, model = reference.pop("accelerator"), reference.pop("model")
    out: dict[str, object] = {"lr": reference["lr"], "batches": reference["batches"]}
    gathered = accelerator.get_state_dict(model)
    out["get_state_dict"] = {k: (str(v.device), type(v).__name__) for k, v in gathered.items()}
    accelerator.save_model(model, f"{directory}/model")
    out["weights"] = reference["weights"]
    # 2: mid-cycle before any optimizer step; 6: a syncing step; 11: mid-cycle in epoch 1.
    # zeros: sharded gradients zeroed with set_to_none=False are still there mid-cycle.
    cases = (("sharded", 2), ("sharded", 6), ("sharded", 11), ("full", 11), ("zeros", 11))
    for kind, stop in cases:
        path = f"{directory}/{kind}-{stop}"
        options = {"state_dict_type": "sharded" if kind == "zeros" else kind}
        saved = resume_train(path, stop_after=stop, options=options, set_to_none=kind != "zeros")
        resumed = resume_train(path, resume=True, set_to_none=kind != "zeros")
        out[f"{kind}-{stop}"] = {
            "files": saved["files"],
            "batches": resumed["batches"],
            "lr": resumed["lr"],
            "exact": all(
                torch.equal(resumed["weights"][k], v) for k, v in reference["weights"].items()
            ),
        }
    return out


# --------------------------------------------------------------------------- precisions


def fp8_model() -> torch.nn.Module:
    torch.manual_seed(0)
    layers = [torch.nn.Linear(16, 64), torch.nn.GELU(), torch.nn.Linear(64, 64), torch.nn.GELU()]
    layers += [torch.nn.Linear(64, 64), torch.nn.GELU(), torch.nn.Linear(64, 1)]
    return torch.nn.Sequential(*layers)  # the first and last Linear stay in high precision


def short_run(backend: str, mixed_precision: str, **kwargs) -> dict[str, object]:
    """Ten steps with an optimizer made before prepare; weights, losses and skipped steps."""
    accelerator = new_accelerator(backend=backend, mixed_precision=mixed_precision, **kwargs)
    model = fp8_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model, optimizer = accelerator.prepare(model, optimizer)
    generator = torch.Generator().manual_seed(accelerator.process_index)
    inputs = torch.randn(32, 16, generator=generator)
    losses, skipped = [], []
    for _ in range(10):
        loss = torch.nn.functional.mse_loss(model(inputs), inputs.sum(dim=1, keepdim=True))
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss))
        skipped.append(accelerator.optimizer_step_was_skipped)
    weights = (
        full_weights(model)
        if backend == "fsdp"
        else {k: v.clone() for k, v in accelerator.unwrap_model(model).state_dict().items()}
    )
    local = type(model[2].weight.to_local()).__name__ if backend == "fsdp" else None
    precomputed = backend == "fsdp" and (
        getattr(model[2].weight._local_tensor, "_precomputed_scale", None) is not None
    )
    return {
        "weights": weights, "losses": losses, "skipped": skipped, "local": local,
        "precomputed": precomputed,
    }  # fmt: skip


def precisions() -> dict[str, object]:
    """fp16 (loss scaling on sharded gradients) and fp8 (torchao conversion before sharding,
    with and without fp8 all-gather) against DDP."""
    out: dict[str, object] = {}
    fp16 = short_run("fsdp", "fp16")
    out["fp16"] = {"skipped": fp16["skipped"], "losses": fp16["losses"]}
    try:
        import torchao  # noqa: F401
    except ImportError:
        return out
    reference = short_run("ddp", "fp8")
    initial = fp8_model().state_dict()
    for all_gather in (False, True):
        run = short_run(
            "fsdp", "fp8", precision_options={"fp8": {"fsdp_fp8_all_gather": all_gather}}
        )
        out[f"fp8-{all_gather}"] = {
            "max_diff": max_difference(run["weights"], reference["weights"]),
            "trained": not torch.equal(run["weights"]["2.weight"], initial["2.weight"]),
            "local": run["local"],
            "precomputed": run["precomputed"],
        }
    return out
