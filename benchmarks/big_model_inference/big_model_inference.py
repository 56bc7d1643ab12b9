"""Big-model inference: load time, peak memory and time per token, ours beside HF Accelerate.

For each model (built from a config, random weights, written as a sharded safetensors
checkpoint) and each device-map scenario, ``init_empty_weights`` + ``load_checkpoint_and_dispatch``
run in a fresh process per library, so each peak-memory figure is that process's own. The same
``max_memory`` goes to both libraries; the maps they choose and the tokens they generate are
compared. Scenarios, as budgets relative to the model's size S:

    cpu            everything in CPU memory            max_memory={"cpu": 10 S}
    cpu+disk       half in CPU memory, half on disk    max_memory={"cpu": S / 2}
    disk           as much on disk as possible         max_memory={"cpu": 1.5 x largest block}
    gpu            everything on GPU 0                 max_memory={0: 10 S}
    gpu+cpu        half on GPU 0, half offloaded to CPU   {0: S / 2, "cpu": 10 S}
    gpu+cpu+disk   a third on GPU 0, a third in CPU memory, the rest on disk

    python benchmarks/big_model_inference/big_model_inference.py            # CPU scenarios
    python benchmarks/big_model_inference/big_model_inference.py --quick    # small, for CI
    ... --models opt-1.3b --scenarios gpu gpu+cpu gpu+cpu+disk --dtype float16   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results"
LIBRARIES = ("ours", "hf")
CPU_SCENARIOS = ("cpu", "cpu+disk", "disk")
GPU_SCENARIOS = ("gpu", "gpu+cpu", "gpu+cpu+disk")
PROMPT_LENGTH = 16


def budgets(scenario: str, size: int, block: int) -> dict[Any, int]:
    return {
        "cpu": {"cpu": 10 * size},
        "cpu+disk": {"cpu": size // 2},
        "disk": {"cpu": int(1.5 * block)},
        "gpu": {0: 10 * size},
        "gpu+cpu": {0: size // 2, "cpu": 10 * size},
        "gpu+cpu+disk": {0: size // 3, "cpu": size // 3},
    }[scenario]


# ----------------------------------------------------------------------------- worker process


def worker(spec: dict) -> dict:
    """One library, one model, one scenario, in this (fresh) process."""
    sys.path.insert(0, str(HERE))
    import torch
    from measures import Measure
    from models import build, is_transformers, no_split

    if spec["library"] == "hf":
        import accelerate as library
    else:
        import accelerate_core as library
    dtype = getattr(torch, spec["dtype"])
    with library.init_empty_weights():
        model = build(spec["model"])
    if hasattr(model, "tie_weights"):
        model.tie_weights()  # HF's meta init unties weights tied in __init__; ours keeps them
    else:
        model.head.weight = model.embed.weight
    max_memory = {int(k) if k.isdigit() else k: v for k, v in spec["max_memory"].items()}
    with Measure() as load:
        model = library.load_checkpoint_and_dispatch(
            model,
            spec["checkpoint"],
            device_map="auto",
            max_memory=max_memory,
            no_split_module_classes=no_split(spec["model"]),
            offload_folder=spec["offload"],
            dtype=dtype,
        )
    device_map = {k: str(v) for k, v in model.hf_device_map.items()}
    devices = [v for v in model.hf_device_map.values() if v not in ("cpu", "disk")]
    main = torch.device("cuda", devices[0]) if devices else torch.device("cpu")
    ids = torch.randint(0, 500, (1, PROMPT_LENGTH), generator=torch.Generator().manual_seed(0))
    ids = ids.to(main)
    tokens = spec["tokens"]
    timings = []
    with torch.no_grad():
        if is_transformers(spec["model"]):
            kwargs = {"max_new_tokens": tokens, "min_new_tokens": tokens, "do_sample": False}
            for _ in range(2):  # the first call pays one-time costs; the second is the figure
                with Measure() as run:
                    output = model.generate(ids, **kwargs)
                timings.append(run.result)
            fingerprint = output[0, PROMPT_LENGTH:].tolist()
        else:
            for _ in range(2):
                with Measure() as run:
                    for _ in range(tokens):
                        logits = model(ids)
                timings.append(run.result)
            fingerprint = logits[0, -1, :16].float().cpu().tolist()
    first, warm = timings
    from measures import MiB, rss

    # Resident memory after generating, over the process before loading: what the model holds
    # once it ran (weights mapped from files count once they are read).
    after_run = (rss() - load.result["rss_before_mib"] * MiB) / MiB
    return {
        "library": spec["library"],
        "device_map": device_map,
        "devices": sorted(set(device_map.values())),
        "load": load.result,
        "seconds_per_token": warm["seconds"] / tokens,
        "first_call_seconds_per_token": first["seconds"] / tokens,
        "run": warm,
        "rss_growth_after_run_mib": after_run,
        "fingerprint": fingerprint,
    }


def run_worker(spec: dict, timeout: float) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if run.returncode != 0:
        return {"error": run.stderr.strip()[-2000:]}
    return json.loads(run.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- orchestration


def same_output(a: list, b: list, transformers: bool) -> bool:
    if transformers:
        return a == b
    return all(abs(x - y) <= 1e-3 * max(1.0, abs(y)) for x, y in zip(a, b))


def ratio(ours: float, theirs: float) -> float | None:
    return ours / theirs if theirs else None


def compare(model: str, scenario: str, rows: dict[str, dict], reference: dict | None) -> dict:
    from models import is_transformers

    ours, hf = rows["ours"], rows["hf"]
    out: dict[str, Any] = {"ours": ours, "hf": hf}
    if "error" in ours or "error" in hf:
        return out
    transformers = is_transformers(model)
    out["same_map"] = ours["device_map"] == hf["device_map"]
    out["same_output_as_hf"] = same_output(ours["fingerprint"], hf["fingerprint"], transformers)
    if reference is not None:
        out["same_output_as_full_model"] = same_output(
            ours["fingerprint"], reference["fingerprint"], transformers
        )
    out["ratios_ours_over_hf"] = {
        "load_seconds": ratio(ours["load"]["seconds"], hf["load"]["seconds"]),
        "load_kernel_peak": ratio(
            ours["load"]["kernel_peak_growth_mib"], hf["load"]["kernel_peak_growth_mib"]
        ),
        "seconds_per_token": ratio(ours["seconds_per_token"], hf["seconds_per_token"]),
    }
    return out


def table(result: dict) -> str:
    lines = [
        "| model | scenario | library | devices | load s | load peak MiB (kernel / sampled) | "
        "s per token | same map / tokens as HF |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, entry in result["models"].items():
        for scenario, row in entry["scenarios"].items():
            for library in LIBRARIES:
                r = row[library]
                if "error" in r:
                    lines.append(f"| {model} | {scenario} | {library} | error | | | | |")
                    continue
                load = r["load"]
                same = (
                    f"{row.get('same_map')} / {row.get('same_output_as_hf')}"
                    if library == "ours"
                    else ""
                )
                lines.append(
                    f"| {model} | {scenario} | {library} | {'+'.join(r['devices'])} | "
                    f"{load['seconds']:.2f} | {load['kernel_peak_growth_mib']:.0f} / "
                    f"{load['sampled_peak_growth_mib']:.0f} | {r['seconds_per_token']:.4f} | "
                    f"{same} |"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small model, for CI")
    parser.add_argument("--models", nargs="+")
    parser.add_argument("--scenarios", nargs="+", choices=CPU_SCENARIOS + GPU_SCENARIOS)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--tokens", type=int)
    parser.add_argument("--shard-mb", type=int, default=200, help="checkpoint shard size")
    parser.add_argument("--workdir", type=Path, help="default: a temporary directory")
    parser.add_argument("--output", type=Path, help="default: results/big_model_inference.json")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:  # in a fresh process
        spec = json.loads(args.worker)
        if "write" in spec:
            # Its own process: a worker started by a process that once held a whole model would
            # inherit that peak in its kernel counter (Linux copies ru_maxrss across fork).
            sys.path.insert(0, str(HERE))
            import torch
            from models import write_checkpoint

            print(
                json.dumps(
                    write_checkpoint(
                        spec["write"],
                        Path(spec["folder"]),
                        getattr(torch, spec["dtype"]),
                        spec["shard_bytes"],
                    )
                )
            )
            return {}
        print(json.dumps(worker(spec)))
        return {}
    sys.path.insert(0, str(HERE))
    import torch
    from models import build, no_split

    from accelerate_core.utils import compute_module_sizes, get_max_layer_size

    if args.quick:
        args.models = args.models or ["decoder"]
        args.scenarios = args.scenarios or ["cpu+disk"]
        args.tokens = args.tokens or 2
    args.models = args.models or ["gpt2-medium", "decoder-1g"]
    args.scenarios = args.scenarios or list(CPU_SCENARIOS)
    args.tokens = args.tokens or 8
    if args.output is None and not args.quick:
        args.output = RESULTS / "big_model_inference.json"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    result: dict[str, Any] = {
        "benchmark": "big_model_inference",
        "quick": args.quick,
        "dtype": args.dtype,
        "tokens": args.tokens,
        "prompt_length": PROMPT_LENGTH,
        "gpu": gpu,
        "torch": torch.__version__,
        "models": {},
    }
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="big_model_inference-"))
    try:
        for name in args.models:
            folder = workdir / name
            start = time.perf_counter()
            writer = {
                "write": name,
                "folder": str(folder),
                "dtype": args.dtype,
                "shard_bytes": args.shard_mb * 2**20,
            }
            checkpoint = run_worker(writer, args.timeout)
            if "error" in checkpoint:
                raise RuntimeError(f"writing the {name} checkpoint failed: {checkpoint['error']}")
            checkpoint["write_seconds"] = time.perf_counter() - start
            with torch.device("meta"):
                meta = build(name).to(getattr(torch, args.dtype))
            sizes = compute_module_sizes(meta)
            children = list(meta.named_children())
            block, _ = get_max_layer_size(children, sizes, no_split(name))
            entry = {
                "checkpoint": checkpoint,
                "size_bytes": sizes[""],
                "largest_block": block,
                "scenarios": {},
            }
            result["models"][name] = entry
            print(
                f"{name}: {sizes[''] / 2**20:.0f} MiB, {checkpoint['shards']} shards, "
                f"largest block {block / 2**20:.0f} MiB",
                flush=True,
            )
            reference: dict | None = None
            for scenario in args.scenarios:
                rows = {}
                for library in LIBRARIES:
                    offload = workdir / f"offload-{library}"
                    spec = {
                        "library": library,
                        "model": name,
                        "checkpoint": str(folder),
                        "offload": str(offload),
                        "dtype": args.dtype,
                        "tokens": args.tokens,
                        "max_memory": {
                            str(k): v for k, v in budgets(scenario, sizes[""], block).items()
                        },
                    }
                    rows[library] = run_worker(spec, args.timeout)
                    shutil.rmtree(offload, ignore_errors=True)
                if scenario in ("cpu", "gpu") and "error" not in rows["ours"]:
                    reference = rows["ours"]
                entry["scenarios"][scenario] = compare(name, scenario, rows, reference)
                rows_table = table(
                    {"models": {name: {"scenarios": {scenario: entry["scenarios"][scenario]}}}}
                )
                print("\n".join(rows_table.splitlines()[2:]), flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    markdown = table(result)
    print(markdown)
    result["table"] = markdown
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
