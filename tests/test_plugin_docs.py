"""plugins/README.md stays the plugin authors' reference: every hook of hookspecs.py has its own
section, every record field its table row, and the complete minimal plugin it shows installs and
passes the conformance suite."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from doc_blocks import example, section

from accelerate_core import (
    BackendSpec,
    DeviceSpec,
    LaunchAlias,
    LaunchOption,
    PrecisionSpec,
    TrackerSpec,
    hookspecs,
)

README = Path(__file__).resolve().parents[1] / "plugins" / "README.md"
RECORDS = (BackendSpec, PrecisionSpec, DeviceSpec, TrackerSpec, LaunchOption, LaunchAlias)


def readme() -> str:
    return README.read_text(encoding="utf-8")


def hookspec_names() -> set[str]:
    """Every function of hookspecs.py marked as a hookspec (pluggy sets ``<project>_spec``)."""
    marker = f"{hookspecs.PROJECT_NAME}_spec"
    return {
        name
        for name, value in vars(hookspecs).items()
        if callable(value) and getattr(value, marker, None) is not None
    }


def test_every_hook_has_its_own_section():
    text = readme()
    names = hookspec_names()
    assert len(names) >= 20  # sanity: the marker attribute was found
    documented = set(re.findall(r"^#{2,5} `?(accelerate_core_\w+)`?\s*$", text, re.MULTILINE))
    assert names - documented == set(), "hooks without a section in plugins/README.md"
    assert documented - names == set(), "sections for hooks that hookspecs.py no longer has"
    for name in names:
        body = section(text, name)
        assert f"`{name}(" in body, f"the section of {name} does not show its signature"
        assert "Asked of" in body or "asked of" in body, f"{name}: say who is asked and when"


def test_every_hook_signature_matches_hookspecs():
    import inspect

    text = readme()
    for name in hookspec_names():
        parameters = list(inspect.signature(getattr(hookspecs, name)).parameters)
        shown = re.search(rf"`{name}\(([^)]*)\)", section(text, name))
        assert shown is not None, name
        documented = [p.strip() for p in shown.group(1).split(",") if p.strip()]
        assert documented == parameters, f"{name}: README shows {documented}, spec {parameters}"


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.__name__)
def test_every_record_field_has_a_row(record):
    body = section(readme(), f"`{record.__name__}`")
    fields = {f.name for f in dataclasses.fields(record)}
    rows = set(re.findall(r"^\| `(\w+)` \|", body, flags=re.MULTILINE))
    assert fields - rows == set(), f"{record.__name__} fields missing from its table"
    assert rows - fields == set(), f"{record.__name__} table rows for fields that do not exist"


def test_the_ownership_rules_and_version_contract_are_documented():
    text = readme()
    for phrase in (
        "Discovery hooks are asked of every plugin",
        "Family hooks are asked only of the owner",
        "`PluginConflictError` naming both distributions",
        "Broken plugins warn unless selected",
        "## The version contract",
        'dependencies = ["accelerate-core>=0.1,<0.2"]',
        "[incompatible]",
    ):
        assert phrase in text, phrase


def test_the_minimal_plugin_installs_and_passes_the_conformance_suite(make_distribution):
    tomllib = pytest.importorskip("tomllib")
    runner = pytest.importorskip("accelerate_conformance.runner")
    text = readme()
    project = tomllib.loads(example(text, "pyproject.toml"))["project"]
    ((entry_name, entry_value),) = project["entry-points"]["accelerate_core"].items()
    assert entry_value == "accelerate_simpleddp._plugin"
    core = [d for d in project["dependencies"] if d.startswith("accelerate-core")]
    assert core == ["accelerate-core>=0.1,<0.2"]
    root = make_distribution(
        project["name"], {"simpleddp_plugin": example(text, "_plugin.py")},
        {entry_name: "simpleddp_plugin"}, version=project["version"], requires=tuple(core),
    )  # fmt: skip

    from accelerate_core.plugins import collect_launch_options, get_plugin_manager

    manager = get_plugin_manager()
    assert manager.registry()["backend"]["simpleddp"].distribution == "accelerate-simpleddp 0.1.0"
    options = {o.name: o for o in collect_launch_options(manager)}
    assert options["simpleddp-find-unused-parameters"].option_key == "find_unused_parameters"

    result = runner.run_conformance(["--accelerate-backend", entry_name], python_path=[root])
    assert result.returncode == 0, result.output[-4000:]
    assert result.with_outcome("failed") == []
    assert "test_multi_process_ranks_hold_the_same_weights" in result.with_outcome("passed")
    assert "CONFORMS" in result.report
