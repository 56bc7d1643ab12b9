"""Per-rank model-state memory (parameters + gradients + optimizer state) by backend, 2 processes.

Every backend trains the same ~50M-parameter MLP stack (6 blocks of 1024 -> 4096 -> 1024, AdamW)
for one step on 2 CPU processes (gloo) and reports the bytes of the tensors each rank holds:
local shards for sharded backends (``DTensor.to_local()``), not the process RSS, which also
counts the allocator, communication buffers and activations. DDP replicates everything, so it
is the 1.0 row; FSDP2 shards all three on 2 ranks (theory 0.5, goal <= 0.55).

Each backend is one function ``<name>_row() -> dict`` run on every rank in fresh processes; add a
backend by writing its function and listing it in ``ROWS``.

    python benchmarks/memory.py              # every row, writes benchmarks/results/memory.json
    python benchmarks/memory.py --rows fsdp  # selected rows (the ddp row is always measured)
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

WIDTH, HIDDEN, BLOCKS, BATCH = 1024, 4096, 6, 8
RESULTS = Path(__file__).parent / "results"
GOAL = 0.55


class Block(torch.nn.Module):
    """One MLP block; the unit the sharding backends shard on its own."""

    def __init__(self) -> None:
        super().__init__()
        self.up = torch.nn.Linear(WIDTH, HIDDEN)
        self.down = torch.nn.Linear(HIDDEN, WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(torch.nn.functional.gelu(self.up(x)))


def build() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(*(Block() for _ in range(BLOCKS)))
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4)


def local_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of this rank's part of each tensor (the local shard of a DTensor)."""
    from torch.distributed.tensor import DTensor

    total = 0
    for tensor in tensors:
        if isinstance(tensor, DTensor):
            tensor = tensor.to_local()
        total += tensor.numel() * tensor.element_size()
    return total


def train_one_step(accelerator: Any, model: torch.nn.Module, optimizer: Any) -> None:
    inputs = torch.randn(BATCH, WIDTH, generator=torch.Generator().manual_seed(1))
    accelerator.backward(model(inputs).square().mean())
    optimizer.step()  # no zero_grad: gradients are part of the measured model state


def model_state(model: torch.nn.Module, optimizer: Any) -> dict[str, int]:
    parameters = list(model.parameters())
    states = [v for s in optimizer.state.values() for v in s.values()]
    return {
        "parameters": local_bytes(parameters),
        "gradients": local_bytes(p.grad for p in parameters if p.grad is not None),
        "optimizer_state": local_bytes(v for v in states if isinstance(v, torch.Tensor)),
        "parameter_count": sum(p.numel() for p in build()[0].parameters()),
    }


def measured(backend: str, backend_options: dict[str, Any] | None = None) -> dict[str, int]:
    """One step through ``Accelerator(backend=...)``; this rank's model-state bytes."""
    from accelerate_core import Accelerator

    accelerator = Accelerator(cpu=True, backend=backend, backend_options=backend_options or {})
    model, optimizer = accelerator.prepare(*build())
    train_one_step(accelerator, model, optimizer)
    figures = model_state(model, optimizer)
    figures["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return figures


# --------------------------------------------------------------------------- rows


def ddp_row() -> dict[str, int]:
    """DistributedDataParallel: every rank holds everything (the reference row)."""
    return measured("ddp")


def fsdp_row() -> dict[str, int]:
    """FSDP2 (``fully_shard``), each block its own unit."""
    return measured("fsdp", {"wrap_classes": ["Block"]})


ROWS: dict[str, Callable[[], dict[str, int]]] = {"ddp": ddp_row, "fsdp": fsdp_row}


# --------------------------------------------------------------------------- report


def run_row(name: str) -> list[dict[str, int]] | str:
    """Every rank's figures for one row, in fresh processes (or why it failed)."""
    from accelerate_core.testing import DistributedRunError, run_distributed

    try:
        return run_distributed(ROWS[name], nprocs=2, timeout=900)
    except DistributedRunError as exc:
        return f"failed: {str(exc)[-2000:]}"


def summarise(per_rank: list[dict[str, int]], reference: dict[str, Any] | None) -> dict[str, Any]:
    worst = max(per_rank, key=lambda f: f["parameters"] + f["gradients"] + f["optimizer_state"])
    row: dict[str, Any] = dict(worst)
    row["model_state"] = worst["parameters"] + worst["gradients"] + worst["optimizer_state"]
    row["per_rank_model_state"] = [
        f["parameters"] + f["gradients"] + f["optimizer_state"] for f in per_rank
    ]
    if reference is not None:
        row["ratio_vs_ddp"] = row["model_state"] / reference["model_state"]
    return row


def table(rows: dict[str, Any]) -> str:
    mib = 1 << 20
    lines = [
        f"{'backend':<10} {'params':>10} {'grads':>10} {'optim':>10} {'total':>10} "
        f"{'vs ddp':>7} {'peak RSS':>10}  (MiB per rank, the larger rank)"
    ]
    for name, row in rows.items():
        if isinstance(row, str):
            lines.append(f"{name:<10} {row}")
            continue
        lines.append(
            f"{name:<10} {row['parameters'] / mib:>10.1f} {row['gradients'] / mib:>10.1f} "
            f"{row['optimizer_state'] / mib:>10.1f} {row['model_state'] / mib:>10.1f} "
            f"{row.get('ratio_vs_ddp', 1.0):>7.3f} {row['peak_rss'] / mib:>10.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--output", type=Path, default=RESULTS / "memory.json")
    args = parser.parse_args(argv)
    names = ["ddp", *(n for n in args.rows if n != "ddp")]
    rows: dict[str, Any] = {}
    for name in names:
        per_rank = run_row(name)
        reference = rows.get("ddp") if name != "ddp" and isinstance(rows.get("ddp"), dict) else None
        rows[name] = per_rank if isinstance(per_rank, str) else summarise(per_rank, reference)
    count = next((r["parameter_count"] for r in rows.values() if isinstance(r, dict)), None)
    print(f"model: {BLOCKS} blocks {WIDTH}->{HIDDEN}->{WIDTH}, {count} parameters, AdamW, fp32")
    print(table(rows))
    fsdp = rows.get("fsdp")
    if isinstance(fsdp, dict):
        verdict = "met" if fsdp["ratio_vs_ddp"] <= GOAL else "NOT met"
        print(f"fsdp / ddp = {fsdp['ratio_vs_ddp']:.3f} (theory 0.5, goal <= {GOAL}: {verdict})")
    result = {
        "benchmark": "memory",
        "processes": 2,
        "device": f"cpu ({platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "model": {
            "blocks": BLOCKS,
            "width": WIDTH,
            "hidden": HIDDEN,
            "parameters": count,
            "optimizer": "AdamW",
            "dtype": "float32",
        },
        "rows": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
