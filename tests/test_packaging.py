"""Every package ships what a user installs: license, py.typed, its own README, one version.

The full build of every sdist and wheel is ``scripts/check_packages.sh`` (run by
``scripts/test.sh``); these tests check the sources it builds from, and that its checks catch
a wheel that lacks what it must hold.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]


def load_checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "check_packages", ROOT / "scripts" / "check_packages.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


checker = load_checker()
PACKAGES = {package.distribution: package for package in checker.PACKAGES}
by_name = pytest.mark.parametrize("name", sorted(PACKAGES))


def test_every_package_of_the_repository_is_checked():
    folders = {
        str(path.parent.relative_to(ROOT))
        for path in ROOT.glob("**/pyproject.toml")
        if path.parent != ROOT and ".venv" not in path.parts and "build" not in path.parts
    }
    assert folders == {package.folder for package in checker.PACKAGES}


def test_the_license_is_the_apache_2_text_and_every_package_carries_it():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.lstrip().startswith("Apache License\n                           Version 2.0")
    assert "END OF TERMS AND CONDITIONS" in text
    for package in checker.PACKAGES:
        assert (ROOT / package.folder / "LICENSE").read_text(encoding="utf-8") == text, package


@by_name
def test_metadata_is_declared_once_in_pyproject(name):
    package = PACKAGES[name]
    project = tomllib.loads((ROOT / package.folder / "pyproject.toml").read_text())
    declared = project["project"]
    assert declared["name"] == name
    assert "version" not in declared and declared["dynamic"] == ["version"]
    attr = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    if name == "accelerate-core":
        assert attr == "accelerate_core.version.__version__"  # a records-level module
    else:
        assert attr == f"{package.import_name}.__version__"
    assert (declared["license"], declared["license-files"]) == ("Apache-2.0", ["LICENSE"])
    assert declared["readme"] == "README.md"
    assert "Typing :: Typed" in declared["classifiers"] and declared["keywords"]
    assert set(declared["urls"]) >= {"Homepage", "Source", "Changelog", "Issues"}


@by_name
def test_the_import_package_is_marked_typed(name):
    package = PACKAGES[name]
    folder = (ROOT / package.folder / package.version_file).parent
    assert (folder / "py.typed").is_file()


@by_name
def test_the_readme_is_a_description_not_a_pointer(name):
    readme = (ROOT / PACKAGES[name].folder / "README.md").read_text(encoding="utf-8")
    assert checker.description_problems(readme) == []


@by_name
def test_the_installed_version_is_the_source_version(name):
    package = PACKAGES[name]
    try:
        installed = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{name} is not installed in this environment (example plugins are not)")
    assert installed == checker.source_version(package)


def test_the_core_exports_the_version_of_its_version_module():
    import accelerate_core
    from accelerate_core import version

    assert (
        accelerate_core.__version__
        == version.__version__
        == importlib.metadata.version("accelerate-core")
    )


def fake_wheel(tmp_path: Path, package, drop: str = "", readme: str | None = None) -> Path:
    """A wheel of ``package`` as a correct build makes it, less the file named ``drop``."""
    version = checker.source_version(package)
    dist_info = f"{package.wheel_stem}-{version}.dist-info"
    description = readme or (ROOT / package.folder / "README.md").read_text(encoding="utf-8")
    metadata = (
        f"Metadata-Version: 2.4\nName: {package.distribution}\nVersion: {version}\n"
        "Summary: s\nKeywords: pytorch\nLicense-Expression: Apache-2.0\n"
        "Classifier: Programming Language :: Python :: 3 :: Only\nClassifier: Typing :: Typed\n"
        "Project-URL: Homepage, https://h\nProject-URL: Source, https://s\n"
        "Project-URL: Changelog, https://c\nProject-URL: Issues, https://i\n"
        "Description-Content-Type: text/markdown\nLicense-File: LICENSE\n\n" + description
    )
    files = {
        f"{package.import_name}/__init__.py": "",
        f"{package.import_name}/py.typed": "",
        f"{dist_info}/licenses/LICENSE": (ROOT / "LICENSE").read_text(encoding="utf-8"),
        f"{dist_info}/METADATA": metadata,
    }
    path = tmp_path / f"{package.wheel_stem}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            if name != drop.format(dist_info=dist_info):
                archive.writestr(name, text)
    return path


def test_the_wheel_check_passes_a_complete_wheel(tmp_path):
    core = PACKAGES["accelerate-core"]
    assert checker.wheel_problems(fake_wheel(tmp_path, core), core) == []


@pytest.mark.parametrize(
    ("drop", "readme", "problem"),
    [
        ("accelerate_core/py.typed", None, "no accelerate_core/py.typed"),
        (
            "{dist_info}/licenses/LICENSE",
            None,
            "no accelerate_core-0.1.0.dist-info/licenses/LICENSE",
        ),
        ("", "# accelerate-core\n\nSee the repository README.\n", "the long description is not"),
    ],
)
def test_the_wheel_check_names_what_is_missing(tmp_path, drop, readme, problem):
    core = PACKAGES["accelerate-core"]
    problems = checker.wheel_problems(fake_wheel(tmp_path, core, drop, readme), core)
    assert any(p.startswith(problem) for p in problems), problems


def test_a_readme_that_only_points_elsewhere_is_reported():
    pointer = "# accelerate-core\n\nSee the repository README for the quickstart.\n"
    assert checker.description_problems(pointer) == [
        f"README.md has {len(pointer)} characters (< 600): describe the package there, not only "
        "point elsewhere"
    ]


def test_relative_links_are_reported_because_pypi_breaks_them():
    text = "x" * checker.MIN_DESCRIPTION_CHARS + " [a](../README.md) [b](https://x) [c](#here)"
    assert checker.description_problems(text) == [
        "README.md has relative links, broken on PyPI: ../README.md"
    ]


def test_the_examples_run_as_an_installed_package():
    out = subprocess.run(
        [sys.executable, "-m", "accelerate_core_examples.quickstart", "--cpu", "--epochs", "1"],
        capture_output=True, text=True, timeout=120, cwd=ROOT / "tests",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "epoch 0: mean loss" in out.stdout
