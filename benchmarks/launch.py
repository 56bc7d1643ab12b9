"""Start-up cost of ``accel launch`` over plain torchrun, for an empty script on 2 processes.

python benchmarks/launch.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, capture_output=True, timeout=300)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=Path, help="default: results/launch.json (full runs)")
    args = parser.parse_args(argv)
    if args.output is None and not args.quick:
        args.output = RESULTS / "launch.json"
    repeats = 1 if args.quick else args.repeats
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "empty.py"
        script.write_text("")
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc-per-node=2", str(script)]  # fmt: skip
        accel = [sys.executable, "-m", "accelerate_core", "launch", "--cpu",
                 "--num-processes", "2", str(script)]  # fmt: skip
        plain, ours = [], []
        for _ in range(repeats):
            plain.append(timed(torchrun, env))
            ours.append(timed(accel, env))
    result = {
        "benchmark": "launch",
        "torchrun_s": statistics.median(plain),
        "accel_launch_s": statistics.median(ours),
        "ratio": statistics.median(ours) / statistics.median(plain),
        "repeats": repeats,
    }
    print(
        f"empty script on 2 processes: torchrun {result['torchrun_s']:.2f} s, accel launch "
        f"{result['accel_launch_s']:.2f} s (ratio {result['ratio']:.2f})"
    )
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
