"""Training stall per checkpoint: ``save_state(async_save=True)`` against the synchronous save.

A model whose weights and Adam state make 1 GB trains on one process; every round saves once
synchronously and once asynchronously (alternating which goes first), to the same disk. The
stall is the time the training loop spends inside ``save_state``: the whole save when
synchronous, the copy of the state to host memory when asynchronous (the files are written by a
background thread while training goes on). Goal: the asynchronous stall is at most 10 % of the
synchronous one. Also recorded, for honesty: how much slower the training steps that run
alongside the background write are (they share the CPU and the memory bandwidth with it), per
save, and how long the background write took.

    python benchmarks/async_checkpoint.py          # 1 GB: writes results/async_checkpoint.json
    python benchmarks/async_checkpoint.py --quick  # ~50 MB, for CI
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def build(width: int, layers: int):
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])
    return model, torch.optim.Adam(model.parameters(), lr=1e-4)


def state_bytes(model, optimizer) -> int:
    tensors = list(model.state_dict().values()) + [
        t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)
    ]
    return sum(t.numel() * t.element_size() for t in tensors)


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=20)  # 84M parameters: 1.0 GB with Adam
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="training steps after each save")
    parser.add_argument("--output", type=Path, help="default: results/async_checkpoint.json")
    args = parser.parse_args(argv)
    if args.output is None and not args.quick:
        args.output = RESULTS / "async_checkpoint.json"
    if args.quick:
        args.width, args.layers, args.rounds, args.steps = 1024, 4, 1, 2

    from accelerate_core import Accelerator
    from accelerate_core.async_checkpoint import wait_for_pending_save

    accelerator = Accelerator(cpu=True)
    model, optimizer = accelerator.prepare(*build(args.width, args.layers))
    inputs = torch.randn(8, args.width)

    def train(steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            accelerator.backward(model(inputs).square().mean())
            optimizer.step()
            optimizer.zero_grad()
        return time.perf_counter() - start

    train(2)  # Adam state exists; warm-up
    gigabytes = state_bytes(model, optimizer) / 1e9
    stalls: dict[str, list[float]] = {"sync": [], "async": []}
    steps_with: list[float] = []
    steps_without: list[float] = []
    background: list[float] = []
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        root = Path(tmp)
        for i in range(args.rounds):
            order = ("sync", "async") if i % 2 == 0 else ("async", "sync")
            for kind in order:
                target = root / f"{kind}{i}"
                start = time.perf_counter()
                accelerator.save_state(target, async_save=kind == "async")
                stalls[kind].append(time.perf_counter() - start)
                alongside = train(args.steps)  # while the async save writes, if any
                wait_start = time.perf_counter()
                wait_for_pending_save()
                waited = time.perf_counter() - wait_start
                if kind == "async":
                    steps_with.append(alongside)
                    background.append(stalls[kind][-1] + alongside + waited)
                else:
                    steps_without.append(alongside)
                shutil.rmtree(target)
    sync, async_ = statistics.median(stalls["sync"]), statistics.median(stalls["async"])
    slowdown = statistics.median(steps_with) - statistics.median(steps_without)
    result = {
        "benchmark": "async_checkpoint",
        "gigabytes": gigabytes,
        "rounds": args.rounds,
        "torch": torch.__version__,
        "stall_sync_s": sync,
        "stall_async_s": async_,
        "stall_ratio": async_ / sync,
        "steps_alongside": args.steps,
        "slower_steps_while_writing_s": slowdown,
        "background_write_s": statistics.median(background),
        "stalls": stalls,
    }
    print(
        f"checkpoint of {gigabytes:.2f} GB: training stall per save {async_:.3f} s async vs "
        f"{sync:.3f} s sync (ratio {result['stall_ratio']:.3f}; goal <= 0.10); the {args.steps} "
        f"steps alongside the background write took {slowdown:+.3f} s longer; the background "
        f"save finished {result['background_write_s']:.2f} s after it began"
    )
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
