"""``accel env``: versions, hardware and installed plugins, for bug reports.

Plugins are listed from entry-point metadata first (nothing imported), then loaded to show what
loads and what would be selected now: by this process (its environment, ``ACCELERATE_CORE_*``
variables) and by ``accel launch`` with the config file it would read.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from typing import Any

from ..config_files import config_file_to_read
from ..launch_settings import resolve_launch_config
from ..plugins import (
    KNOWN_DISTRIBUTIONS,
    PluginManager,
    collect_launch_options,
    installed_entry_points,
)
from ..process_settings import launch_setting
from ..state import (
    DEFAULT_DISTRIBUTED_BACKEND,
    SINGLE_PROCESS_BACKEND,
    choose_device,
    choose_named_device,
    describe_device,
)
from ..tracker_set import library_installed
from ..version import __version__


def register(commands: Any) -> None:
    parser = commands.add_parser("env", help="print versions, hardware and installed plugins")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(run=run)


def collect() -> dict[str, Any]:
    import torch

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
        "accelerator_devices": _device_names(torch),
        "cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
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
        "not_installed": {
            name: f"pip install {dist}"
            for name, dist in sorted(KNOWN_DISTRIBUTIONS.items())
            if not any(r.name == name for r in manager.entry_points)
        },
    }
    registry = manager.registry(strict=False)
    for kind in ("backend", "precision", "device"):
        info[kind + "s"] = {
            name: entry.distribution for name, entry in sorted(registry[kind].items())
        }
    info["trackers"] = _trackers(registry["tracker"])
    info["selection"] = _selection(manager)
    info["launch"] = _launch_selection(manager)
    return info


def _trackers(registered: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every known tracker: who registers it, whether its library is installed, how to get it."""
    return {
        name: {
            "distribution": entry.distribution,
            "installed": library_installed(entry.spec),
            "install": entry.spec.install,
        }
        for name, entry in sorted(registered.items())
    }


def _device_names(torch: Any) -> list[str]:
    if not torch.accelerator.is_available():
        return []
    kind = torch.accelerator.current_accelerator().type
    module = getattr(torch, kind, None)
    names = []
    for index in range(torch.accelerator.device_count()):
        try:
            names.append(f"{kind}:{index} {module.get_device_name(index)}")
        except Exception:  # a backend without get_device_name
            names.append(f"{kind}:{index}")
    return names


def _memory_gib() -> float | None:
    try:
        import psutil

        return round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:
        return None


def _selection(manager: Any) -> dict[str, Any]:
    """What ``Accelerator()`` would choose in this process now (without creating it)."""

    try:
        answers = [
            a
            for a in manager.call_all(
                "accelerate_core_detect_environment", environ=dict(os.environ)
            )
            if a is not None
        ]
        environment = max(answers, key=lambda a: a.priority)
        backend = launch_setting("backend", None) or (
            SINGLE_PROCESS_BACKEND if environment.world_size == 1 else DEFAULT_DISTRIBUTED_BACKEND
        )
        installed = backend in manager.registry(strict=False)["backend"]
        return {
            "environment": environment.source,
            "rank": environment.rank,
            "world_size": environment.world_size,
            "device": _device_choice(manager, environment),
            "backend": backend if installed else f"{backend} (not installed)",
            "mixed_precision": launch_setting("mixed_precision", None) or "no",
        }
    except Exception as exc:  # the report must print even when the environment is broken
        return {"error": f"{type(exc).__name__}: {exc}"}


def _device_choice(manager: Any, environment: Any) -> str:
    """The device ``Accelerator()`` would use, including one selected by name."""

    named = launch_setting("device", None)
    cpu = bool(launch_setting("cpu", None))
    if named:
        registered = manager.registry(strict=False)["device"].get(named)
        if registered is None:
            return f"{named} (not installed)"
        if cpu and named != "cpu":
            choose_named_device(named, cpu)  # raises: the contradiction, as Accelerator() would
        return f"{named} ({registered.spec.torch_type}, from {registered.distribution})"
    device = choose_device(cpu, environment)
    registered = manager.registry(strict=False)["device"].get(device.type)
    return describe_device(registered.spec.name if registered else device.type, device)


def _launch_selection(manager: Any) -> dict[str, Any]:
    """What ``accel launch script.py`` with no options would run, from the config file."""

    try:
        path = config_file_to_read(None)
        config = resolve_launch_config({}, path, collect_launch_options(manager))
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    default = SINGLE_PROCESS_BACKEND if config.num_processes == 1 else DEFAULT_DISTRIBUTED_BACKEND
    return {
        "config_file": str(path) if path else None,
        "num_processes": config.num_processes,
        "num_machines": config.num_machines,
        "cpu": config.cpu,
        "device": config.device or "(the accelerator torch reports, else cpu)",
        "backend": config.backend or default,
        "mixed_precision": config.mixed_precision or "no",
    }


def run(args: argparse.Namespace) -> int:
    info = collect()
    if args.json:
        json.dump(info, sys.stdout, indent=2)
        print()
        return 0
    print("accelerate-core environment (paste this into bug reports)\n")
    keys = ("accelerate-core", "python", "platform", "torch", "accelerator", "device_count")
    for key in (*keys, "cpu_count", "memory_gib"):
        print(f"- {key}: {info[key]}")
    for device in info["accelerator_devices"]:
        print(f"    {device}")
    for kind in ("backends", "precisions", "devices"):
        listed = ", ".join(f"{name} ({dist})" for name, dist in info[kind].items())
        print(f"- {kind}: {listed}")
    ready = [f"{n} ({t['distribution']})" for n, t in info["trackers"].items() if t["installed"]]
    print(f"- trackers: {', '.join(ready) or 'none installed'}")
    for name, tracker in info["trackers"].items():
        if not tracker["installed"]:
            print(f"    {name}: library not installed ({tracker['install']})")
    print("- plugins:" + ("" if info["plugins"] else " none installed"))
    for plugin in info["plugins"]:
        where = f"{plugin['distribution']} {plugin['version']}"
        line = f"    {plugin['name']}: {where} [{plugin['status']}]"
        print(line + (f" {plugin['error']}" if plugin["error"] else ""))
    for name, hint in info["not_installed"].items():
        print(f"    {name}: not installed ({hint})")
    for conflict in info["conflicts"]:
        print(f"- conflict: {conflict}")
    for key, title in (("selection", "this process would use"), ("launch", "accel launch")):
        chosen = info[key]
        described = chosen.get("error") or ", ".join(f"{k} {v}" for k, v in chosen.items())
        print(f"- {title}: {described}")
    return 0
