"""``accel env``: versions, hardware and installed plugins, for bug reports.

Plugins are listed from entry-point metadata first (nothing imported), then loaded to show what
loads and what would be selected now.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from typing import Any


def register(commands: Any) -> None:
    parser = commands.add_parser("env", help="print versions, hardware and installed plugins")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(run=run)


def collect() -> dict[str, Any]:
    import torch

    from .. import __version__
    from ..plugins import PluginManager, installed_entry_points

    manager = PluginManager()
    info: dict[str, Any] = {
        "accelerate-core": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "accelerator": (
            str(torch.accelerator.current_accelerator())
            if torch.accelerator.is_available()
            else "none (cpu)"
        ),
        "device_count": torch.accelerator.device_count() if torch.accelerator.is_available() else 0,
        "entry_points": [
            {"name": r.name, "distribution": r.distribution, "version": r.version}
            for r in installed_entry_points()
        ],
        "plugins": [
            {
                "name": r.name,
                "distribution": r.distribution,
                "version": r.version,
                "status": r.status,
                "error": r.error,
            }
            for r in manager.entry_points
        ],
        "conflicts": manager.conflicts,
    }
    registry = manager.registry(strict=False)
    for kind in ("backend", "precision", "device"):
        info[kind + "s"] = {
            name: entry.distribution for name, entry in sorted(registry[kind].items())
        }
    return info


def run(args: argparse.Namespace) -> int:
    info = collect()
    if args.json:
        json.dump(info, sys.stdout, indent=2)
        print()
        return 0
    print("accelerate-core environment (paste this into bug reports)\n")
    for key in ("accelerate-core", "python", "platform", "torch", "accelerator", "device_count"):
        print(f"- {key}: {info[key]}")
    for kind in ("backends", "precisions", "devices"):
        listed = ", ".join(f"{name} ({dist})" for name, dist in info[kind].items())
        print(f"- {kind}: {listed}")
    print("- plugins:" + ("" if info["plugins"] else " none installed"))
    for plugin in info["plugins"]:
        where = f"{plugin['distribution']} {plugin['version']}"
        line = f"    {plugin['name']}: {where} [{plugin['status']}]"
        print(line + (f" {plugin['error']}" if plugin["error"] else ""))
    for conflict in info["conflicts"]:
        print(f"- conflict: {conflict}")
    return 0
