"""Fixtures every module of checks shares (imported into each): a fresh process state for each
check, the target under check, and what a fresh plugin manager found."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from . import recipe
from .target import Target

TORCHRUN_VARIABLES = (
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "NODE_RANK",
    "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID",
)  # fmt: skip


@pytest.fixture(autouse=True)
def _fresh_process_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every check starts with a fresh plugin manager and process state, and no launch settings."""
    from accelerate_core.plugins import reset_plugin_manager
    from accelerate_core.state import reset_state

    for name in (*TORCHRUN_VARIABLES, *recipe.SETTING_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    reset_state()
    reset_plugin_manager()
    yield
    reset_state()
    reset_plugin_manager()


@pytest.fixture(scope="module")
def target(accelerate_conformance_target: Target) -> Target:
    return accelerate_conformance_target


@pytest.fixture(scope="module")
def plugins(target: Target) -> dict[str, Any]:
    """What a fresh plugin manager found: registry, entry points and load warnings."""
    from accelerate_core.plugins import PluginManager

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manager = PluginManager()
    registry = manager.registry(strict=False)
    return {
        "manager": manager,
        "registry": registry,
        "conflicts": manager.conflicts,
        "warnings": [str(w.message) for w in caught],
    }


def registered(plugins: dict[str, Any], kind: str, name: str) -> Any:
    """The registry entry of ``name``; the check skips when it is missing (registration fails)."""
    found = plugins["registry"][kind].get(name)
    if found is None:
        pytest.skip(f"{kind} '{name}' is not registered (see the registration check)")
    return found
