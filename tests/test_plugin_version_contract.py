"""The version contract: a plugin written for another core is reported, never imported or run."""

from __future__ import annotations

import json
import sys
import warnings

import pytest

from accelerate_core import Accelerator, PluginError, __version__
from accelerate_core.cli.main import main
from accelerate_core.plugins import PluginLoadWarning

BACKEND = """
from accelerate_core import BackendSpec, hookimpl

@hookimpl
def accelerate_core_backends():
    return [BackendSpec("{name}", "test backend", distributed=False)]
"""

# Written for a future core whose accelerate_core_wrap passes an argument this core lacks.
FUTURE_HOOK = (
    BACKEND
    + """
@hookimpl
def accelerate_core_wrap(request, context, plan_from_the_future):
    return request
"""
)


def env_report(capsys: pytest.CaptureFixture[str]) -> tuple[str, dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginLoadWarning)
        assert main(["env"]) == 0
        text = capsys.readouterr().out
        assert main(["env", "--json"]) == 0
        info = json.loads(capsys.readouterr().out)
    return text, info


def test_a_plugin_outside_its_core_range_is_listed_incompatible(make_distribution, capsys):
    make_distribution(
        "accelerate-old", {"old_plugin": BACKEND.replace("{name}", "old")}, {"old": "old_plugin"},
        requires=("accelerate-core<0.1",),
    )  # fmt: skip
    text, info = env_report(capsys)
    reason = (
        f"accelerate-old requires accelerate-core<0.1 but accelerate-core {__version__} is "
        "installed; upgrade one of them (pip install -U accelerate-old accelerate-core)"
    )
    assert f"    old: accelerate-old 1.0 [incompatible] {reason}" in text
    plugin = next(p for p in info["plugins"] if p["name"] == "old")
    assert (plugin["status"], plugin["error"]) == ("incompatible", reason)
    assert "old" not in info["backends"]
    assert "old_plugin" not in sys.modules  # checked from metadata, never imported
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginLoadWarning)
        with pytest.raises(PluginError, match=r"requires accelerate-core<0\.1"):
            Accelerator(backend="old", cpu=True)


def test_a_plugin_with_hook_arguments_this_core_lacks_is_incompatible_not_a_crash(
    make_distribution, capsys
):
    make_distribution(
        "accelerate-future", {"future_plugin": FUTURE_HOOK.replace("{name}", "future")},
        {"future": "future_plugin"},
    )  # fmt: skip
    with pytest.warns(PluginLoadWarning, match=r"'future' skipped: accelerate-future 1\.0"):
        accelerator = Accelerator(cpu=True)  # the other plugins still work
    assert accelerator.backend == "none"
    text, info = env_report(capsys)
    plugin = next(p for p in info["plugins"] if p["name"] == "future")
    assert plugin["status"] == "incompatible"
    assert "implements a hook with arguments that accelerate-core" in plugin["error"]
    assert "plan_from_the_future" in plugin["error"] and "accelerate_core_wrap" in plugin["error"]
    assert "    future: accelerate-future 1.0 [incompatible] " in text
    from accelerate_core.state import reset_state

    reset_state()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginLoadWarning)
        with pytest.raises(PluginError, match="plan_from_the_future"):
            Accelerator(backend="future", cpu=True)
