"""``accel estimate-memory MODEL``: the memory a model takes to load and to train, per rank,
for every installed backend, without building it for real (meta device, no download).

MODEL is ``package.module:callable`` (returns an ``nn.Module``) or a transformers config on disk
(``config.json`` or its directory). The first table is Hugging Face Accelerate's; the second
gives parameters, gradients and Adam state on each rank under every backend, setting and
precision for ``--num-processes`` processes.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from ..errors import AccelerateCoreError
from ..memory_estimate import HF_DTYPES, build_meta_model, estimates, hf_table, human, render
from .text import summary


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "estimate-memory",
        help="memory to load and train a model, per rank and backend (no download)",
        description=summary(__doc__),
    )
    parser.add_argument("model", metavar="MODEL", help="module:callable or a config.json path")
    parser.add_argument(
        "--num-processes", "--num_processes", type=int, default=2,
        help="processes to spread the model over (default 2)",
    )  # fmt: skip
    parser.add_argument(
        "--mixed-precision", "--mixed_precision", nargs="+", default=["no", "bf16"],
        help="precisions to estimate (default: no bf16)",
    )  # fmt: skip
    parser.add_argument(
        "--dtypes", nargs="+", default=list(HF_DTYPES), choices=list(HF_DTYPES),
        help="dtypes of Hugging Face Accelerate's table",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        model = build_meta_model(args.model)
        hf = hf_table(model, args.dtypes)
        ours = estimates(model, args.num_processes, args.mixed_precision)
    except AccelerateCoreError as exc:
        print(f"accel estimate-memory: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"hf": hf, "per_rank": [asdict(e) for e in ours]}, indent=1))
        return 0
    print(f"Memory usage for loading {args.model} (Hugging Face Accelerate's table)")
    print(render([[r["dtype"], human(r["largest_layer"]), human(r["total_size"]),
                   human(r["training_using_adam"])] for r in hf],
                 ["dtype", "Largest Layer", "Total Size", "Training using Adam"]))  # fmt: skip
    print(f"\nModel state per rank on {args.num_processes} process(es), Adam (rank 0 / largest)")
    rows = []
    for e in ours:
        rows.append([e.backend, e.setting, e.mixed_precision, human(e.parameters[0]),
                     human(e.gradients[0]), human(e.optimizer_states[0]),
                     human(e.per_rank()[0]), human(max(e.per_rank()))])  # fmt: skip
    print(render(rows, ["backend", "setting", "precision", "parameters", "gradients",
                        "optimizer", "total rank 0", "largest rank"]))  # fmt: skip
    notes = sorted({f"{e.backend}: {e.note}" for e in ours if e.note})
    print("\n".join(notes))
    return 0
