"""Plugin discovery through real entry points: the installed core and fake distributions."""

from __future__ import annotations

import sys
import warnings

import pytest
import torch

from accelerate_core import (
    Accelerator,
    PluginConflictError,
    PluginError,
    PluginNotInstalledError,
)
from accelerate_core.plugins import (
    BUILTIN_LABEL,
    PluginLoadWarning,
    PluginManager,
    get_plugin_manager,
    installed_entry_points,
    set_plugin_manager,
)

BACKEND_PLUGIN = """
from accelerate_core import BackendSpec, hookimpl

CALLS = []

@hookimpl
def accelerate_core_backends():
    return [BackendSpec("{name}", "test backend", distributed=False)]

@hookimpl
def accelerate_core_wrap(request, context):
    CALLS.append(("wrap", len(request.models), context.backend))
    return None
"""


def entry_point(manager, name: str):
    return next(r for r in manager.entry_points if r.name == name)


def backend_plugin(name: str) -> str:
    return BACKEND_PLUGIN.replace("{name}", name)


def test_builtins_are_registered_through_the_hooks(core_only):
    manager = get_plugin_manager()
    registry = manager.registry()
    assert manager.names("backend") == ["none"]
    assert manager.names("precision") == ["bf16", "fp16", "no"]
    assert {"cpu", "cuda"} <= set(manager.names("device"))
    assert registry["backend"]["none"].distribution == BUILTIN_LABEL
    assert manager.conflicts == []


def test_installed_distribution_is_discovered_and_only_the_owner_is_asked(make_distribution):
    make_distribution(
        "accelerate-fake", {"fake_plugin": backend_plugin("fake")}, {"fake": "fake_plugin"}
    )
    make_distribution(
        "accelerate-other", {"other_plugin": backend_plugin("other")}, {"other": "other_plugin"}
    )
    assert {"fake", "other"} <= {r.name for r in installed_entry_points()}

    accelerator = Accelerator(backend="fake", cpu=True)
    accelerator.prepare(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))

    assert accelerator.backend == "fake"
    assert sys.modules["fake_plugin"].CALLS == [("wrap", 2, "fake")]
    assert sys.modules["other_plugin"].CALLS == []  # not selected: never asked
    registry = get_plugin_manager().registry()
    assert registry["backend"]["fake"].distribution == "accelerate-fake 1.0"


def test_in_repo_backend_not_installed_names_the_pip_command():
    set_plugin_manager(PluginManager(load_entry_points=False))  # as if accelerate-fsdp were absent
    with pytest.raises(PluginNotInstalledError) as info:
        Accelerator(backend="fsdp")
    assert "backend 'fsdp' is not installed; pip install accelerate-fsdp" in str(info.value)


def test_unknown_backend_lists_the_installed_ones():
    with pytest.raises(PluginNotInstalledError, match=r"backend 'nope' is not installed.*none"):
        Accelerator(backend="nope")


def test_two_distributions_with_one_name_is_an_error_naming_both(make_distribution):
    make_distribution("accelerate-a", {"dup_a": backend_plugin("dup")}, {"dup-a": "dup_a"})
    make_distribution("accelerate-b", {"dup_b": backend_plugin("dup")}, {"dup-b": "dup_b"}, "2.0")
    with pytest.raises(PluginConflictError) as info:
        Accelerator(cpu=True)
    message = str(info.value)
    assert "backend 'dup' is registered by both accelerate-a 1.0 and accelerate-b 2.0" in message


def test_a_plugin_cannot_take_over_a_builtin_name(make_distribution):
    make_distribution("accelerate-sneaky", {"sneaky": backend_plugin("none")}, {"sneaky": "sneaky"})
    with pytest.raises(
        PluginConflictError,
        match=r"'none' .* accelerate-core \(built-in\) and "
        r"accelerate-sneaky 1.0",
    ):
        Accelerator(cpu=True)


def test_broken_plugin_warns_when_not_selected(make_distribution):
    make_distribution(
        "accelerate-broken",
        {"broken_plugin": "raise ImportError('no such lib')"},
        {"broken": "broken_plugin"},
    )
    with pytest.warns(
        PluginLoadWarning,
        match=r"'broken' from accelerate-broken 1.0 failed to "
        r"load.*ImportError: no such lib",
    ):
        accelerator = Accelerator(cpu=True)
    assert accelerator.backend == "none"
    record = entry_point(get_plugin_manager(), "broken")
    assert (record.status, record.error) == ("failed", "ImportError: no such lib")


def test_broken_plugin_raises_when_selected(make_distribution):
    make_distribution(
        "accelerate-broken",
        {"broken_plugin": "raise ImportError('no such lib')"},
        {"broken": "broken_plugin"},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginLoadWarning)
        with pytest.raises(PluginError) as info:
            Accelerator(backend="broken", cpu=True)
    assert "plugin 'broken' from accelerate-broken 1.0 could not be loaded" in str(info.value)
    assert isinstance(info.value.__cause__, ImportError)


def test_autoload_switch_and_allow_list(make_distribution, monkeypatch):
    make_distribution(
        "accelerate-fake", {"fake_plugin": backend_plugin("fake")}, {"fake": "fake_plugin"}
    )
    monkeypatch.setenv("ACCELERATE_CORE_DISABLE_PLUGIN_AUTOLOAD", "1")
    with pytest.raises(PluginNotInstalledError, match="add 'fake' to ACCELERATE_CORE_PLUGINS"):
        Accelerator(backend="fake", cpu=True)
    assert "fake_plugin" not in sys.modules
    assert entry_point(get_plugin_manager(), "fake").status == "disabled"

    from accelerate_core.plugins import reset_plugin_manager
    from accelerate_core.state import reset_state

    reset_state()
    reset_plugin_manager()
    monkeypatch.setenv("ACCELERATE_CORE_PLUGINS", "fake")
    assert Accelerator(backend="fake", cpu=True).backend == "fake"


def test_plugin_importing_a_heavy_library_at_load_is_warned(make_distribution):
    make_distribution(
        "accelerate-heavy",
        {
            "deepspeed": "LOADED = True",
            "heavy_plugin": "import deepspeed\n" + backend_plugin("heavy"),
        },
        {"heavy": "heavy_plugin"},
    )
    sys.modules.pop("deepspeed", None)
    with pytest.warns(PluginLoadWarning, match="'heavy' imported deepspeed when its entry point"):
        get_plugin_manager()


def test_incompatible_core_requirement_is_refused_before_import(make_distribution):
    make_distribution(
        "accelerate-old",
        {"old_plugin": backend_plugin("old")},
        {"old": "old_plugin"},
        requires=("accelerate-core<0.1",),
    )
    with pytest.warns(PluginLoadWarning, match="accelerate-old requires accelerate-core<0.1"):
        manager = get_plugin_manager()
    assert "old_plugin" not in sys.modules
    assert entry_point(manager, "old").status == "incompatible"
    expected = r"requires accelerate-core<0\.1 but accelerate-core 0\.1\.0"
    with pytest.raises(PluginError, match=expected):
        Accelerator(backend="old", cpu=True)


def test_compatible_core_requirement_loads(make_distribution):
    make_distribution(
        "accelerate-new",
        {"new_plugin": backend_plugin("new")},
        {"new": "new_plugin"},
        requires=("accelerate-core>=0.1,<1",),
    )
    assert Accelerator(backend="new", cpu=True).backend == "new"


def test_wrong_record_type_is_an_error_naming_the_plugin(make_distribution):
    source = (
        "from accelerate_core import hookimpl\n"
        "@hookimpl\n"
        "def accelerate_core_backends():\n"
        "    return ['ddp']\n"
    )
    make_distribution("accelerate-bad", {"bad_plugin": source}, {"bad": "bad_plugin"})
    with pytest.raises(PluginError, match=r"accelerate-bad 1.0\) returned 'ddp'.*BackendSpec"):
        Accelerator(cpu=True)


def test_wrap_that_drops_an_object_is_an_error(make_distribution):
    source = backend_plugin("lossy").replace(
        "return None", "from accelerate_core import PrepareRequest\n    return PrepareRequest()"
    )
    make_distribution("accelerate-lossy", {"lossy_plugin": source}, {"lossy": "lossy_plugin"})
    accelerator = Accelerator(backend="lossy", cpu=True)
    with pytest.raises(PluginError, match="returned 0 models for 1; it must keep every position"):
        accelerator.prepare(torch.nn.Linear(2, 2))
