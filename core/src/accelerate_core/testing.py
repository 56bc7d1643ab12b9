"""Test helpers for accelerate-core and its plugins (a pytest plugin: ``pytest_plugins = [...]``).

* ``clean_state`` (autouse): every test starts with a fresh plugin manager, a reset process state
  and none of the launcher variables of the surrounding shell.
* ``make_distribution``: writes a real installed distribution (``*.dist-info`` with entry points
  and modules) into a temporary directory on ``sys.path``, for plugin discovery tests.
"""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .plugins import ENTRY_POINT_GROUP, reset_plugin_manager
from .state import reset_state

LAUNCH_VARIABLES = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "GROUP_RANK",
    "NODE_RANK",
    "TORCHELASTIC_RUN_ID",
)


def clear_launch_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if (
            name in LAUNCH_VARIABLES
            or name.startswith("SLURM_")
            or name.startswith("ACCELERATE_CORE_")
        ):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def clean_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    clear_launch_environment(monkeypatch)
    reset_state()
    reset_plugin_manager()
    yield
    reset_state()
    reset_plugin_manager()


DistributionFactory = Callable[..., Path]


@pytest.fixture
def make_distribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DistributionFactory]:
    """``make_distribution(name, modules={mod: source}, entry_points={ep: "mod"}, requires=[])``."""
    created: list[str] = []

    def make(
        name: str,
        modules: dict[str, str],
        entry_points: dict[str, str],
        version: str = "1.0",
        requires: tuple[str, ...] = (),
    ) -> Path:
        root = tmp_path / f"site-{name}"
        root.mkdir()
        for module, source in modules.items():
            (root / f"{module}.py").write_text(textwrap.dedent(source))
            created.append(module)
        info = root / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
        metadata += [f"Requires-Dist: {r}" for r in requires]
        (info / "METADATA").write_text("\n".join(metadata) + "\n")
        lines = [f"[{ENTRY_POINT_GROUP}]"] + [f"{k} = {v}" for k, v in entry_points.items()]
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        monkeypatch.syspath_prepend(str(root))
        importlib.invalidate_caches()
        reset_plugin_manager()
        return root

    yield make
    for module in created:
        sys.modules.pop(module, None)
