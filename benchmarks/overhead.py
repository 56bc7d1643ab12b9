"""Per-step overhead of Accelerator over the same loop written by hand, in the same run.

Both loops train the same tiny MLP (width 64, batch 32) on one CPU thread, iterating a DataLoader,
running forward, loss, backward, optimizer step and zero_grad. Rounds alternate between the two
loops so drift on the machine hits both; the figure is the median per-step time over rounds.
The 2-process row runs the same comparison under torchrun (gloo): hand-written
``DistributedDataParallel`` with a ``DistributedSampler`` against ``Accelerator`` with ``ddp``.

    python benchmarks/overhead.py            # full run, writes benchmarks/results/overhead.json
    python benchmarks/overhead.py --quick    # smoke run for CI: prints figures, asserts nothing
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

WIDTH = 64
BATCH = 32
RESULTS = Path(__file__).parent / "results"


def build(steps: int, seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(WIDTH, WIDTH),
        torch.nn.ReLU(),
        torch.nn.Linear(WIDTH, WIDTH),
        torch.nn.ReLU(),
        torch.nn.Linear(WIDTH, 1),
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    data = TensorDataset(torch.randn(steps * BATCH, WIDTH), torch.randn(steps * BATCH, 1))
    return model, optimizer, DataLoader(data, batch_size=BATCH)


def hand_written_epoch(model, optimizer, loader) -> float:
    start = time.perf_counter()
    for x, y in loader:
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return time.perf_counter() - start


def accelerated_epoch(accelerator, model, optimizer, loader) -> float:
    start = time.perf_counter()
    for x, y in loader:
        with accelerator.accumulate(model):
            loss = torch.nn.functional.mse_loss(model(x), y)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
    return time.perf_counter() - start


def hand_written_ddp(steps: int, world: int):
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data.distributed import DistributedSampler

    model, optimizer, loader = build(steps * world)
    sampler = DistributedSampler(loader.dataset, shuffle=False)
    return (
        DistributedDataParallel(model),
        optimizer,
        DataLoader(loader.dataset, batch_size=BATCH, sampler=sampler),
    )


def step_overhead(steps: int, rounds: int) -> dict[str, float]:
    from accelerate_core import Accelerator

    accelerator = Accelerator(cpu=True)
    if accelerator.num_processes > 1:
        hand = hand_written_ddp(steps, accelerator.num_processes)
        ours = accelerator.prepare(*build(steps * accelerator.num_processes))
    else:
        hand = build(steps)
        ours = accelerator.prepare(*build(steps))
    hand_written_epoch(*hand)  # warm-up
    accelerated_epoch(accelerator, *ours)
    hand_times, our_times = [], []
    for i in range(rounds):
        # Alternate which loop goes first so neither always runs on a warmer cache.
        if i % 2:
            our_times.append(accelerated_epoch(accelerator, *ours) / steps)
            hand_times.append(hand_written_epoch(*hand) / steps)
        else:
            hand_times.append(hand_written_epoch(*hand) / steps)
            our_times.append(accelerated_epoch(accelerator, *ours) / steps)
    hand_median = statistics.median(hand_times)
    our_median = statistics.median(our_times)
    paired = statistics.median(o / h for o, h in zip(our_times, hand_times))
    return {
        "hand_written_us": hand_median * 1e6,
        "accelerate_core_us": our_median * 1e6,
        "ratio": our_median / hand_median,
        "paired_ratio": paired,
        "overhead_us": (our_median - hand_median) * 1e6,
    }


IMPORT_PROBE = (
    "import time; t0 = time.perf_counter(); import torch; t1 = time.perf_counter(); "
    "import accelerate_core; t2 = time.perf_counter(); print(t1 - t0, t2 - t1)"
)


def import_cost(repeats: int) -> dict[str, float]:
    torch_s, core_s = [], []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", IMPORT_PROBE], capture_output=True, text=True, check=True
        )
        t, c = map(float, out.stdout.split())
        torch_s.append(t)
        core_s.append(c)
    torch_ms = statistics.median(torch_s) * 1e3
    core_ms = statistics.median(core_s) * 1e3
    return {
        "import_torch_ms": torch_ms,
        "import_accelerate_core_ms": core_ms,
        "import_ratio": core_ms / torch_ms,
    }


def two_process_overhead(steps: int, rounds: int) -> dict[str, float] | str:
    """Run ``step_overhead`` on 2 torchrun processes; rank 0's figures (or why it failed)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ddp.json"
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
            __file__, "--worker", str(out), "--steps", str(steps), "--rounds", str(rounds),
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
        if run.returncode != 0 or not out.exists():
            return f"failed: {run.stdout[-2000:]} {run.stderr[-2000:]}"
        return json.loads(out.read_text())


def worker(output: Path, steps: int, rounds: int) -> None:
    torch.set_num_threads(1)
    result = step_overhead(steps, rounds)
    from accelerate_core import PartialState

    if PartialState().is_main_process:
        output.write_text(json.dumps(result))


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps; a smoke run for CI")
    parser.add_argument("--steps", type=int, default=100, help="steps per round")
    parser.add_argument("--rounds", type=int, default=41, help="alternating rounds")
    parser.add_argument("--output", type=Path, help="default: results/overhead.json (full runs)")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--no-ddp", action="store_true", help="skip the 2-process row")
    args = parser.parse_args(argv)
    if args.output is None and not args.quick:
        args.output = RESULTS / "overhead.json"
    if args.worker:
        worker(args.worker, args.steps, args.rounds)
        return {}
    if args.quick:
        args.steps, args.rounds = 20, 3
    torch.set_num_threads(1)
    result: dict[str, object] = {
        "benchmark": "overhead",
        "shape": {"width": WIDTH, "batch": BATCH, "threads": 1},
        "device": f"cpu ({platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "steps": args.steps,
        "rounds": args.rounds,
        "single_process": step_overhead(args.steps, args.rounds),
        **import_cost(2 if args.quick else 5),
    }
    if not args.no_ddp:
        result["two_processes_ddp"] = two_process_overhead(args.steps, args.rounds)
    single = result["single_process"]
    print(
        f"single process, width {WIDTH}, batch {BATCH}, 1 thread: hand-written "
        f"{single['hand_written_us']:.1f} us/step, accelerate-core "
        f"{single['accelerate_core_us']:.1f} us/step, ratio {single['ratio']:.3f} "
        f"(paired {single['paired_ratio']:.3f}; goal <= 1.05)"
    )
    print(
        f"import torch {result['import_torch_ms']:.0f} ms; import accelerate_core after it "
        f"{result['import_accelerate_core_ms']:.0f} ms ({100 * result['import_ratio']:.1f}% of "
        "torch's)"
    )
    ddp = result.get("two_processes_ddp")
    if isinstance(ddp, dict):
        print(
            f"2 processes (ddp, gloo), per rank: hand-written DDP {ddp['hand_written_us']:.1f} "
            f"us/step, accelerate-core {ddp['accelerate_core_us']:.1f} us/step, ratio "
            f"{ddp['ratio']:.3f} (paired {ddp['paired_ratio']:.3f}; goal <= 1.03)"
        )
    elif ddp is not None:
        print(f"2 processes (ddp): {ddp}")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
