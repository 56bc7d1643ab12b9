"""plugins/README.md stays the plugin authors' reference: every hook of hookspecs.py has its own
section, every record field its table row, and every code block of the page runs.

The shell blocks run command by command in a workspace laid out like a checkout (copies of
``plugins/accelerate-conformance`` and ``plugins/accelerate-example-device``, the minimal plugin and
``train.py`` written from their blocks), with ``pip install`` standing for ``pip install --no-deps
--target SITE`` and ``SITE`` on ``PYTHONPATH`` (the page documents that way of trying a plugin), so
nothing is installed into the test environment. A ``# prints: TEXT`` comment must appear in the
command's output, ``# fails: TEXT`` in the output of a command that exits non-zero.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

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

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "plugins" / "README.md"
RECORDS = (BackendSpec, PrecisionSpec, DeviceSpec, TrackerSpec, LaunchOption, LaunchAlias)
# Every block of the page, by its <!-- example: NAME --> marker, and the test that runs it.
RUN_BY = {
    "pyproject.toml": "workspace (the minimal plugin is built from it)",
    "_plugin.py": "workspace",
    "train.py": "workspace",
    "install": "test_install_block_installs_and_launches_the_minimal_plugin",
    "conformance": "test_conformance_block_passes_the_minimal_plugin",
    "imports": "test_imports_block_runs",
    "version-range": "test_version_range_block_is_the_one_the_packages_declare",
    "incompatible": "test_incompatible_block_is_what_accel_env_prints",
    "device-launch": "test_device_launch_block_selects_the_example_device_everywhere",
    "vendorx_plugin.py": "test_vendorx_report_block_is_what_the_suite_prints",
    "vendorx-report": "test_vendorx_report_block_is_what_the_suite_prints",
    "conftest.py": "test_testing_helper_blocks_run_as_a_test_suite",
    "test_my_device.py": "test_testing_helper_blocks_run_as_a_test_suite",
    "mytracker_plugin.py": "test_mytracker_block_logs_through_its_library",
}
SHELL_SHIMS = """
pip() {
  [ "$1" = install ] || { echo "only 'pip install' is run here" >&2; return 2; }
  shift
  "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
    --target "$SITE" "$@"
}
accel() { "$PYTHON" -m accelerate_core "$@"; }
pytest() { "$PYTHON" -m pytest -p no:cacheprovider "$@"; }
"""


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


def blocks(text: str) -> list[tuple[str | None, str]]:
    """Every fenced block of the page as ``(marker name or None, body)``, in order."""
    found = []
    pattern = r"(?:<!-- example: (\S+) -->\s*)?^```\w*\n(.*?)^```"
    for match in re.finditer(pattern, text, flags=re.DOTALL | re.MULTILINE):
        found.append((match.group(1), match.group(2)))
    return found


def test_every_code_block_is_marked_and_run():
    found = blocks(readme())
    unmarked = [body.splitlines()[0] for name, body in found if name is None]
    assert unmarked == [], "code blocks without <!-- example: NAME --> (add one and run it here)"
    names = [name for name, _ in found]
    assert len(names) == len(set(names)), f"example names used twice: {names}"
    assert set(names) == set(RUN_BY), "RUN_BY must name exactly the page's blocks"
    source = Path(__file__).read_text()
    for name, runner in RUN_BY.items():
        assert f"def {runner.split()[0]}" in source, f"{name}: no test {runner}"


# --------------------------------------------------------------------------- the workspace


def clean_environment(site: Path) -> dict[str, str]:
    """This environment without launch settings, with only ``site`` on ``PYTHONPATH``."""
    dropped = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
               "MASTER_PORT")  # fmt: skip
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ACCELERATE_CORE_", "PYTEST_", "SLURM_")) and k not in dropped
    }
    return {**env, "PYTHONPATH": str(site), "PYTHON": sys.executable, "SITE": str(site)}


class Workspace:
    """A folder laid out like a checkout, where the page's shell blocks run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.site = root / "site"
        self.site.mkdir()
        ignore = shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "tests")
        for package in ("accelerate-conformance", "accelerate-example-device"):
            shutil.copytree(ROOT / "plugins" / package, root / "plugins" / package, ignore=ignore)
        text = readme()
        plugin = root / "accelerate-simpleddp"
        (plugin / "src" / "accelerate_simpleddp").mkdir(parents=True)
        (plugin / "pyproject.toml").write_text(example(text, "pyproject.toml"))
        (plugin / "src" / "accelerate_simpleddp" / "__init__.py").write_text("")
        (plugin / "src" / "accelerate_simpleddp" / "_plugin.py").write_text(
            example(text, "_plugin.py")
        )
        (root / "train.py").write_text(example(text, "train.py"))

    def run(self, name: str, timeout: float = 600) -> list[dict[str, Any]]:
        """Run each command of the block ``name``; check its ``# prints:``/``# fails:``."""
        results = []
        for line in example(readme(), name).splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            done = subprocess.run(
                ["bash", "-c", SHELL_SHIMS + line], cwd=self.root, capture_output=True,
                text=True, timeout=timeout, env=clean_environment(self.site),
                start_new_session=True,  # its launches and their signals stay in their group
            )  # fmt: skip
            output = done.stdout + done.stderr
            results.append({"command": line, "returncode": done.returncode, "output": output})
            expected = re.search(r"# (prints|fails): (.*)$", line)
            if expected is None or expected.group(1) == "prints":
                assert done.returncode == 0, f"{line}\n{output[-4000:]}"
            else:
                assert done.returncode != 0, f"{line} should fail\n{output[-4000:]}"
            if expected is not None:
                assert expected.group(2).strip() in output, f"{line}\n{output[-4000:]}"
        return results


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("checkout"))


@pytest.fixture(scope="module")
def minimal_plugin_installed(workspace: Workspace) -> list[dict[str, Any]]:
    return workspace.run("install")


@pytest.fixture(scope="module")
def example_device_installed(workspace: Workspace) -> list[dict[str, Any]]:
    return workspace.run("device-launch")


# --------------------------------------------------------------------------- the blocks


# The blocks install packages and start launches: minutes on a busy 2-core machine. pytest-timeout
# counts a module fixture's set-up against the first test that uses it.
BLOCK_TIMEOUT = pytest.mark.timeout(900)


@BLOCK_TIMEOUT
@pytest.mark.multiprocess
def test_install_block_installs_and_launches_the_minimal_plugin(minimal_plugin_installed):
    launch = minimal_plugin_installed[-1]["output"]
    assert "rank 0: backend simpleddp, device cpu" in launch
    assert "rank 1: backend simpleddp, device cpu" in launch


def test_the_minimal_plugin_registers_its_backend_and_launch_option(make_distribution):
    tomllib = pytest.importorskip("tomllib")
    text = readme()
    project = tomllib.loads(example(text, "pyproject.toml"))["project"]
    ((entry_name, entry_value),) = project["entry-points"]["accelerate_core"].items()
    assert entry_value == "accelerate_simpleddp._plugin"
    core = [d for d in project["dependencies"] if d.startswith("accelerate-core")]
    assert core == ["accelerate-core>=0.1,<0.2"]
    make_distribution(
        project["name"], {"simpleddp_plugin": example(text, "_plugin.py")},
        {entry_name: "simpleddp_plugin"}, version=project["version"], requires=tuple(core),
    )  # fmt: skip

    from accelerate_core.plugins import collect_launch_options, get_plugin_manager

    manager = get_plugin_manager()
    assert manager.registry()["backend"]["simpleddp"].distribution == "accelerate-simpleddp 0.1.0"
    options = {o.name: o for o in collect_launch_options(manager)}
    assert options["simpleddp-find-unused-parameters"].option_key == "find_unused_parameters"


@BLOCK_TIMEOUT
@pytest.mark.multiprocess
def test_conformance_block_passes_the_minimal_plugin(workspace, minimal_plugin_installed):
    (install, suite) = workspace.run("conformance")
    assert install["returncode"] == 0
    assert "PASSED   multi process ranks hold the same weights" in suite["output"]
    assert "CONFORMS: 0 of" in suite["output"]


def test_imports_block_runs():
    exec(compile(example(readme(), "imports"), "imports", "exec"), {})


def test_version_range_block_is_the_one_the_packages_declare():
    tomllib = pytest.importorskip("tomllib")
    (line,) = example(readme(), "version-range").strip().splitlines()
    declared = tomllib.loads(line)["dependencies"]
    minimal = tomllib.loads(example(readme(), "pyproject.toml"))["project"]["dependencies"]
    device = ROOT / "plugins" / "accelerate-example-device" / "pyproject.toml"
    packaged = tomllib.loads(device.read_text())["project"]["dependencies"]
    assert set(declared) <= set(minimal) and set(declared) <= set(packaged)


def test_incompatible_block_is_what_accel_env_prints(make_distribution, capsys):
    from accelerate_core.cli.main import main

    make_distribution(
        "accelerate-example-device", {"example_device_stub": "raise ImportError('not imported')"},
        {"example": "example_device_stub"}, version="0.1.0", requires=("accelerate-core>=9",),
    )  # fmt: skip
    with pytest.warns(UserWarning, match="skipped"):
        assert main(["env"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    shown = " ".join(example(readme(), "incompatible").split())
    assert shown in printed


@BLOCK_TIMEOUT
@pytest.mark.multiprocess
def test_device_launch_block_selects_the_example_device_everywhere(example_device_installed):
    by_command = {r["command"].split("#")[0].strip(): r for r in example_device_installed}
    launch = by_command["accel launch --num-processes 2 --device example train.py"]["output"]
    assert "rank 0: backend ddp, device example" in launch
    dry_run = by_command["accel launch --dry-run --device example train.py"]["output"]
    assert re.search(r"^  device: +example +# command line$", dry_run, flags=re.MULTILINE)
    refused = by_command["accel launch --cpu --device example train.py"]
    assert refused["returncode"] == 2
    assert refused["output"].strip() == (
        "accel launch: error: --cpu contradicts --device 'example' (the CPU is the device "
        "'cpu'); drop the cpu setting to train on 'example', or select the device cpu"
    )
    suite = by_command["pytest --accelerate-device example --pyargs accelerate_conformance"]
    for check in ("device seeding is reproducible", "device rng state round trips through a "
                  "checkpoint", "device memory stats have the documented shape",
                  "device is synchronized before save state reads it"):  # fmt: skip
        assert f"PASSED   {check}" in suite["output"]


@pytest.mark.timeout(600)
def test_vendorx_report_block_is_what_the_suite_prints(make_distribution):
    runner = pytest.importorskip("accelerate_conformance.runner")
    root = make_distribution(
        "accelerate-vendorx", {"vendorx_plugin": example(readme(), "vendorx_plugin.py")},
        {"vendorx": "vendorx_plugin"}, requires=("accelerate-core>=0.1,<0.2",),
    )  # fmt: skip
    result = runner.run_conformance(["--accelerate-device", "vendorx"], python_path=[root])
    assert result.returncode == 1, result.output[-3000:]
    report = [line.rstrip() for line in result.report.splitlines()]
    position = 0
    skipping = False
    for line in example(readme(), "vendorx-report").splitlines():
        if line == "...":
            skipping = True
            continue
        if skipping:
            assert line in report[position:], f"{line!r} not in the report:\n{result.report}"
            position = report.index(line, position)
        else:
            assert report[position] == line, f"{line!r} != {report[position]!r}\n{result.report}"
        position += 1
        skipping = False


@BLOCK_TIMEOUT
@pytest.mark.multiprocess
def test_testing_helper_blocks_run_as_a_test_suite(workspace, example_device_installed):
    tests = workspace.root / "mytests"
    tests.mkdir()
    (tests / "conftest.py").write_text(example(readme(), "conftest.py"))
    (tests / "test_my_device.py").write_text(example(readme(), "test_my_device.py"))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(tests)],
        cwd=tests, capture_output=True, text=True, timeout=300,
        env=clean_environment(workspace.site), start_new_session=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 passed" in done.stdout


# A stand-in for the tracker's library: records what the tracker hands it.
MYTRACKER_LIB = """
RUNS = []


class Run:
    def __init__(self, name, **kwargs):
        self.name, self.kwargs, self.logged, self.closed = name, kwargs, [], False
        RUNS.append(self)

    def log(self, values, step=None):
        self.logged.append((step, values))

    def close(self):
        self.closed = True
"""


def test_mytracker_block_logs_through_its_library(make_distribution):
    import importlib

    from accelerate_core import Accelerator

    make_distribution(
        "accelerate-mytracker",
        {"mytracker_plugin": example(readme(), "mytracker_plugin.py"),
         "mytracker_lib": MYTRACKER_LIB},
        {"mytracker": "mytracker_plugin"}, requires=("accelerate-core>=0.1,<0.2",),
    )  # fmt: skip
    accelerator = Accelerator(cpu=True, log_with="mytracker")
    accelerator.init_trackers("my-run", init_kwargs={"mytracker": {"entity": "team"}})
    accelerator.log({"loss": 0.5}, step=3)
    accelerator.end_training()
    (run,) = importlib.import_module("mytracker_lib").RUNS
    assert (run.name, run.kwargs, run.logged, run.closed) == (
        "my-run", {"entity": "team"}, [(3, {"loss": 0.5})], True
    )  # fmt: skip
