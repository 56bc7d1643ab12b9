"""Build every package of the repository (sdist and wheel) and check what a user would install.

Run by ``scripts/check_packages.sh`` (and so by ``scripts/test.sh``, what CI runs). The tracked
files are copied to a temporary folder first, so the build sees what a fresh clone holds and
no build leftovers of the working tree. Each package is built with ``python -m build
--no-isolation`` (setuptools comes from the project's ``.venv``: no download, a few seconds per
package); the wheel is built from the sdist, so a file missing from the sdist fails too.

Checked per package: ``twine check --strict``; the wheel holds ``py.typed`` in its import
package and the Apache-2.0 ``LICENSE`` identical to the repository's; METADATA carries the
package's own README as long description (markdown, long enough to be one, no relative links
that break on PyPI), classifiers (``Typing :: Typed`` among them), keywords, project URLs, the
license expression and the version of the package's ``__version__``; the wheel ships no tests
or byte code; the sdist holds LICENSE, README.md and pyproject.toml. Across packages: each
plugin's ``accelerate-core`` range admits the core being built. Last, mypy type-checks a small
user script against the installed core wheel: it must read the annotations (report the one
planted error) and never say "missing library stubs or py.typed marker".

    .venv/bin/python scripts/check_packages.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import ast
import email.parser
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
MIN_DESCRIPTION_CHARS = 600  # the README a package once pointed to instead was 281 characters
REQUIRED_CLASSIFIERS = ("Typing :: Typed", "Programming Language :: Python :: 3 :: Only")
RELATIVE_LINK = re.compile(r"\]\((?!https?://|mailto:|#)([^)\s]+)\)")


@dataclass(frozen=True)
class Package:
    """A distribution of the repository: its folder, import package and version file."""

    folder: str
    distribution: str
    import_name: str
    version_file: str  # relative to folder: the one place the version is written

    @property
    def wheel_stem(self) -> str:
        return self.distribution.replace("-", "_")


PACKAGES = (
    Package("core", "accelerate-core", "accelerate_core", "src/accelerate_core/version.py"),
    Package("accelerate_ddp", "accelerate-ddp", "accelerate_ddp", "src/accelerate_ddp/__init__.py"),
    Package(
        "accelerate_fsdp", "accelerate-fsdp", "accelerate_fsdp", "src/accelerate_fsdp/__init__.py"
    ),
    Package(
        "accelerate_deepspeed",
        "accelerate-deepspeed",
        "accelerate_deepspeed",
        "src/accelerate_deepspeed/__init__.py",
    ),
    Package("accelerate_fp8", "accelerate-fp8", "accelerate_fp8", "src/accelerate_fp8/__init__.py"),
    Package(
        "plugins/accelerate-conformance",
        "accelerate-conformance",
        "accelerate_conformance",
        "src/accelerate_conformance/__init__.py",
    ),
    Package(
        "plugins/accelerate-example-device",
        "accelerate-example-device",
        "accelerate_example_device",
        "src/accelerate_example_device/__init__.py",
    ),
    Package("examples", "accelerate-core-examples", "accelerate_core_examples", "__init__.py"),
)

USER_SCRIPT = """\
import torch
from accelerate_core import Accelerator, PartialState, set_seed

accelerator = Accelerator(cpu=True)
device: torch.device = accelerator.device
index: int = PartialState().process_index
set_seed("not an int")  # the one error mypy must report: it proves the annotations are read
"""
USER_EXPECTED_ERROR = 'Argument 1 to "set_seed" has incompatible type "str"; expected "int"'
# The user check is about our package: torch is not analysed (it would cost ~20 s, not ~3 s).
USER_MYPY_CONFIG = "[mypy]\n[mypy-torch.*]\nfollow_imports = skip\nfollow_untyped_imports = True\n"


def source_version(package: Package, root: Path = ROOT) -> str:
    """``__version__`` of the package's version file, read without importing it."""
    path = root / package.folder / package.version_file
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets
        ):
            value = ast.literal_eval(node.value)
            if isinstance(value, str):
                return value
    raise ValueError(f"{path} assigns no __version__ string")


def description_problems(readme: str) -> list[str]:
    """Why ``readme`` would not do as a package's long description on PyPI."""
    problems = []
    if len(readme) < MIN_DESCRIPTION_CHARS:
        problems.append(
            f"README.md has {len(readme)} characters (< {MIN_DESCRIPTION_CHARS}): describe the "
            "package there, not only point elsewhere"
        )
    links = RELATIVE_LINK.findall(readme)
    if links:
        problems.append(f"README.md has relative links, broken on PyPI: {', '.join(links)}")
    return problems


def read_metadata(text: str) -> Message:
    return email.parser.Parser().parsestr(text)


def wheel_problems(wheel: Path, package: Package, root: Path = ROOT) -> list[str]:
    """What is missing or wrong in ``wheel`` of ``package``; empty when it is complete."""
    license_text = (root / "LICENSE").read_text(encoding="utf-8")
    readme = (root / package.folder / "README.md").read_text(encoding="utf-8")
    version = source_version(package, root)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        dist_info = f"{package.wheel_stem}-{version}.dist-info"
        problems = []
        if f"{package.import_name}/py.typed" not in names:
            problems.append(f"no {package.import_name}/py.typed (type checkers ignore the package)")
        license_name = f"{dist_info}/licenses/LICENSE"
        if license_name not in names:
            problems.append(f"no {license_name}")
        elif archive.read(license_name).decode("utf-8") != license_text:
            problems.append(f"{license_name} differs from the repository's LICENSE")
        stray = [
            n
            for n in names
            if not n.startswith((f"{package.import_name}/", f"{dist_info}/"))
            or "/tests/" in n
            or n.endswith((".pyc", ".pyo"))
            or "__pycache__" in n
        ]
        if stray:
            problems.append(f"files that do not belong in the wheel: {', '.join(stray)}")
        try:
            metadata = read_metadata(archive.read(f"{dist_info}/METADATA").decode("utf-8"))
        except KeyError:
            return [*problems, f"no {dist_info}/METADATA (is the version {version}?)"]
    problems += metadata_problems(metadata, package, readme, version)
    return problems


def metadata_problems(metadata: Message, package: Package, readme: str, version: str) -> list[str]:
    problems = []
    if metadata["Name"] != package.distribution:
        problems.append(f"Name is {metadata['Name']!r}, expected {package.distribution!r}")
    if metadata["Version"] != version:
        problems.append(
            f"Version is {metadata['Version']}, but {package.version_file} says {version}"
        )
    if metadata["License-Expression"] != "Apache-2.0":
        problems.append(f"License-Expression is {metadata['License-Expression']!r}")
    if metadata["License-File"] != "LICENSE":
        problems.append(f"License-File is {metadata['License-File']!r}")
    if not metadata["Summary"]:
        problems.append("no Summary")
    if metadata["Description-Content-Type"] != "text/markdown":
        problems.append(f"Description-Content-Type is {metadata['Description-Content-Type']!r}")
    description = metadata.get_payload()
    if not isinstance(description, str) or description.strip() != readme.strip():
        problems.append("the long description is not the package's README.md")
    problems += description_problems(readme)
    classifiers = metadata.get_all("Classifier") or []
    missing = [c for c in REQUIRED_CLASSIFIERS if c not in classifiers]
    if missing:
        problems.append(f"classifiers missing: {', '.join(missing)}")
    if not metadata["Keywords"]:
        problems.append("no Keywords")
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL") or [])
    for label in ("Homepage", "Source", "Changelog", "Issues"):
        if label not in urls:
            problems.append(f"no Project-URL {label}")
    return problems


def sdist_problems(sdist: Path, package: Package, root: Path = ROOT) -> list[str]:
    version = source_version(package, root)
    top = f"{package.wheel_stem}-{version}"
    with tarfile.open(sdist) as archive:
        names = set(archive.getnames())
    wanted = [f"{top}/{name}" for name in ("LICENSE", "README.md", "pyproject.toml", "PKG-INFO")]
    return [f"sdist has no {name}" for name in wanted if name not in names]


def core_range_problems(wheels: dict[str, Path], core_version: str) -> list[str]:
    """Each plugin's ``accelerate-core`` requirement must admit the core built alongside it."""
    problems = []
    for distribution, wheel in sorted(wheels.items()):
        stem = wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1]
        with zipfile.ZipFile(wheel) as archive:
            text = archive.read(f"{stem}.dist-info/METADATA").decode("utf-8")
        for line in read_metadata(text).get_all("Requires-Dist") or []:
            requirement = Requirement(line)
            if requirement.name != "accelerate-core" or requirement.marker:
                continue
            if Version(core_version) not in requirement.specifier:
                problems.append(
                    f"{distribution} requires {requirement} but the core is {core_version}"
                )
    return problems


def copy_tree(destination: Path) -> Path:
    """The files a fresh clone would hold (tracked plus new, not ignored), copied."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.decode()  # fmt: skip
    for name in filter(None, listing.split("\0")):
        source = ROOT / name
        if source.is_file():  # a deleted but still tracked file is skipped
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def build_warnings(log: str) -> list[str]:
    """The warnings of a build log: WARNING lines and the text of setuptools' ``!!`` boxes."""
    found: list[str] = []
    in_box = False
    for line in log.splitlines():
        text = line.strip()
        if text == "!!":
            in_box = not in_box
        elif (in_box and text and not text.startswith("*")) or re.search(r"WARNING|Warning", text):
            found.append(text)
    return list(dict.fromkeys(found))  # each once, in order


def build(tree: Path, package: Package, out: Path) -> tuple[Path, Path, list[str]]:
    """sdist and wheel (the wheel built from the sdist) of ``package``, and the warnings."""
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out),
         str(tree / package.folder)],
        capture_output=True, text=True,
    )  # fmt: skip
    log = result.stdout + result.stderr
    if result.returncode != 0:
        raise SystemExit(f"building {package.distribution} failed:\n{log}")
    version = source_version(package, tree)
    stem = f"{package.wheel_stem}-{version}"
    return out / f"{stem}.tar.gz", out / f"{stem}-py3-none-any.whl", build_warnings(log)


def mypy_user_problems(core_wheel: Path, workdir: Path) -> list[str]:
    """mypy on a user's script, with the core installed from its wheel next to our torch."""
    env = workdir / "user-env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-deps", "--disable-pip-version-check", str(core_wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.check_output([python, "-c", purelib], text=True).strip())
    ours = subprocess.check_output([sys.executable, "-c", purelib], text=True).strip()
    # torch and the other dependencies come from the project's environment (after the wheel).
    (site / "zz_project_deps.pth").write_text(ours + "\n", encoding="utf-8")
    script = workdir / "user_script.py"
    script.write_text(USER_SCRIPT, encoding="utf-8")
    config = workdir / "mypy.ini"
    config.write_text(USER_MYPY_CONFIG, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config), "--python-executable",
         str(python), "--no-incremental", "--cache-dir", str(workdir / "mypy-cache"),
         "--no-error-summary", "--hide-error-context", str(script)],
        capture_output=True, text=True, cwd=workdir,
    )  # fmt: skip
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    expected = [line for line in errors if USER_EXPECTED_ERROR in line]
    if len(expected) == 1 and len(errors) == 1:
        return []
    return [
        "mypy on a user script against the core wheel should report exactly the planted "
        f"set_seed error; it said:\n{result.stdout}{result.stderr}"
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="leave the built files in this folder")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="check-packages-") as scratch:
        work = Path(scratch)
        tree = copy_tree(work / "tree")
        dist = args.keep or work / "dist"
        dist.mkdir(parents=True, exist_ok=True)
        problems: list[str] = []
        wheels: dict[str, Path] = {}
        for package in PACKAGES:
            sdist, wheel, warnings = build(tree, package, dist)
            wheels[package.distribution] = wheel
            problems += [f"building {package.distribution}: {w}" for w in warnings]
            problems += [f"{wheel.name}: {p}" for p in wheel_problems(wheel, package, tree)]
            problems += [f"{sdist.name}: {p}" for p in sdist_problems(sdist, package, tree)]
        built = time.perf_counter()
        twine = subprocess.run(
            [sys.executable, "-m", "twine", "check", "--strict", *sorted(map(str, dist.iterdir()))],
            capture_output=True, text=True,
        )  # fmt: skip
        if twine.returncode != 0:
            problems.append(f"twine check --strict failed:\n{twine.stdout}{twine.stderr}")
        core_version = source_version(PACKAGES[0], tree)
        problems += core_range_problems(wheels, core_version)
        problems += mypy_user_problems(wheels["accelerate-core"], work)
    seconds = time.perf_counter() - start
    if problems:
        print("package check FAILED:\n- " + "\n- ".join(problems), file=sys.stderr)
        return 1
    print(
        f"package check: {len(PACKAGES)} packages built (sdist + wheel) and checked in "
        f"{seconds:.1f} s (builds {built - start:.1f} s); twine check --strict passed; "
        "mypy reads the core wheel's annotations"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
