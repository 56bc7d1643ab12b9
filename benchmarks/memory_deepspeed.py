"""Per-rank model-state memory under DeepSpeed ZeRO 0/1/2/3 on 2 processes, next to the ZeRO paper.

The model is ``benchmarks/memory.py``'s (~50M parameters: 6 MLP blocks 1024 -> 4096 -> 1024,
AdamW), trained for one step through ``Accelerator(backend="deepspeed")`` on 2 CPU processes
(gloo, DeepSpeed's CPU accelerator). Each rank reports the bytes of the tensors it holds (each
storage counted once), read from the engine's optimizer:

* parameters: the module's parameters (under ZeRO-3: this rank's partition plus the small
  parameters DeepSpeed keeps whole, ``stage3_param_persistence_threshold``);
* gradients: at the end of the backward of an update step (after the boundary reduce): ``p.grad``
  and the ZeRO optimizer's (partitioned) gradient buffers;
* optimizer state: fp32 master weights plus Adam's two moments;
* buffers (not model state): ZeRO's communication buckets, reported apart (sizes ``"auto"``:
  DeepSpeed's defaults capped at the model's size; DeepSpeed's own 5e8-element default would
  allocate a 1 GB bf16 bucket up front under ZeRO-3).

Beside each figure is the ZeRO paper's (Rajbhandari et al. 2020, section 5) for Psi parameters on
N = 2 ranks. Mixed precision (bf16 here) with Adam: parameters 2Psi, gradients 2Psi, optimizer
K*Psi with K = 12 (fp32 master copy 4 + momentum 4 + variance 4); stage 1 partitions the
optimizer state, stage 2 also the gradients, stage 3 also the parameters. In fp32 the parameters
and gradients take 4Psi each and K = 8 at stage 0 (the parameters are the master weights) but 12
at stages 1-3, where DeepSpeed keeps an fp32 master partition next to the fp32 module.

    python benchmarks/memory_deepspeed.py                       # bf16 and fp32, stages 0-3
    python benchmarks/memory_deepspeed.py --precisions bf16 --stages 1 2 3
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

# The same model as the DDP/FSDP2 rows, so the two tables compare.
from memory import BATCH, BLOCKS, HIDDEN, WIDTH, build

PROCESSES = 2
RESULTS = Path(__file__).parent / "results"
BYTES = {"bf16": 2, "fp32": 4}


def formula(stage: int, precision: str, psi: int, n: int = PROCESSES) -> dict[str, float]:
    """The ZeRO paper's per-rank bytes (see the module docstring for K)."""
    b = BYTES[precision]
    k = 8 if precision == "fp32" and stage == 0 else 12
    return {
        "parameters": b * psi / (n if stage >= 3 else 1),
        "gradients": b * psi / (n if stage >= 2 else 1),
        "optimizer_state": k * psi / (n if stage >= 1 else 1),
        "K": k,
    }


class Counter:
    """Bytes of tensors, each storage once (views of one flat buffer are one allocation)."""

    def __init__(self) -> None:
        self.seen: set[int] = set()

    def bytes(self, tensors: Iterable[Any]) -> int:
        total = 0
        for tensor in tensors:
            if not isinstance(tensor, torch.Tensor) or tensor.numel() == 0:
                continue
            storage = tensor.untyped_storage()
            if storage.data_ptr() in self.seen:
                continue
            self.seen.add(storage.data_ptr())
            total += storage.nbytes()
        return total


def _flat(value: Any) -> list[Any]:
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _flat(v)]
    return [value]


def gradient_tensors(engine: Any) -> list[Any]:
    optimizer = engine.optimizer
    grads = [p.grad for p in engine.module.parameters()]
    grads += _flat(getattr(optimizer, "averaged_gradients", {}))  # ZeRO 1/2 partitions
    grads += _flat(getattr(optimizer, "grad_partitions_flat_buffer", None))  # ZeRO-3
    return grads


def optimizer_tensors(engine: Any) -> list[Any]:
    optimizer = engine.optimizer
    masters = []
    for name in ("fp32_groups", "single_partition_of_fp32_groups", "fp32_partitioned_groups_flat"):
        masters += _flat(getattr(optimizer, name, None))
    inner = optimizer if isinstance(optimizer, torch.optim.Optimizer) else optimizer.optimizer
    moments = [v for state in inner.state.values() for v in state.values() if v.dim() > 0]
    return masters + moments


def buffer_tensors(engine: Any) -> list[Any]:
    optimizer = engine.optimizer
    buckets = getattr(optimizer, "ipg_buckets", {}) or {}
    return _flat(getattr(optimizer, "ipg_buffer", None)) + [
        getattr(b, "buffer", None) for b in buckets.values()
    ]


def row(stage: int, precision: str) -> dict[str, Any]:
    """One update on this rank; the bytes it holds (run on every rank of a 2-process launch)."""
    from accelerate_core import Accelerator

    accelerator = Accelerator(
        cpu=True,
        backend="deepspeed",
        mixed_precision="no" if precision == "fp32" else precision,
        backend_options={"config": {"train_micro_batch_size_per_gpu": BATCH, "zero_optimization": {
            "stage": stage, "reduce_bucket_size": "auto", "allgather_bucket_size": "auto",
            "stage3_prefetch_bucket_size": "auto"}}},
    )  # fmt: skip
    model, optimizer = accelerator.prepare(*build())
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    inputs = torch.randn(BATCH, WIDTH, generator=torch.Generator().manual_seed(1)).to(dtype)
    accelerator.backward(model(inputs).float().square().mean())
    counter = Counter()
    figures = {
        "parameters": counter.bytes(
            [p.data for p in model.module.parameters()]
            + [getattr(p, "ds_tensor", None) for p in model.module.parameters()]
        ),
        "gradients": counter.bytes(gradient_tensors(model)),
    }
    buffers = Counter().bytes(buffer_tensors(model))
    optimizer.step()  # creates the Adam moments
    figures["optimizer_state"] = counter.bytes(optimizer_tensors(model))
    figures["buffers"] = max(buffers, Counter().bytes(buffer_tensors(model)))
    figures["parameter_count"] = sum(p.numel() for p in build()[0].parameters())
    figures["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    figures["optimizer"] = type(model.optimizer).__name__
    return figures


def run_row(stage: int, precision: str) -> list[dict[str, Any]] | str:
    from accelerate_core.testing import DistributedRunError, run_distributed

    try:
        return run_distributed(row, stage, precision, nprocs=PROCESSES, timeout=900)
    except DistributedRunError as exc:
        return f"failed: {str(exc)[-2000:]}"


def summarise(per_rank: list[dict[str, Any]], stage: int, precision: str) -> dict[str, Any]:
    keys = ("parameters", "gradients", "optimizer_state")
    worst = max(per_rank, key=lambda f: sum(f[k] for k in keys))
    theory = formula(stage, precision, worst["parameter_count"])
    result: dict[str, Any] = {k: worst[k] for k in (*keys, "buffers", "peak_rss", "optimizer")}
    result["model_state"] = sum(worst[k] for k in keys)
    result["per_rank_model_state"] = [sum(f[k] for k in keys) for f in per_rank]
    result["formula"] = {**theory, "model_state": sum(theory[k] for k in keys)}
    result["measured_over_formula"] = {k: worst[k] / theory[k] for k in (*keys,)} | {
        "model_state": result["model_state"] / result["formula"]["model_state"]
    }
    return result


def table(rows: dict[str, Any], psi: int) -> str:
    mib = 1 << 20
    head = (
        f"{'row':<11}{'params':>17}{'grads':>17}{'optimizer':>19}{'model state':>19}"
        f"{'vs stage 0':>11}{'buffers':>9}"
    )
    lines = [f"MiB per rank (the larger rank): measured / ZeRO formula; Psi = {psi:,}", head]
    for name, r in rows.items():
        if isinstance(r, str):
            lines.append(f"{name:<11}{r}")
            continue
        f = r["formula"]
        cells = [f"{r[k] / mib:8.1f} /{f[k] / mib:7.1f}" for k in ("parameters", "gradients")] + [
            f"{r['optimizer_state'] / mib:8.1f} /{f['optimizer_state'] / mib:7.1f}K{f['K']}",
            f"{r['model_state'] / mib:9.1f} /{f['model_state'] / mib:7.1f}",
        ]
        base = rows.get(name.split("-")[0] + "-zero0")
        ratio = r["model_state"] / base["model_state"] if isinstance(base, dict) else float("nan")
        lines.append(
            f"{name:<11}{cells[0]:>17}{cells[1]:>17}{cells[2]:>19}{cells[3]:>19}"
            f"{ratio:>11.3f}{r['buffers'] / mib:>9.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precisions", nargs="+", choices=list(BYTES), default=["bf16", "fp32"])
    parser.add_argument("--stages", nargs="+", type=int, choices=[0, 1, 2, 3], default=[0, 1, 2, 3])
    parser.add_argument("--output", type=Path, default=RESULTS / "memory_deepspeed.json")
    args = parser.parse_args(argv)
    rows: dict[str, Any] = {}
    for precision in args.precisions:
        for stage in args.stages:
            per_rank = run_row(stage, precision)
            name = f"{precision}-zero{stage}"
            rows[name] = per_rank if isinstance(per_rank, str) else summarise(
                per_rank, stage, precision
            )  # fmt: skip
    count = sum(p.numel() for p in build()[0].parameters())
    print(f"model: {BLOCKS} blocks {WIDTH}->{HIDDEN}->{WIDTH}, AdamW, {PROCESSES} processes")
    print(table(rows, count))
    print(
        "K = 12 for mixed-precision Adam (fp32 master + 2 moments); fp32: K = 8 at stage 0, "
        "12 at ZeRO 1-3 (DeepSpeed's fp32 master partition). Gradients are measured after the "
        "update step's backward (ZeRO-1 has reduced and freed the full gradients by then)."
    )
    from importlib.metadata import version

    result = {
        "benchmark": "memory_deepspeed",
        "processes": PROCESSES,
        "device": f"cpu ({platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "deepspeed": version("deepspeed"),
        "model": {"blocks": BLOCKS, "width": WIDTH, "hidden": HIDDEN, "parameters": count,
                  "optimizer": "AdamW"},
        "formula": "ZeRO paper: params b*Psi, grads b*Psi, optimizer K*Psi, divided by N=2 "
                   "from stage 3 / 2 / 1 on; b = 2 (bf16) or 4 (fp32)",
        "rows": rows,
    }  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
