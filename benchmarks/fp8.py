"""fp8 (torchao) against bf16 on the same recipe, in the same run.

On CPU only the correctness columns mean anything (converted layers, final losses and their
difference): CPU fp8 matmuls are emulated and slower. On an H100/H200 the step time and
tokens/s columns are the point (see the GPU figures in benchmarks/results/ when a run had one).

    python benchmarks/fp8.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def build(width: int, depth: int) -> torch.nn.Module:
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = [torch.nn.Linear(width, width)]
    for _ in range(depth):
        layers += [
            torch.nn.Linear(width, 4 * width),
            torch.nn.GELU(),
            torch.nn.Linear(4 * width, width),
        ]
    layers.append(torch.nn.Linear(width, width))
    return torch.nn.Sequential(*layers)


def run(mixed_precision: str, width: int, depth: int, steps: int) -> dict[str, float]:
    from accelerate_core import Accelerator
    from accelerate_core.state import reset_state

    reset_state()
    accelerator = Accelerator(mixed_precision=mixed_precision)
    model = build(width, depth)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model, optimizer = accelerator.prepare(model, optimizer)
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(steps, 64, width, generator=generator).to(accelerator.device)
    targets = torch.randn(steps, 64, width, generator=generator).to(accelerator.device)
    times, losses = [], []
    for x, y in zip(inputs, targets):
        start = time.perf_counter()
        loss = torch.nn.functional.mse_loss(model(x), y)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        times.append(time.perf_counter() - start)
    converted = 0
    if mixed_precision == "fp8":
        from accelerate_fp8 import converted_layer_count

        converted = converted_layer_count(model)
    return {
        "final_loss": statistics.mean(losses[-5:]),
        "step_ms": statistics.median(times[2:]) * 1e3,
        "tokens_per_s": 64 / statistics.median(times[2:]),
        "converted_layers": converted,
        "device": str(accelerator.device),
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", type=Path, help="default: results/fp8.json (full runs)")
    args = parser.parse_args(argv)
    if args.output is None and not args.quick:
        args.output = RESULTS / "fp8.json"
    width, depth, steps = (64, 2, 20) if args.quick else (256, 4, 60)
    try:
        import accelerate_fp8  # noqa: F401
    except ImportError:
        print("fp8: accelerate-fp8 is not installed; skipped")
        return {"skipped": "accelerate-fp8 not installed"}
    bf16 = run("bf16", width, depth, steps)
    fp8 = run("fp8", width, depth, steps)
    result = {
        "benchmark": "fp8",
        "shape": {"width": width, "depth": depth, "steps": steps, "batch": 64},
        "bf16": bf16,
        "fp8": fp8,
        "loss_difference": (fp8["final_loss"] - bf16["final_loss"]) / bf16["final_loss"],
        "speedup": bf16["step_ms"] / fp8["step_ms"],
    }
    print(
        f"fp8 vs bf16 on {fp8['device']}: {fp8['converted_layers']} layers converted, final loss "
        f"{fp8['final_loss']:.4f} vs {bf16['final_loss']:.4f} "
        f"({100 * result['loss_difference']:+.2f}%), step {fp8['step_ms']:.1f} ms vs "
        f"{bf16['step_ms']:.1f} ms (speed-up {result['speedup']:.2f}x"
        + ("; CPU: correctness only)" if fp8["device"] == "cpu" else ")")
    )
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
