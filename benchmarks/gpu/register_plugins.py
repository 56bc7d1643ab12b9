"""Make the in-repo plugins discoverable on a machine where they cannot be pip-installed.

The GPU machines lent to this project have no network and their own Python: the packages are run
from their source trees (``PYTHONPATH=core/src:accelerate_fp8/src:...``), and this writes the
``*.dist-info`` metadata (name, version, core range, entry point) pip would have written, into
the directory given, which goes on ``PYTHONPATH`` too.

    python benchmarks/gpu/register_plugins.py /tmp/site [accelerate_ddp accelerate_fp8 ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("accelerate_ddp", "accelerate_fsdp", "accelerate_fp8", "accelerate_deepspeed")


def register(site: Path, packages: tuple[str, ...] | list[str] = PACKAGES) -> list[str]:
    site.mkdir(parents=True, exist_ok=True)
    done = []
    for package in packages:
        project = tomllib.loads((ROOT / package / "pyproject.toml").read_text())["project"]
        name, version = project["name"], project.get("version", "0.1.0")
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(exist_ok=True)
        requires = [d for d in project.get("dependencies", []) if d.startswith("accelerate-core")]
        metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
        metadata += [f"Requires-Dist: {r}" for r in requires]
        (info / "METADATA").write_text("\n".join(metadata) + "\n")
        points = project.get("entry-points", {}).get("accelerate_core", {})
        lines = ["[accelerate_core]", *(f"{k} = {v}" for k, v in points.items())]
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        done.append(f"{name} {version}: {', '.join(points)}")
    return done


if __name__ == "__main__":
    print("\n".join(register(Path(sys.argv[1]), sys.argv[2:] or PACKAGES)))
