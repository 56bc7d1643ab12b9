"""Per-call cost of ``accelerator.log`` with TensorBoard: ours vs Hugging Face, same run.

Three loggers write the same four scalars per call into their own TensorBoard run: a
hand-written ``SummaryWriter`` (four ``add_scalar``), Hugging Face Accelerate 1.15's
``Accelerator(log_with="tensorboard").log`` and ours. Rounds alternate the order; the figure is
the median per-call time over rounds. Also measured: our ``log`` with a loss tensor (converted
to a number once), and ``log`` with no tracker (the cost on processes that do not track).
HF flushes the event file on every ``log``; ours leaves flushing to the writer (``flush_secs``)
and to ``end_training``, as a hand-written ``SummaryWriter`` does.

    python benchmarks/tracking.py            # full run, writes benchmarks/results/tracking.json
    python benchmarks/tracking.py --quick    # smoke run for CI: prints figures, asserts nothing
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def values(step: int) -> dict[str, float]:
    return {"loss": 1.0 / (step + 1), "lr": 1e-3, "grad_norm": 0.5 + step % 7, "epoch": 0.0}


def timed(log: Callable[[int], None], flush: Callable[[], None], calls: int, start: int) -> float:
    """Seconds per call, including the flush that writes what the calls queued (so writing
    done later by the writer's thread is charged to the logger that caused it)."""
    begin = time.perf_counter()
    for step in range(start, start + calls):
        log(step)
    flush()
    return (time.perf_counter() - begin) / calls


def loggers(root: Path) -> dict[str, tuple[Callable[[int], None], Callable[[], None]]]:
    from torch.utils.tensorboard import SummaryWriter

    from accelerate_core import Accelerator

    writer = SummaryWriter(str(root / "hand" / "run"))

    def hand_written(step: int) -> None:
        for key, value in values(step).items():
            writer.add_scalar(key, value, global_step=step)

    ours = Accelerator(cpu=True, log_with="tensorboard", project_dir=str(root / "ours"))
    ours.init_trackers("run")
    loss = torch.tensor(0.25)
    no_tracker = Accelerator(cpu=True)
    ours_flush = ours.get_tracker("tensorboard", unwrap=True).flush
    result = {
        "hand_written": (hand_written, writer.flush),
        "accelerate_core": (lambda step: ours.log(values(step), step=step), ours_flush),
        "accelerate_core_tensor": (
            lambda step: ours.log({**values(step), "loss": loss}, step=step),
            ours_flush,
        ),
        "accelerate_core_no_tracker": (
            lambda step: no_tracker.log(values(step), step=step),
            lambda: None,
        ),
    }
    if importlib.util.find_spec("accelerate") is not None:
        from accelerate import Accelerator as HFAccelerator

        hf = HFAccelerator(cpu=True, log_with="tensorboard", project_dir=str(root / "hf"))
        hf.init_trackers("run")
        result["hugging_face"] = (  # flushes in every log already; flushing again is free
            lambda step: hf.log(values(step), step=step),
            hf.get_tracker("tensorboard", unwrap=True).flush,
        )
    return result


def measure(calls: int, rounds: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        runs = loggers(Path(tmp))
        times: dict[str, list[float]] = {name: [] for name in runs}
        names = list(runs)
        for name in names:  # warm-up
            timed(*runs[name], 10, 0)
        for round_index in range(rounds):
            order = names if round_index % 2 == 0 else names[::-1]
            for name in order:
                times[name].append(timed(*runs[name], calls, 10 + round_index * calls))
    median = {name: statistics.median(t) * 1e6 for name, t in times.items()}
    result: dict[str, object] = {f"{name}_us": value for name, value in median.items()}
    result["ours_over_hand_written"] = median["accelerate_core"] / median["hand_written"]
    result["paired_ours_over_hand_written"] = paired(times, "hand_written")
    if "hugging_face" in median:
        result["ours_over_hugging_face"] = median["accelerate_core"] / median["hugging_face"]
        result["paired_ours_over_hugging_face"] = paired(times, "hugging_face")
    return result


def paired(times: dict[str, list[float]], other: str) -> float:
    """Median over rounds of ours / other in the same round (robust to drift on the machine)."""
    return statistics.median(o / t for o, t in zip(times["accelerate_core"], times[other]))


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few calls; a smoke run for CI")
    parser.add_argument("--calls", type=int, default=200, help="log calls per round")
    parser.add_argument("--rounds", type=int, default=21, help="alternating rounds")
    parser.add_argument("--output", type=Path, help="default: results/tracking.json (full runs)")
    args = parser.parse_args(argv)
    if args.output is None and not args.quick:
        args.output = RESULTS / "tracking.json"
    if args.quick:
        args.calls, args.rounds = 20, 3
    torch.set_num_threads(1)
    figures = measure(args.calls, args.rounds)
    result = {"benchmark": "tracking", "calls": args.calls, "rounds": args.rounds,
              "values_per_call": 4, "python": sys.version.split()[0], **figures}  # fmt: skip
    hf = figures.get("hugging_face_us")
    versus = "Hugging Face not installed"
    if hf:
        versus = (f"Hugging Face {hf:.1f} us; ours / HF {figures['ours_over_hugging_face']:.3f} "
                  f"(paired {figures['paired_ours_over_hugging_face']:.3f})")  # fmt: skip
    print(
        f"accelerator.log, 4 scalars to TensorBoard, per call: hand-written SummaryWriter "
        f"{figures['hand_written_us']:.1f} us, accelerate-core {figures['accelerate_core_us']:.1f}"
        f" us (loss as a tensor {figures['accelerate_core_tensor_us']:.1f} us), {versus}; ours / "
        f"hand-written {figures['ours_over_hand_written']:.3f}; no tracker "
        f"{figures['accelerate_core_no_tracker_us']:.2f} us"
    )
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
