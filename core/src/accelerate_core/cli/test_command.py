"""``accel test``: a short training run through ``accel launch`` under the current configuration.

Launches ``training_check.py`` (shipped in this package) with the same options and config file
``accel launch`` would use, and says whether it trained: the loss must fall, every rank must end
with the same weights, and evaluation must see each sample once. Exit code 0 on success.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..specs import LaunchAlias, LaunchOption
from . import launch
from .launch import add_launch_arguments
from .text import summary

TRAINING_CHECK = Path(__file__).with_name("training_check.py")


def register(
    commands: Any, options: Sequence[LaunchOption], aliases: Sequence[LaunchAlias] = ()
) -> None:
    parser = commands.add_parser(
        "test",
        help="run a short training under the current launch configuration",
        description=summary(__doc__),
        allow_abbrev=False,
    )
    add_launch_arguments(parser, options, aliases)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Launch the shipped training check exactly as ``accel launch`` would launch a script."""
    print(f"accel test: accel launch ... {TRAINING_CHECK}", flush=True)
    args.script, args.script_args, args.module = str(TRAINING_CHECK), [], False
    code = launch.run(args)
    if args.dry_run:
        return code
    if code == 0:
        print("accel test: passed")
        return 0
    print(f"accel test: FAILED (exit code {code}); the output above says why")
    return 1
