"""``accel convert-checkpoint HF_DIR OUT_DIR``: a Hugging Face Accelerate ``save_state``
directory as a checkpoint ``load_state`` resumes from.

Weights become safetensors; optimizers, schedulers, the fp16 scaler and registered objects are
copied as they are, read with ``weights_only=True``. HF pickles its RNG states: they are read only
with ``--trust-pickled-code`` (unpickling runs code stored in the file). What was not converted
is listed.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..checkpoint_convert import convert_checkpoint
from ..errors import AccelerateCoreError
from .text import summary


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "convert-checkpoint",
        help="convert a Hugging Face Accelerate save_state directory",
        description=summary(__doc__),
    )
    parser.add_argument("hf_dir", metavar="HF_DIR", help="the directory HF's save_state wrote")
    parser.add_argument("output_dir", metavar="OUT_DIR", help="the new checkpoint (must not exist)")
    parser.add_argument(
        "--trust-pickled-code",
        "--trust_pickled_code",
        action="store_true",
        help="also read HF's pickled RNG states: this RUNS CODE stored in those files; only for "
        "checkpoints you trust",
    )
    parser.add_argument(
        "--backend", default=None, help="the resuming run's backend (default: none, or ddp)"
    )
    parser.add_argument(
        "--dataloaders",
        type=int,
        default=0,
        help="prepared dataloaders of the resuming script (HF saves no position: they start "
        "the epoch from its beginning)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        result = convert_checkpoint(
            args.hf_dir,
            args.output_dir,
            allow_pickle=args.trust_pickled_code,
            backend=args.backend,
            dataloaders=args.dataloaders,
        )
    except AccelerateCoreError as exc:
        print(f"accel convert-checkpoint: error: {exc}", file=sys.stderr)
        return 1
    print(f"accel convert-checkpoint: {result.report()}")
    return 0
