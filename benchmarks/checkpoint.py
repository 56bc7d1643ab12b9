"""Checkpoint throughput: ``save_state``/``load_state`` against plain torch/safetensors.

Both sides write and read the same tensors (a model's weights and its Adam state) to the same
disk in the same run, alternating; the figure is the median MB/s over rounds and the ratio
ours / plain (goal >= 0.9). Ours also records sizes and checksums (and verifies them before
loading), writes a manifest and RNG states, and renames the directory into place. Both loads
use memory maps, so each load also reads every optimizer tensor once, as training then does.

    python benchmarks/checkpoint.py            # ~100M parameters, writes results/checkpoint.json
    python benchmarks/checkpoint.py --quick    # small, for CI
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
from safetensors.torch import load_file, save_file

RESULTS = Path(__file__).parent / "results"


def build(width: int, layers: int):
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.ones(1, width)).sum().backward()
    optimizer.step()  # creates exp_avg / exp_avg_sq
    return model, optimizer


def plain_save(model, optimizer, directory: Path) -> None:
    directory.mkdir()
    save_file(model.state_dict(), directory / "model.safetensors")
    torch.save(optimizer.state_dict(), directory / "optimizer.bin")


def plain_load(model, optimizer, directory: Path) -> None:
    model.load_state_dict(load_file(directory / "model.safetensors"))
    optimizer.load_state_dict(torch.load(directory / "optimizer.bin", weights_only=True, mmap=True))


def touch(optimizer) -> None:
    """Read every optimizer tensor once: mmap-backed loads are lazy, training reads them all."""
    for state in optimizer.state_dict()["state"].values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                value.sum()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", type=Path, help="default: results/checkpoint.json (full runs)")
    args = parser.parse_args(argv)
    if args.output is None and not args.quick:
        args.output = RESULTS / "checkpoint.json"
    if args.quick:
        args.width, args.layers, args.rounds = 512, 4, 2

    from accelerate_core import Accelerator

    accelerator = Accelerator(cpu=True)
    model, optimizer = accelerator.prepare(*build(args.width, args.layers))
    tensors = list(model.state_dict().values()) + [
        t for s in optimizer.state_dict()["state"].values() for t in s.values()
        if isinstance(t, torch.Tensor)
    ]  # fmt: skip
    megabytes = sum(t.numel() * t.element_size() for t in tensors) / 1e6
    rates: dict[str, list[float]] = {k: [] for k in ("plain_save", "ours_save", "plain_load",
                                                     "ours_load")}  # fmt: skip
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        root = Path(tmp)
        for i in range(args.rounds):
            plain_dir, ours_dir = root / f"plain{i}", root / f"ours{i}"
            pairs = [("plain_save", lambda d=plain_dir: plain_save(model, optimizer, d)),
                     ("ours_save", lambda d=ours_dir: accelerator.save_state(d))]  # fmt: skip
            for name, fn in pairs if i % 2 == 0 else pairs[::-1]:
                rates[name].append(megabytes / timed(fn))
            pairs = [
                ("plain_load", lambda d=plain_dir: (plain_load(model, optimizer, d),
                                                    touch(optimizer))),
                ("ours_load", lambda d=ours_dir: (accelerator.load_state(d), touch(optimizer))),
            ]  # fmt: skip
            for name, fn in pairs if i % 2 == 0 else pairs[::-1]:
                rates[name].append(megabytes / timed(fn))
            shutil.rmtree(plain_dir)
            shutil.rmtree(ours_dir)
    median = {k: statistics.median(v) for k, v in rates.items()}
    result = {
        "benchmark": "checkpoint",
        "megabytes": megabytes,
        "rounds": args.rounds,
        "torch": torch.__version__,
        "mb_per_s": median,
        "save_ratio": median["ours_save"] / median["plain_save"],
        "load_ratio": median["ours_load"] / median["plain_load"],
    }
    print(
        f"checkpoint of {megabytes:.0f} MB (weights + Adam state): save {median['ours_save']:.0f}"
        f" MB/s vs plain {median['plain_save']:.0f} MB/s (ratio {result['save_ratio']:.2f}); "
        f"load {median['ours_load']:.0f} MB/s vs plain {median['plain_load']:.0f} MB/s (ratio "
        f"{result['load_ratio']:.2f}); goal >= 0.9"
    )
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
