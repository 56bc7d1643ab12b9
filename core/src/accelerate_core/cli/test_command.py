"""``accel test``: a short training run through ``accel launch`` under the current configuration.

Launches ``training_check.py`` (shipped in this package) with the same options and config file
``accel launch`` would use, and says whether it trained: the loss must fall, every rank must end
with the same weights, and evaluation must see each sample once. Exit code 0 on success.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..launch_config import LaunchOption
from .launch import add_launch_arguments

TRAINING_CHECK = Path(__file__).with_name("training_check.py")


def register(commands: Any, options: Sequence[LaunchOption]) -> None:
    parser = commands.add_parser(
        "test",
        help="run a short training under the current launch configuration",
        description=__doc__.split("\n\n")[0],
        allow_abbrev=False,
    )
    add_launch_arguments(parser, options)
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds before the run counts as hung"
    )
    parser.set_defaults(run=run)


def launch_arguments(args: argparse.Namespace) -> list[str]:
    """The ``accel launch`` options equivalent to the parsed ones."""
    forwarded: list[str] = []
    if args.config_file is not None:
        forwarded += ["--config-file", args.config_file]
    if args.dry_run:
        forwarded.append("--dry-run")
    for option in args.launch_options:
        value = getattr(args, option.dest, None)
        if value is None:
            continue
        if option.type == "bool":
            forwarded.append(f"--{option.name}" if value else f"--no-{option.name}")
        else:
            text = json.dumps(value) if option.type == "json" else str(value)
            forwarded += [f"--{option.name}", text]
    return forwarded


def run(args: argparse.Namespace) -> int:
    command = [
        sys.executable, "-m", "accelerate_core", "launch", *launch_arguments(args),
        str(TRAINING_CHECK),
    ]  # fmt: skip
    print("accel test: running " + " ".join(command[1:]), flush=True)
    try:
        result = subprocess.run(command, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        print(f"accel test: FAILED: no result within {args.timeout:.0f}s (hung?)")
        return 1
    if result.returncode == 0:
        print("accel test: passed" if not args.dry_run else "accel test: dry run, nothing run")
        return 0
    print(f"accel test: FAILED (exit code {result.returncode}); the output above says why")
    return 1
