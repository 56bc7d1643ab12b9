"""``accel``: entry point and sub-command registry.

Sub-commands live in their own modules and register a parser here; the core CLI names no backend.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from . import env, memory


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="accel", description="accelerate-core: run one training script anywhere."
    )
    parser.add_argument("--version", action="version", version=f"accelerate-core {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    env.register(commands)
    memory.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 0
    return int(args.run(args) or 0)
