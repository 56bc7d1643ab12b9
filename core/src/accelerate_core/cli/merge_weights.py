"""``accel merge-weights CHECKPOINT OUTPUT_DIR``: a model's full weights from a checkpoint, as
safetensors a plain model loads, for every backend.

The plugin whose backend wrote the checkpoint consolidates it (hook
``accelerate_core_checkpoint_weights``): FSDP's ``torch.distributed.checkpoint`` shards,
DeepSpeed's ZeRO partitions (fp32 master weights), the core's own files for replicated
backends. Runs offline on one process, no GPU, with a progress bar; large models are split into
shards with an index.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..checkpoint_io import MANIFEST
from ..errors import AccelerateCoreError, CheckpointError
from ..model_files import write_model
from ..plugins import KNOWN_DISTRIBUTIONS, get_plugin_manager
from ..progress import ProgressBar
from ..specs import CheckpointWeights
from .text import summary


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "merge-weights",
        help="a checkpoint's full model weights as safetensors (any backend)",
        description=summary(__doc__),
    )
    parser.add_argument("checkpoint", help="save_state() directory (or a DeepSpeed checkpoint)")
    parser.add_argument("output_dir", help="where model.safetensors (and its index) go")
    parser.add_argument("--model", default="model_0", help="which prepared model (model_0, ...)")
    parser.add_argument("--tag", default=None, help="DeepSpeed checkpoint tag, when several")
    parser.add_argument("--max-shard-size", default="10GB", help="largest file (default 10GB)")
    parser.add_argument("--bin", action="store_true", help="write pytorch_model.bin instead")
    parser.set_defaults(run=run)


def find_weights(checkpoint: Path, model: str, options: dict[str, Any]) -> CheckpointWeights:
    """Ask the installed plugins for ``model``'s weights in ``checkpoint``; clear error if none."""
    if not checkpoint.is_dir():
        raise CheckpointError(f"{checkpoint} is not a directory")
    manifest = None
    if (checkpoint / MANIFEST).is_file():
        manifest = json.loads((checkpoint / MANIFEST).read_text())
    weights = get_plugin_manager().call_all(
        "accelerate_core_checkpoint_weights",
        directory=str(checkpoint),
        manifest=manifest,
        model=model,
        options=options,
    )
    if weights is not None:
        return weights
    if manifest is None:
        raise CheckpointError(
            f"{checkpoint} has no {MANIFEST} and no installed plugin reads it: expected a "
            "save_state() directory or a checkpoint of an installed backend's library "
            "(accel env lists them)"
        )
    backend = manifest.get("backend")
    count = manifest.get("objects", {}).get("models", 0)
    if not model.startswith("model_") or not model[6:].isdigit() or int(model[6:]) >= count:
        raise CheckpointError(f"{checkpoint} holds {count} model(s): model_0 to model_{count - 1}")
    dist = KNOWN_DISTRIBUTIONS.get(str(backend))
    hint = f"pip install {dist}" if dist else "install the plugin of that backend"
    raise CheckpointError(
        f"{checkpoint} was saved with backend '{backend}', whose plugin is not installed: {hint}"
    )


def merge(
    checkpoint: str | Path,
    output_dir: str | Path,
    model: str = "model_0",
    options: dict[str, Any] | None = None,
    max_shard_size: int | str = "10GB",
    safe_serialization: bool = True,
    stream: Any = None,
) -> tuple[CheckpointWeights, list[Path]]:
    """Read every tensor (with a progress bar on ``stream``, default stderr) and write them."""
    output = Path(output_dir)
    if output.exists() and any(output.iterdir()):
        raise CheckpointError(f"{output} is not empty; merge into a new directory")
    weights = find_weights(Path(checkpoint), model, options or {})
    sizes = weights.nbytes
    known = bool(sizes) and all(n in sizes for n in weights.names)
    total = sum(sizes[n] for n in weights.names) if known else len(weights.names)
    bar = ProgressBar(total, f"merging {model}", "B" if known else " tensors", stream)
    state = {}
    for name in weights.names:
        state[name] = weights.load(name).contiguous()
        bar.advance(sizes[name] if known else 1)
    bar.close()
    return weights, write_model(state, output, max_shard_size, safe_serialization)


def run(args: argparse.Namespace) -> int:
    options = {"tag": args.tag} if args.tag else {}
    try:
        weights, files = merge(
            args.checkpoint, args.output_dir, args.model, options, args.max_shard_size,
            not args.bin,
        )  # fmt: skip
    except (AccelerateCoreError, FileNotFoundError, ValueError) as exc:
        print(f"accel merge-weights: error: {exc}", file=sys.stderr)
        return 2
    print(f"accel merge-weights: {weights.description}: {len(weights.names)} tensors")
    for file in files:
        print(file)
    return 0
