"""The benchmark suite: ``python -m benchmarks [--quick] [--only NAME ...]``.

Runs every benchmark whose packages are installed, each in its own process, writes
``benchmarks/results/<name>.json``, a Markdown table (``benchmarks/results/README.md``) and the
MemoryTracker plot of a 2-process run (``benchmarks/results/memory_tracker.png``). ``--quick``
is the CI smoke run: small shapes, figures printed, results written to a temporary directory,
nothing asserted on time.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"
# name -> packages it needs (skipped, with a line saying so, when one is missing)
BENCHMARKS = {
    "overhead": ("accelerate_ddp",),
    "checkpoint": (),
    "memory": ("accelerate_ddp", "accelerate_fsdp"),
    "memory_deepspeed": ("accelerate_deepspeed", "deepspeed"),
    "memory_nd": ("accelerate_ddp", "accelerate_fsdp"),
    "fp8": ("accelerate_fp8",),
    "launch": (),
    "tracking": ("tensorboard",),
    "big_model_inference": ("accelerate", "transformers"),
}


# What --quick passes to the benchmarks that have no --quick of their own.
QUICK_ARGS = {"memory_deepspeed": ["--stages", "0", "3", "--precisions", "bf16"]}


def _missing(packages: tuple[str, ...]) -> list[str]:
    return [p for p in packages if importlib.util.find_spec(p) is None]


def _supports_quick(script: Path) -> bool:
    return "--quick" in script.read_text()


def _script(name: str) -> Path:
    """``benchmarks/<name>.py``, or ``benchmarks/<name>/<name>.py`` for a benchmark with files."""
    single = HERE / f"{name}.py"
    return single if single.exists() else HERE / name / f"{name}.py"


def run_benchmark(name: str, output: Path, quick: bool) -> dict | str:
    script = _script(name)
    command = [sys.executable, str(script), "--output", str(output)]
    if quick and _supports_quick(script):
        command.append("--quick")
    elif quick:
        command += QUICK_ARGS.get(name, [])
    start = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    print(run.stdout.strip() or f"{name}: no output")
    if run.returncode != 0:
        return f"failed (exit {run.returncode}): {run.stderr.strip()[-1500:]}"
    print(f"  ({name} took {time.perf_counter() - start:.0f} s)")
    return json.loads(output.read_text()) if output.exists() else "ran (figures above)"


def memory_plot(directory: Path, quick: bool) -> str:
    run_dir = directory / "memory_run"
    launch = [sys.executable, "-m", "accelerate_core", "launch", "--cpu", "--num-processes",
              "2", str(HERE / "tracked_run.py"), str(run_dir)]  # fmt: skip
    launch += ["--quick"] if quick else []
    subprocess.run(launch, check=True, capture_output=True, timeout=600)
    png = directory / "memory_tracker.png"
    subprocess.run(
        [sys.executable, "-m", "accelerate_core", "memory", "plot", str(run_dir), "-o", str(png)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    summary = subprocess.run(
        [sys.executable, "-m", "accelerate_core", "memory", "summary", str(run_dir)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    print(summary.stdout.strip())
    return str(png)


def _fmt(value: object, pattern: str = "{:.3f}") -> str:
    return pattern.format(value) if isinstance(value, (int, float)) else "—"


def table(results: dict[str, object]) -> str:
    """The headline figures as Markdown."""
    rows = ["| benchmark | figure | value | goal |", "|---|---|---|---|"]
    overhead = results.get("overhead")
    if isinstance(overhead, dict):
        single = overhead["single_process"]
        rows.append(f"| overhead, 1 process | ours / hand-written per step | "
                    f"{_fmt(single['ratio'])} ({single['accelerate_core_us']:.0f} vs "
                    f"{single['hand_written_us']:.0f} µs) | ≤ 1.05 |")  # fmt: skip
        ddp = overhead.get("two_processes_ddp")
        if isinstance(ddp, dict):
            rows.append(f"| overhead, 2 processes DDP | ours / hand-written DDP per step | "
                        f"{_fmt(ddp['ratio'])} ({ddp['accelerate_core_us']:.0f} vs "
                        f"{ddp['hand_written_us']:.0f} µs) | ≤ 1.03 |")  # fmt: skip
        rows.append(f"| import | `import accelerate_core` after torch | "
                    f"{overhead['import_accelerate_core_ms']:.0f} ms "
                    f"({100 * overhead['import_ratio']:.1f} % of torch) | small |")  # fmt: skip
    checkpoint = results.get("checkpoint")
    if isinstance(checkpoint, dict):
        for kind in ("save", "load"):
            ratio = _fmt(checkpoint[f"{kind}_ratio"], "{:.2f}")
            rows.append(f"| checkpoint {kind} | ours / plain MB/s | {ratio} | ≥ 0.9 |")
    for name in ("memory", "memory_deepspeed"):
        value = results.get(name)
        if isinstance(value, dict):
            rows.append(
                f"| {name} | see `{name}.json` | {_summary(value)} | ≤ 0.55 of DDP / stage 0 |"
            )
    memory_nd = results.get("memory_nd")
    if isinstance(memory_nd, dict):
        ratios = [r["total"]["mean_vs_theory"] for r in memory_nd["rows"].values()
                  if isinstance(r, dict) and "total" in r]  # fmt: skip
        worst = _fmt(max(ratios, default=None), "{:.4f}")
        rows.append(f"| memory_nd, {len(ratios)} layouts on 4 processes | per-rank model state "
                    f"/ theory (mean over ranks), worst layout | {worst} | 1.0 |")  # fmt: skip
    fp8 = results.get("fp8")
    if isinstance(fp8, dict) and "fp8" in fp8:
        rows.append(f"| fp8 vs bf16 ({fp8['fp8']['device']}) | final-loss difference, speed-up | "
                    f"{100 * fp8['loss_difference']:+.2f} %, {fp8['speedup']:.2f}x | "
                    f"≥ 1.2x on H100 |")  # fmt: skip
    launch = results.get("launch")
    if isinstance(launch, dict):
        rows.append(f"| launch start-up | accel launch / torchrun, empty script | "
                    f"{launch['ratio']:.2f} ({launch['accel_launch_s']:.2f} vs "
                    f"{launch['torchrun_s']:.2f} s) | — |")  # fmt: skip
    tracking = results.get("tracking")
    if isinstance(tracking, dict) and "hugging_face_us" in tracking:
        rows.append(f"| tracking: `accelerator.log`, 4 scalars, TensorBoard | ours / HF per call | "
                    f"{tracking['ours_over_hugging_face']:.2f} "
                    f"({tracking['accelerate_core_us']:.0f} vs {tracking['hugging_face_us']:.0f} "
                    f"µs; hand-written SummaryWriter "
                    f"{tracking['hand_written_us']:.0f} µs) | ≤ 1.05 |")  # fmt: skip
    rows += _big_model_rows(results.get("big_model_inference"))
    for name, value in results.items():
        if isinstance(value, str):
            rows.append(f"| {name} | — | {value.splitlines()[0][:80]} | — |")
    return "\n".join(rows)


def _big_model_rows(result: object) -> list[str]:
    """One row per model and scenario: ours / HF load time, load peak and time per token."""
    if not isinstance(result, dict):
        return []
    rows = []
    for model, entry in result.get("models", {}).items():
        for scenario, row in entry["scenarios"].items():
            ratios = row.get("ratios_ours_over_hf")
            if not ratios:
                rows.append(f"| big model {model} {scenario} | — | failed | — |")
                continue
            ours, hf = row["ours"], row["hf"]
            rows.append(
                f"| big model {model}, {scenario} | ours / HF: load s, load peak MiB, s/token | "
                f"{ours['load']['seconds']:.2f} / {hf['load']['seconds']:.2f}, "
                f"{ours['load']['kernel_peak_growth_mib']:.0f} / "
                f"{hf['load']['kernel_peak_growth_mib']:.0f}, "
                f"{ours['seconds_per_token']:.3f} / {hf['seconds_per_token']:.3f} | "
                f"same outputs: {row.get('same_output_as_hf')} |"
            )
    return rows


def _summary(result: dict) -> str:
    rows = result.get("rows", {})
    if "fsdp" in rows and isinstance(rows["fsdp"], dict):
        return f"fsdp / ddp = {rows['fsdp']['ratio_vs_ddp']:.3f}"
    parts = []
    for name, row in rows.items():
        if isinstance(row, dict) and "model_state" in row:
            base = rows.get(name.split("-")[0] + "-zero0", {}).get("model_state")
            if base:
                parts.append(f"{name} {row['model_state'] / base:.2f}")
    return "model state vs stage 0: " + ", ".join(parts) if parts else "recorded"


def _with_previous(results: dict[str, object]) -> dict[str, object]:
    """``results`` completed, in suite order, with the last figures of benchmarks not run now."""
    merged: dict[str, object] = {}
    for name in [*BENCHMARKS, "memory_plot"]:
        if name in results:
            merged[name] = results[name]
        elif name == "memory_plot" and (RESULTS / "memory_tracker.png").exists():
            merged[name] = "`benchmarks/results/memory_tracker.png`"
        elif (RESULTS / f"{name}.json").exists():
            merged[name] = json.loads((RESULTS / f"{name}.json").read_text())
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="small shapes; a smoke run for CI")
    parser.add_argument("--only", nargs="+", choices=[*BENCHMARKS, "memory_plot"])
    args = parser.parse_args(argv)
    names = args.only or [*BENCHMARKS, "memory_plot"]
    temporary = tempfile.TemporaryDirectory() if args.quick else None
    directory = Path(temporary.name) if temporary else RESULTS
    directory.mkdir(parents=True, exist_ok=True)
    results: dict[str, object] = {}
    failed = False
    for name in names:
        if name == "memory_plot":
            try:
                results[name] = memory_plot(directory, args.quick)
            except subprocess.SubprocessError as exc:
                results[name], failed = f"failed: {exc}", True
            continue
        missing = _missing(BENCHMARKS[name])
        if missing:
            results[name] = f"skipped: {', '.join(missing)} not installed"
            print(f"{name}: {results[name]}")
            continue
        results[name] = run_benchmark(name, directory / f"{name}.json", args.quick)
        failed |= isinstance(results[name], str) and results[name].startswith("failed")
    markdown = table(results)
    print("\n" + markdown)
    if not args.quick:
        # With --only, the other rows keep the figures of their last full run.
        (RESULTS / "README.md").write_text(
            "# Benchmark results\n\nWritten by `python -m benchmarks` on a 2-core CPU machine "
            "(figures from a GPU run, when one was lent, are in the files named after the "
            "device).\n\n" + table(_with_previous(results)) + "\n"
        )
    if temporary:
        temporary.cleanup()
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
