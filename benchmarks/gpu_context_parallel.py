"""GPU check of context parallelism (``maybe_context_parallel``) on a machine with ONE GPU.

Context parallelism needs at least 2 ranks, and NCCL refuses two ranks on one GPU ("Duplicate
GPU detected"). This script tries, in order, until one runs:

1. ``nccl-hostid``: 2 processes on cuda:0, NCCL told they are on different hosts
   (``NCCL_HOSTID``) so they talk over sockets on loopback;
2. ``gloo-cuda``: 2 processes on cuda:0 with a gloo process group (gloo moves CUDA tensors
   through host memory, where it supports the collective);
3. ``single-rank`` (always): 1 process, a cp mesh of 1: the CP dispatcher and ring attention
   code path on the GPU against plain SDPA (weak: no exchange between ranks).

With 2 ranks it checks (a) ring attention itself: forward and backward of causal SDPA on the
load-balanced shards against the full-sequence result, and (b) training: the decoder of
``tests/nd_model.py`` for 5 AdamW steps under ``Accelerator(parallelism_config=
ParallelismConfig(cp_size=2))`` (fsdp backend, FSDP over the cp ranks, batches passed through
``maybe_context_parallel``) against one process on whole sequences: losses and final weights.

Run from the repository root, packages not installed (torch with CUDA, pluggy, pyyaml,
safetensors, xxhash, numpy present), in well under 2 minutes:

    PYTHONPATH=core/src:accelerate_fsdp/src OUT=/tmp/out python benchmarks/gpu_context_parallel.py

Writes ``$OUT/gpu_context_parallel.json`` (and prints it).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STRATEGY_TIMEOUT = {"nccl-hostid": 40, "gloo-cuda": 40, "single-rank": 30}
SEQ, BATCH, STEPS, LR = 64, 2, 5, 1e-3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(strategy: str, device: str) -> dict[str, Any]:
    """Run the worker of ``strategy`` on its processes; every rank's JSON or the failure."""
    world = 1 if strategy == "single-rank" else 2
    port = _free_port()
    processes = []
    for rank in range(world):
        env = {
            **os.environ,
            "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": "0",
            "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2",
        }  # fmt: skip
        if strategy == "nccl-hostid":
            env.update(
                NCCL_HOSTID=f"accelerate-core-cp-check-{rank}", NCCL_SOCKET_IFNAME="lo",
                NCCL_P2P_DISABLE="1", NCCL_SHM_DISABLE="1", NCCL_IB_DISABLE="1",
            )  # fmt: skip
        command = [sys.executable, __file__, "--worker", strategy, "--device", device]
        processes.append(
            subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    start = time.perf_counter()
    outputs, timed_out = [], False
    for process in processes:
        left = max(STRATEGY_TIMEOUT[strategy] - (time.perf_counter() - start), 1)
        try:
            outputs.append(process.communicate(timeout=left)[0])
        except subprocess.TimeoutExpired:
            timed_out = True
            for p in processes:
                p.kill()
            outputs.append(process.communicate()[0])
    seconds = round(time.perf_counter() - start, 1)
    results = []
    for output in outputs:
        line = next((x for x in reversed(output.splitlines()) if x.startswith("RESULT ")), None)
        results.append(json.loads(line[7:]) if line else {"error": output[-1500:]})
    ok = not timed_out and all("error" not in r for r in results)
    return {"ok": ok, "timed_out": timed_out, "seconds": seconds, "ranks": results}


# --------------------------------------------------------------------------- worker


def _register_fsdp() -> None:
    """The packages are on PYTHONPATH, not installed: register the fsdp plugin by hand."""
    from accelerate_core.plugins import get_plugin_manager

    manager = get_plugin_manager()
    if "fsdp" not in manager.registry()["backend"]:
        import accelerate_fsdp._plugin

        manager.register(accelerate_fsdp._plugin, "accelerate-fsdp")


def ring_attention_check(cp_mesh: Any, device: str, dtype_name: str) -> dict[str, Any]:
    """Causal SDPA forward and backward on this rank's shards vs the full sequence."""
    import torch
    import torch.nn.functional as F

    from accelerate_core.context_parallel import context_parallel_shards

    dtype = getattr(torch, dtype_name)
    cp, rank = cp_mesh.size(), cp_mesh.get_local_rank()
    generator = torch.Generator(device="cpu").manual_seed(0)
    shape = (BATCH, 4, SEQ, 32)
    q, k, v, grad_out = (
        torch.randn(shape, generator=generator).to(device, dtype) for _ in range(4)
    )
    full = [t.clone().requires_grad_(True) for t in (q, k, v)]
    reference = F.scaled_dot_product_attention(*full, is_causal=True)
    reference.backward(grad_out)
    chunk = SEQ // (2 * cp)
    mine = torch.cat([torch.arange(r * chunk, (r + 1) * chunk) for r in (rank, 2 * cp - 1 - rank)])
    buffers = [q.clone(), k.clone(), v.clone(), grad_out.clone()]
    with context_parallel_shards(cp_mesh, buffers, [2, 2, 2, 2], set(buffers)):
        local = [b.clone().requires_grad_(True) for b in buffers[:3]]
        out = F.scaled_dot_product_attention(*local, is_causal=True)
        out.backward(buffers[3])
    diffs = {
        "output": (out - reference[:, :, mine]).abs().max().item(),
        "grad_q": (local[0].grad - full[0].grad[:, :, mine]).abs().max().item(),
        "grad_k": (local[1].grad - full[1].grad[:, :, mine]).abs().max().item(),
    }
    return {"max_abs_diff": diffs, "shard_positions": [*mine.tolist()[:4], "..."]}


def training_check(device: str) -> dict[str, Any]:
    """5 steps under ParallelismConfig(cp_size=2) vs one process on whole sequences."""
    import torch
    from nd_model import make_decoder, next_token_loss

    from accelerate_core import Accelerator, ParallelismConfig

    _register_fsdp()
    accelerator = Accelerator(parallelism_config=ParallelismConfig(cp_size=2))
    generator = torch.Generator().manual_seed(1)
    data = torch.randint(0, 32, (STEPS, BATCH, SEQ + 1), generator=generator)
    reference = make_decoder().to(device)
    ref_optimizer = torch.optim.AdamW(reference.parameters(), lr=LR)
    model = make_decoder()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    model, optimizer = accelerator.prepare(model, optimizer)
    losses, ref_losses = [], []
    for step in range(STEPS):
        tokens = data[step].to(device)
        inputs, labels = tokens[:, :-1].clone(), tokens[:, 1:].clone()
        with accelerator.maybe_context_parallel(
            buffers=[inputs, labels], buffer_seq_dims=[1, 1], no_restore_buffers={inputs, labels}
        ):
            logits = model(inputs)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 32), labels.reshape(-1))
            accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(accelerator.reduce(loss.detach(), "mean").item())
        ref_loss = next_token_loss(reference, tokens)
        ref_loss.backward()
        ref_optimizer.step()
        ref_optimizer.zero_grad()
        ref_losses.append(ref_loss.item())
    state = accelerator.get_state_dict(model)
    facts: dict[str, Any] = {
        "mesh": list(accelerator.torch_device_mesh.mesh_dim_names),
        "cp_rank": accelerator.context_parallel_rank,
        "losses": losses,
        "reference_losses": ref_losses,
        "max_loss_diff": max(abs(a - b) for a, b in zip(losses, ref_losses)),
    }
    if accelerator.is_main_process:
        ref_state = reference.state_dict()
        facts["max_weight_diff"] = max(
            (state[k].to(device) - ref_state[k]).abs().max().item() for k in ref_state
        )
    return facts


def _failure(exc: BaseException) -> str:
    import traceback

    return f"{type(exc).__name__}: {exc}"[:800] + "\n" + traceback.format_exc()[-1200:]


def worker(strategy: str, device_type: str) -> None:
    import torch
    import torch.distributed as dist

    sys.path.insert(0, str(ROOT / "tests"))
    facts: dict[str, Any] = {"rank": int(os.environ["RANK"]), "world": 1}
    try:
        if device_type == "cuda":
            torch.cuda.set_device(0)
        backend = {"gloo-cuda": "gloo"}.get(strategy, "nccl" if device_type == "cuda" else "gloo")
        dist.init_process_group(backend)  # before the Accelerator: it keeps this group
        from accelerate_core.utils import ParallelismConfig

        world = facts["world"] = dist.get_world_size()
        config = ParallelismConfig(cp_size=world)
        mesh = config.build_device_mesh(device_type)
        cp_mesh = mesh["cp"] if mesh is not None else None
        if cp_mesh is None:  # one rank: a cp mesh of 1 (ParallelismConfig builds none)
            from torch.distributed.device_mesh import init_device_mesh

            cp_mesh = init_device_mesh(device_type, (1,), mesh_dim_names=("cp",))
        for dtype in ("float32", "bfloat16"):
            facts[f"ring_attention_{dtype}"] = ring_attention_check(cp_mesh, device_type, dtype)
    except Exception as exc:  # reported, not raised: the parent decides
        facts["error"] = _failure(exc)
    if "error" not in facts and facts["world"] > 1:
        try:
            facts["training"] = training_check(device_type)
        except Exception as exc:
            facts["training_error"] = _failure(exc)
    print("RESULT " + json.dumps(facts), flush=True)
    os._exit(0)  # a broken process group must not hang the exit


def main() -> int:
    if "--worker" in sys.argv:
        worker(sys.argv[sys.argv.index("--worker") + 1], sys.argv[sys.argv.index("--device") + 1])
        return 0
    import torch

    device = "cpu" if "--cpu" in sys.argv else "cuda"  # --cpu: plumbing check only
    result: dict[str, Any] = {
        "benchmark": "gpu_context_parallel",
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "strategies": {},
    }
    if device == "cuda" and not torch.cuda.is_available():
        result["skipped"] = "no CUDA device"
    else:
        for strategy in ("nccl-hostid", "gloo-cuda"):
            result["strategies"][strategy] = launch(strategy, device)
            if result["strategies"][strategy]["ok"]:
                break
        result["strategies"]["single-rank"] = launch("single-rank", device)
        result["two_ranks_ran"] = any(
            s["ok"] for name, s in result["strategies"].items() if name != "single-rank"
        )
    text = json.dumps(result, indent=2)
    print(text)
    out = Path(os.environ.get("OUT", ROOT / "benchmarks" / "results"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_context_parallel.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
