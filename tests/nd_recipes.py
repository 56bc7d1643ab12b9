"""Recipes the N-D parallelism tests run on 4 real processes (module-level: run_distributed).

Every layout trains the same decoder on the same global batches (8 sequences per step, dealt to
the data-parallel ranks), so a one-process reference on the whole batch must give the same
losses, gradient norms and weights.
"""

from __future__ import annotations

from typing import Any

import torch
from nd_model import make_decoder, next_token_loss, sequence_parallel_plan
from torch.utils.data import DataLoader, Dataset, IterableDataset

STEPS, GLOBAL_BATCH, LR, MAX_NORM, EVAL_SAMPLES = 10, 8, 1e-2, 0.5, 10


class TokenData(Dataset):
    """``STEPS * GLOBAL_BATCH`` random token sequences, each with its index."""

    def __init__(self, samples: int = STEPS * GLOBAL_BATCH, seq: int = 9) -> None:
        generator = torch.Generator().manual_seed(1)
        self.tokens = torch.randint(0, 32, (samples, seq), generator=generator)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"index": index, "tokens": self.tokens[index]}


class Stream(IterableDataset):
    """16 samples ``[index, rank that read it]``: who read a dispatched batch shows."""

    def __iter__(self):
        import torch.distributed as dist

        for index in range(16):
            yield torch.tensor([index, dist.get_rank()])


def make_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)


def reference() -> dict[str, Any]:
    """One process, the whole global batch each step: what every layout must reproduce."""
    model = make_decoder()
    optimizer = make_optimizer(model)
    data = TokenData()
    losses, norms = [], []
    for step in range(STEPS):
        tokens = data.tokens[step * GLOBAL_BATCH : (step + 1) * GLOBAL_BATCH]
        loss = next_token_loss(model, tokens)
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)))
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return {"losses": losses, "norms": norms, "state": model.state_dict()}


def _accelerator(sizes: dict[str, int], plan: str | None = None, **kwargs: Any) -> Any:
    from accelerate_core import Accelerator
    from accelerate_core.utils import ParallelismConfig

    options = {"tp_plan": sequence_parallel_plan()} if plan == "sequence_parallel" else {}
    return Accelerator(
        cpu=True,
        parallelism_config=ParallelismConfig(**sizes),
        backend_options=options,
        **kwargs,
    )


def _plain(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


def train_layout(sizes: dict[str, int], plan: str | None = None) -> dict[str, Any]:
    """10 steps of the decoder under ``ParallelismConfig(**sizes)``; what a test checks."""
    accelerator = _accelerator(sizes, plan)
    mesh = accelerator.torch_device_mesh
    config = accelerator.parallelism_config
    facts: dict[str, Any] = {
        "backend": accelerator.backend,
        "mesh": (mesh.mesh_dim_names, tuple(mesh.shape)),
        "flattened": {
            name: sub.size()
            for name in ("dp", "dp_shard_cp", "dp_cp")
            if (sub := config.submesh(name)) is not None
        },
        "ranks": {
            "tp": accelerator.tensor_parallel_rank,
            "dp_replicate": accelerator.data_parallel_rank,
            "dp_shard": accelerator.data_parallel_shard_rank,
        },
    }
    model = make_decoder()
    optimizer = make_optimizer(model)  # before prepare: rebound to the sharded parameters
    dp = config.data_parallel_size
    loader = DataLoader(TokenData(), batch_size=GLOBAL_BATCH // dp)
    eval_loader = DataLoader(torch.arange(EVAL_SAMPLES), batch_size=1)
    stream = DataLoader(Stream(), batch_size=2)
    model, optimizer, loader, eval_loader, stream = accelerator.prepare(
        model, optimizer, loader, eval_loader, stream
    )
    facts["stream"] = [batch.tolist() for batch in stream]
    watched = ("layers.0.attention.wq.weight", "layers.0.attention_norm.weight")
    facts["placements"] = {
        name: [repr(p) for p in param.placements]
        for name, param in model.named_parameters()
        if name in watched
    }
    losses, sums, norms, seen = [], [], [], []
    for batch in loader:
        loss = next_token_loss(model, batch["tokens"])
        accelerator.backward(loss)
        norms.append(float(accelerator.clip_grad_norm_(model.parameters(), MAX_NORM)))
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(accelerator.reduce(loss.detach(), "mean")))
        sums.append(float(accelerator.reduce(loss.detach(), "sum")))
        seen.append(batch["index"].tolist())
    gathered = [accelerator.gather_for_metrics(batch) for batch in eval_loader]
    facts.update(
        losses=losses,
        sums=sums,
        norms=norms,
        seen=seen,
        dp_size=dp,
        evaluated=torch.cat(gathered).tolist(),
    )
    state = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        facts["state"] = _plain(state)
    return facts


# --------------------------------------------------------------------------- resume


RESUME_SIZES = {"dp_shard_size": 2, "tp_size": 2}
SAVE_AT = 3  # micro-steps; with accumulation 2 this is mid-cycle


def _resume_run(
    directory: str, load: bool, sizes: dict[str, int], plan: str | None = None
) -> dict[str, torch.Tensor] | None:
    accelerator = _accelerator(sizes, plan, gradient_accumulation_steps=2)
    model = make_decoder()
    optimizer = make_optimizer(model)
    dp = accelerator.parallelism_config.data_parallel_size
    loader = DataLoader(TokenData(), batch_size=GLOBAL_BATCH // dp, shuffle=True)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    micro = 0
    if load:
        accelerator.load_state(directory)
        micro = SAVE_AT
    for batch in loader:
        with accelerator.accumulate(model):
            loss = next_token_loss(model, batch["tokens"])
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), MAX_NORM)
            optimizer.step()
            optimizer.zero_grad()
        micro += 1
        if micro == SAVE_AT and not load:
            accelerator.save_state(directory)
    state = accelerator.get_state_dict(model)
    return _plain(state) if accelerator.is_main_process else None


def resume_tp_fsdp(directory: str) -> dict[str, Any]:
    """For TP x FSDP, and TP alone with a sequence-parallel plan: an uninterrupted run saving
    mid-cycle and a run resumed from that checkpoint; then an attempt to resume the first under
    another mesh (in the same processes, fresh objects)."""
    from accelerate_core.utils import ParallelismConfig

    facts: dict[str, Any] = {}
    for name, sizes, plan in (
        ("tp2xfsdp2", RESUME_SIZES, None),
        ("tp4-sequence-parallel", {"tp_size": 4}, "sequence_parallel"),
    ):
        where = f"{directory}-{name}"
        straight = _resume_run(where, False, sizes, plan)
        resumed = _resume_run(where, True, sizes, plan)
        if straight is not None:
            facts[name] = {
                "identical": all(torch.equal(straight[k], resumed[k]) for k in straight),
                "max_diff": max((straight[k] - resumed[k]).abs().max().item() for k in straight),
            }
    directory = f"{directory}-tp2xfsdp2"
    from accelerate_core import Accelerator

    other = Accelerator(cpu=True, parallelism_config=ParallelismConfig(dp_shard_size=4))
    model = make_decoder()
    loader = DataLoader(TokenData(), batch_size=GLOBAL_BATCH // 4, shuffle=True)
    other.prepare(model, make_optimizer(model), loader)
    try:
        other.load_state(directory)
    except Exception as exc:  # every rank must refuse, none may hang
        facts["other_mesh"] = f"{type(exc).__name__}: {exc}"
    return facts


# --------------------------------------------------------------------------- errors


def bad_layouts() -> dict[str, str]:
    """Layouts every rank must refuse with the same message (2 processes)."""
    from accelerate_core import Accelerator
    from accelerate_core.utils import ParallelismConfig

    attempts = {
        "product": {"dp_shard_size": 2, "tp_size": 2},
        "sp": {"sp_size": 2},
        "cp_on_cpu": {"cp_size": 2},
        "replicate_only_fsdp": {"dp_replicate_size": 2},
    }
    messages = {}
    for name, sizes in attempts.items():
        try:
            Accelerator(cpu=True, backend="fsdp", parallelism_config=ParallelismConfig(**sizes))
            messages[name] = "accepted"
        except Exception as exc:
            messages[name] = f"{type(exc).__name__}: {exc}"
    return messages


# --------------------------------------------------------------------------- context parallelism


def context_parallel_sharding() -> dict[str, Any]:
    """The sequence sharding of ``maybe_context_parallel`` on a CPU cp mesh of 2 (the ring
    attention itself needs GPU kernels: ``benchmarks/gpu_context_parallel.py`` runs it)."""
    import torch.nn.functional as F

    from accelerate_core import ConfigurationError, PartialState
    from accelerate_core.context_parallel import context_parallel_shards
    from accelerate_core.utils import ParallelismConfig

    PartialState(cpu=True, backend="fsdp")  # the process group; Accelerator refuses CP on CPU
    config = ParallelismConfig(cp_size=2)
    config.get_device_mesh("cpu")
    cp_mesh = config.submesh("cp")
    ids = torch.arange(8).unsqueeze(0).repeat(2, 1)  # (batch, seq)
    labels = ids.clone() + 100
    query = torch.arange(16.0).reshape(1, 1, 8, 2)  # (batch, heads, seq, dim)
    facts: dict[str, Any] = {}
    with context_parallel_shards(cp_mesh, [ids, labels, query], [1, 1, 2], {labels}):
        facts["inside"] = (ids.tolist(), labels.tolist(), query[0, 0, :, 0].tolist())
        try:
            q = torch.randn(1, 2, 4, 4)
            F.scaled_dot_product_attention(q, q, q, is_causal=True)
            facts["cpu_attention"] = "ran"
        except NotImplementedError as exc:
            facts["cpu_attention"] = f"NotImplementedError: {exc}"
    facts["after"] = (ids.tolist(), labels.tolist(), query.shape[2])
    odd = torch.arange(7).unsqueeze(0)
    try:
        with context_parallel_shards(cp_mesh, [odd], [1], None):
            pass
    except ConfigurationError as exc:
        facts["odd_length"] = str(exc)
    return facts
