"""``accel``: entry point and sub-command registry.

Sub-commands live in their own modules and register a parser here; the core CLI names no backend:
the launch commands ask installed plugins for their options (``accelerate_core_launch_options``),
and only those commands load plugins.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import AccelerateCoreError
from ..launch_options import CORE_OPTIONS
from ..plugins import collect_launch_aliases, collect_launch_options
from ..version import __version__
from . import (
    config,
    convert_checkpoint,
    env,
    estimate_memory,
    launch,
    memory,
    merge_weights,
    test_command,
)

# Commands whose parser includes the options installed plugins add.
LAUNCH_COMMANDS = {"launch", "test", "config"}


def _command(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:

    argv = sys.argv[1:] if argv is None else argv
    launching = _command(argv) in LAUNCH_COMMANDS
    options = collect_launch_options() if launching else list(CORE_OPTIONS)
    aliases = collect_launch_aliases() if launching else []
    parser = argparse.ArgumentParser(
        prog="accel", description="accelerate-core: run one training script anywhere."
    )
    parser.add_argument("--version", action="version", version=f"accelerate-core {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    env.register(commands)
    memory.register(commands)
    convert_checkpoint.register(commands)
    merge_weights.register(commands)
    estimate_memory.register(commands)
    launch.register(commands, options, aliases)
    config.register(commands, options, aliases)
    test_command.register(commands, options, aliases)
    parser.launch_inputs = (options, aliases)  # type: ignore[attr-defined]
    return parser


def parse_arguments(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv``; ``--flag false`` after a yes/no launch option (as HF's users write it)
    becomes ``--no-flag`` first."""
    argv = list(argv)
    command = _command(argv)
    if command in ("launch", "test"):
        at = argv.index(command)
        options, aliases = parser.launch_inputs  # type: ignore[attr-defined]
        argv = argv[:at] + launch.bool_values_as_flags(argv[at:], options, aliases)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(argv)
    except AccelerateCoreError as exc:  # two plugins offering the same launch option
        print(f"accel: error: {exc}", file=sys.stderr)
        return 2
    args = parse_arguments(parser, argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 0
    return int(args.run(args) or 0)
