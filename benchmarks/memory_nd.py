"""Per-rank model-state memory under N-D layouts (4 CPU processes), measured against theory.

The decoder of ``tests/nd_model.py`` (attention + MLP blocks, RMSNorm, its own tensor-parallel
plan) trains one AdamW step under each ``ParallelismConfig`` layout; every rank reports the bytes
of the parameters, gradients and optimizer state it holds (``DTensor.to_local()``: local shards,
not the process RSS). Theory, per rank, fp32, AdamW (two moments per parameter):

    elements = P_tp / (tp * dp_shard) + P_rest / dp_shard

where ``P_tp`` counts the parameters the plan splits over the tensor-parallel ranks (colwise
weights and biases, rowwise weights) and ``P_rest`` the others (embedding, norms, head, rowwise
biases: replicated over ``tp``); ``dp_replicate`` copies everything. Parameters and gradients
hold ``elements`` each, the optimizer ``2 * elements`` (plus one ``step`` scalar per
parameter). FSDP's shards are uneven by at most one row, so ranks differ a little; their mean
must equal the theory.

    python benchmarks/memory_nd.py            # writes benchmarks/results/memory_nd.json
    python benchmarks/memory_nd.py --quick    # a smaller decoder, two layouts (CI smoke run)
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import platform
import sys
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the decoder and its plan

from nd_model import Decoder  # noqa: E402

RESULTS = HERE / "results"
PROCESSES = 4
FULL = {"vocab": 1024, "dim": 512, "heads": 8, "layers": 4, "hidden": 2048}
QUICK = {"vocab": 128, "dim": 64, "heads": 4, "layers": 2, "hidden": 256}
QUICK_LAYOUTS = ("fsdp (dp_shard=4)", "tp=2 x fsdp (dp_shard=2)")
LAYOUTS: dict[str, tuple[str, dict[str, int]]] = {
    "ddp (dp_replicate=4)": ("ddp", {"dp_replicate_size": 4}),
    "fsdp (dp_shard=4)": ("fsdp", {"dp_shard_size": 4}),
    "hsdp (dp_replicate=2 x dp_shard=2)": ("fsdp", {"dp_replicate_size": 2, "dp_shard_size": 2}),
    "tp=2 x fsdp (dp_shard=2)": ("fsdp", {"dp_shard_size": 2, "tp_size": 2}),
    "tp=4": ("fsdp", {"tp_size": 4}),
}


def local_bytes(tensors: Any) -> int:
    from torch.distributed.tensor import DTensor

    total = 0
    for tensor in tensors:
        if isinstance(tensor, DTensor):
            tensor = tensor.to_local()
        total += tensor.numel() * tensor.element_size()
    return total


def measure(backend: str, sizes: dict[str, int], shape: dict[str, int]) -> dict[str, int]:
    """One AdamW step under the layout; this rank's bytes (run on every rank)."""
    from accelerate_core import Accelerator, ParallelismConfig

    accelerator = Accelerator(
        cpu=True, backend=backend, parallelism_config=ParallelismConfig(**sizes)
    )
    torch.manual_seed(0)
    model = Decoder(**shape)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model, optimizer = accelerator.prepare(model, optimizer)
    tokens = torch.randint(0, shape["vocab"], (2, 17), generator=torch.Generator().manual_seed(1))
    logits = model(tokens[:, :-1])
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, shape["vocab"]), tokens[:, 1:].reshape(-1)
    )
    accelerator.backward(loss)
    optimizer.step()  # no zero_grad: gradients are part of the measured state
    parameters = list(model.parameters())
    states = [v for s in optimizer.state.values() for v in s.values()]
    return {
        "parameters": local_bytes(parameters),
        "gradients": local_bytes(p.grad for p in parameters if p.grad is not None),
        "optimizer_state": local_bytes(v for v in states if isinstance(v, torch.Tensor)),
        "step_scalars": local_bytes(s["step"] for s in optimizer.state.values() if "step" in s),
    }


def split_counts(shape: dict[str, int]) -> tuple[int, int]:
    """(parameters the plan splits over tp, the others), from the plan's patterns."""
    model = Decoder(**shape)
    plan = Decoder._tp_plan
    split = rest = 0
    for name, param in model.named_parameters():
        module, kind = name.rsplit(".", 1)
        style = next((s for p, s in plan.items() if fnmatch.fnmatchcase(module, p)), None)
        sharded = style == "colwise" or (style == "rowwise" and kind == "weight")
        if sharded:
            split += param.numel()
        else:
            rest += param.numel()
    return split, rest


def theory(sizes: dict[str, int], counts: tuple[int, int]) -> dict[str, float]:
    tp, shard = sizes.get("tp_size", 1), sizes.get("dp_shard_size", 1)
    split, rest = counts
    elements = split / (tp * shard) + rest / shard
    return {
        "parameters": 4 * elements,
        "gradients": 4 * elements,
        "optimizer_state": 8 * elements,
    }


def run_layout(name: str, shape: dict[str, int]) -> list[dict[str, int]] | str:
    from accelerate_core.testing import DistributedRunError, run_distributed

    backend, sizes = LAYOUTS[name]
    try:
        return run_distributed(measure, backend, sizes, shape, nprocs=PROCESSES, timeout=600)
    except DistributedRunError as exc:
        return f"failed: {str(exc)[-2000:]}"


KINDS = ("parameters", "gradients", "optimizer_state")


def summarise(per_rank: list[dict[str, int]], expected: dict[str, float]) -> dict[str, Any]:
    """Mean and largest rank against theory, per kind and in total (step scalars left out)."""
    row: dict[str, Any] = {"theory_bytes": expected, "per_rank": per_rank}

    def held(r: dict[str, int], kind: str) -> int:
        return r[kind] - (r["step_scalars"] if kind == "optimizer_state" else 0)

    for kind in (*KINDS, "total"):
        values = [
            sum(held(r, k) for k in KINDS) if kind == "total" else held(r, kind) for r in per_rank
        ]
        reference = sum(expected.values()) if kind == "total" else expected[kind]
        mean = sum(values) / len(values)
        row[kind] = {
            "mean": mean,
            "max": max(values),
            "mean_vs_theory": mean / reference,
            "max_vs_theory": max(values) / reference,
        }
    return row


def table(rows: dict[str, Any]) -> str:
    mib = 1 << 20
    lines = [
        f"{'layout':<36} {'params':>8} {'grads':>8} {'optim':>8} {'theory':>8} "
        f"{'mean/th':>8} {'max/th':>7}  (MiB per rank: mean over ranks)"
    ]
    for name, row in rows.items():
        if isinstance(row, str):
            lines.append(f"{name:<36} {row.splitlines()[0][:60]}")
            continue
        lines.append(
            f"{name:<36} "
            + " ".join(f"{row[k]['mean'] / mib:>8.2f}" for k in KINDS)
            + f" {sum(row['theory_bytes'].values()) / mib:>8.2f}"
            f" {row['total']['mean_vs_theory']:>8.4f} {row['total']['max_vs_theory']:>7.4f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small decoder (smoke run)")
    parser.add_argument("--output", type=Path, default=RESULTS / "memory_nd.json")
    args = parser.parse_args(argv)
    shape = QUICK if args.quick else FULL
    counts = split_counts(shape)
    rows: dict[str, Any] = {}
    for name in QUICK_LAYOUTS if args.quick else LAYOUTS:
        per_rank = run_layout(name, shape)
        expected = theory(LAYOUTS[name][1], counts)
        rows[name] = per_rank if isinstance(per_rank, str) else summarise(per_rank, expected)
    print(
        f"decoder {shape}: {sum(counts)} parameters ({counts[0]} split by the tp plan), "
        f"AdamW, fp32, {PROCESSES} processes"
    )
    print(table(rows))
    result = {
        "benchmark": "memory_nd",
        "processes": PROCESSES,
        "device": f"cpu ({platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "model": {**shape, "parameters": sum(counts), "tp_split_parameters": counts[0]},
        "rows": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
