"""The documentation site (docs/, mkdocs.yml) keeps its promises: every code block in it runs, or
says why it cannot run here; the API reference covers every public name; the pages do not copy
the READMEs they could include instead.

The build itself (strict: any warning fails it) is ``bash scripts/docs.sh``, which
``scripts/test.sh`` runs before the test suite."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml
from doc_blocks import DOCS, REPO, SNIPPET, Block, blocks, documentation_files, pages
from doc_setups import SETUPS

from accelerate_core.testing import LAUNCH_VARIABLES

PYTHON = {"python", "py"}
SHELL = {"bash", "sh", "shell"}
DATA = {"yaml": yaml.safe_load, "yml": yaml.safe_load, "toml": tomllib.loads, "json": json.loads}
RUN_OPTIONS = {"setup", "fresh", "processes"}
BLOCK_TIMEOUT = 240  # seconds; a block is a small CPU example: more means it hangs

# HF Accelerate 1.15's top-level modules: those that accelerate_core has too are its
# HF-compatible modules, and their public names are part of the documented API.
HF_MODULES = (
    "accelerator", "big_modeling", "checkpointing", "data_loader", "hooks", "inference",
    "launchers", "local_sgd", "logging", "memory_utils", "optimizer", "parallelism_config",
    "scheduler", "state", "tracking", "utils",
)  # fmt: skip
# The packages of the repository whose public names (their __all__) are documented too.
PACKAGES = ("accelerate_core", "accelerate_ddp", "accelerate_fsdp", "accelerate_deepspeed",
            "accelerate_fp8")  # fmt: skip


def expand(code: str) -> str:
    """A block's code with its ``--8<-- "file[:section]"`` lines replaced by what they include."""

    def include(match: re.Match[str]) -> str:
        text = (REPO / match.group("path")).read_text(encoding="utf-8")
        name = match.group("section")
        if name:
            start = re.search(rf"--8<-- \[start:{name}\].*\n", text)
            end = re.search(rf".*--8<-- \[end:{name}\]", text)
            assert start and end, f"no section {name!r} in {match.group('path')}"
            text = text[start.end() : end.start()]
        return text

    return SNIPPET.sub(include, code) if SNIPPET.search(code) else code


def all_blocks() -> list[Block]:
    return [block for path in documentation_files() for block in blocks(path)]


def runnable(languages: set[str]) -> list[Block]:
    return [b for b in all_blocks() if b.lang in languages and b.marker in (None, "run")]


# ---------------------------------------------------------------------------------------------
# every block is run or says why not


def test_every_code_block_runs_or_says_why_not():
    plugin_docs_test = (REPO / "tests" / "test_plugin_docs.py").read_text(encoding="utf-8")
    problems = []
    everything = all_blocks()
    assert len(everything) > 30  # sanity: the pages and the READMEs they include were read
    for block in everything:
        if block.marker == "not run":
            if len(block.value) < 8:
                problems.append(f"{block.where}: say why it cannot run here (not run: REASON)")
        elif block.marker == "example":
            if f'"{block.value}"' not in plugin_docs_test:
                problems.append(f"{block.where}: no test extracts example {block.value!r}")
        elif block.lang in PYTHON | SHELL:
            unknown = set(block.options()) - RUN_OPTIONS
            setup = block.options().get("setup")
            if unknown:
                problems.append(f"{block.where}: unknown run options {sorted(unknown)}")
            if setup is not None and setup not in SETUPS:
                problems.append(f"{block.where}: no setup {setup!r} in tests/doc_setups.py")
        elif block.lang not in DATA:
            problems.append(
                f"{block.where}: a ```{block.lang or '(no language)'} block is neither run nor "
                "parsed: mark it <!-- not run: REASON -->"
            )
    assert problems == []


def sandbox_environment(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A working directory that looks like the repository (its entries linked) but where new
    files land in ``tmp_path``; an environment with no launch settings and a private HOME."""
    work = tmp_path / "work"
    work.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in {".git", ".venv", "site"}:
            (work / entry.name).symlink_to(entry)
    home = tmp_path / "home"
    home.mkdir()
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in LAUNCH_VARIABLES
        and not name.startswith(("ACCELERATE_CORE_", "SLURM_", "PYTEST_"))
    }
    env.update(
        HOME=str(home),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_CONFIG_HOME=str(home / ".config"),
        OMP_NUM_THREADS="1",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    return work, env


def record(block: Block, code: str | None = None) -> dict[str, object]:
    return {
        "where": block.where,
        "file": str(block.path),
        "line": block.line,
        "code": expand(block.code) if code is None else code,
    }


def python_groups() -> dict[str, list[list[Block]]]:
    """Per file, its one-process Python blocks in runs of blocks sharing one process (a new run
    starts at ``run: fresh``)."""
    groups: dict[str, list[list[Block]]] = {}
    for block in runnable(PYTHON):
        if "processes" in block.options():
            continue
        runs = groups.setdefault(str(block.path.relative_to(REPO)), [])
        if not runs or "fresh" in block.options():
            runs.append([])
        runs[-1].append(block)
    return groups


def run_python(runs: list[list[Block]], tmp_path: Path) -> None:
    work, env = sandbox_environment(tmp_path)
    runner = Path(__file__).with_name("doc_runner.py")
    for number, run in enumerate(runs):
        records = []
        for block in run:
            setup = block.options().get("setup")
            if setup:
                records.append({"where": f"tests/doc_setups.py:{setup}", "file": "doc_setups.py",
                                "line": 0, "code": SETUPS[setup]})  # fmt: skip
            records.append(record(block))
        blocks_file = tmp_path / f"blocks{number}.json"
        blocks_file.write_text(json.dumps(records), encoding="utf-8")
        result = subprocess.run(
            [sys.executable, str(runner), str(blocks_file)], cwd=work, env=env,
            capture_output=True, text=True, timeout=BLOCK_TIMEOUT,
        )  # fmt: skip
        assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]


@pytest.mark.timeout(2 * BLOCK_TIMEOUT)
@pytest.mark.parametrize("file", sorted(python_groups()))
def test_python_blocks_run(file, tmp_path):
    run_python(python_groups()[file], tmp_path)


MULTI_PROCESS = [b for b in runnable(PYTHON) if "processes" in b.options()]


@pytest.mark.multiprocess
@pytest.mark.timeout(BLOCK_TIMEOUT + 30)
@pytest.mark.parametrize("block", MULTI_PROCESS, ids=lambda b: b.where)
def test_multi_process_python_blocks_run(block, tmp_path):
    work, env = sandbox_environment(tmp_path)
    setup = block.options().get("setup")
    script = tmp_path / "block.py"
    script.write_text((SETUPS[setup] if setup else "") + "\n" + expand(block.code))
    processes = block.options()["processes"]
    command = [Path(sys.executable).parent / "accel", "launch", "--cpu", "--num-processes",
               processes, str(script)]  # fmt: skip
    result = subprocess.run(
        command, cwd=work, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT
    )
    assert result.returncode == 0, f"{block.where}\n{(result.stdout + result.stderr)[-6000:]}"


@pytest.mark.timeout(BLOCK_TIMEOUT + 30)
@pytest.mark.parametrize("block", runnable(SHELL), ids=lambda b: b.where)
def test_shell_blocks_run(block, tmp_path):
    work, env = sandbox_environment(tmp_path)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", expand(block.code)], cwd=work, env=env,
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=BLOCK_TIMEOUT,
    )  # fmt: skip
    assert result.returncode == 0, f"{block.where}\n{(result.stdout + result.stderr)[-6000:]}"


@pytest.mark.parametrize("block", runnable(set(DATA)), ids=lambda b: b.where)
def test_data_blocks_parse(block):
    DATA[block.lang](expand(block.code))


# ---------------------------------------------------------------------------------------------
# the API reference


def public_modules() -> list[str]:
    """The modules whose ``__all__`` is the documented API: the packages and accelerate_core's
    HF-compatible modules (those of HF Accelerate's module names that exist here)."""
    names = list(PACKAGES)
    for name in HF_MODULES:
        module = f"accelerate_core.{name}"
        if importlib.util.find_spec(module) is not None:
            names.append(module)
    return names


def public_names(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    return list(getattr(module, "__all__", ()))


def reference_directives() -> list[str]:
    """The objects the site renders with mkdocstrings (``::: dotted.path`` lines)."""
    found = []
    for page in pages():
        text = page.read_text(encoding="utf-8")
        found += re.findall(r"^::: ([\w.]+)\s*$", text, flags=re.MULTILINE)
    return found


def resolve(path: str) -> object:
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(path)


def defined_in(module: object, name: str) -> bool:
    """Whether ``name`` is a public name that ``module`` defines rather than imports."""
    if name.startswith("_"):
        return False
    value = vars(module)[name]
    home = getattr(value, "__module__", None)
    return home == module.__name__ or (home is None and not inspect.ismodule(value))


def reference_options() -> dict[str, dict[str, object]]:
    """The ``options:`` given to each ``::: dotted.path`` line (the indented YAML under it)."""
    found = {}
    for page in pages():
        text = page.read_text(encoding="utf-8")
        for match in re.finditer(r"^::: ([\w.]+)[ \t]*\n((?:    .*\n)*)", text, re.MULTILINE):
            body = "\n".join(line[4:] for line in match.group(2).splitlines())
            found[match.group(1)] = (yaml.safe_load(body) or {}).get("options", {})
    return found


def test_every_hf_compatible_module_declares_its_public_names():
    missing = [m for m in public_modules() if not hasattr(importlib.import_module(m), "__all__")]
    missing = [m for m in missing if m.startswith("accelerate_core")]
    assert missing == [], "define __all__ (the public names the API reference documents)"


def test_the_api_reference_covers_every_public_name():
    directives = reference_directives()
    assert len(directives) > 20  # sanity: the reference pages were read
    rendered: dict[str, object] = {path: resolve(path) for path in directives}
    # A module rendered whole renders its public members as well: its __all__, else the names
    # without a leading underscore that it defines (mkdocstrings does not render what a module
    # only imports).
    for path, obj in list(rendered.items()):
        if inspect.ismodule(obj):
            names = public_names(path) or [n for n in vars(obj) if defined_in(obj, n)]
            for name in names:
                rendered[f"{path}.{name}"] = getattr(obj, name)
    # Rendered under another path (a re-export) counts when it is the same object; a plain value
    # (a string constant, a number) only under the same name, as equal values may be shared.
    by_identity = {id(obj): obj for obj in rendered.values()}
    names_of_values = {(id(obj), path.rsplit(".", 1)[-1]) for path, obj in rendered.items()}
    missing = []
    for module_name in public_modules():
        module = importlib.import_module(module_name)
        for name in public_names(module_name):
            obj = getattr(module, name)
            if f"{module_name}.{name}" in rendered:
                continue
            if isinstance(obj, (str, int, float, bool, type(None))):
                if (id(obj), name) in names_of_values:
                    continue
            elif id(obj) in by_identity:
                continue
            missing.append(f"{module_name}.{name}")
    assert missing == [], (
        "public names without an entry in the API reference: add a line `::: NAME` to the page "
        "of docs/reference/ where it belongs (mkdocstrings renders its docstring)"
    )


def test_classes_render_what_they_inherit_from_undocumented_bases():
    """A class whose public methods come from a base the reference does not render (a mixin such
    as the Accelerator's MeshMethods) must render them itself (``inherited_members: true``);
    mkdocstrings leaves inherited members out by default."""
    options = reference_options()
    rendered_ids = {id(resolve(path)) for path in options}
    missing = []
    for path, opts in options.items():
        cls = resolve(path)
        if not inspect.isclass(cls) or opts.get("inherited_members"):
            continue
        for base in cls.__mro__[1:]:
            ours = base.__module__.split(".")[0] in PACKAGES
            if not ours or id(base) in rendered_ids:
                continue
            inherited = [n for n in vars(base) if not n.startswith("_") and n not in vars(cls)]
            if inherited:
                missing.append(f"{path}: {base.__qualname__} gives {sorted(inherited)}")
    assert missing == [], "add `options: {inherited_members: true}` under these `:::` lines"


def test_every_documented_callable_has_a_docstring():
    undocumented = []
    for path in reference_directives():
        obj = resolve(path)
        if (inspect.isclass(obj) or inspect.isroutine(obj)) and not inspect.getdoc(obj):
            undocumented.append(path)
    assert undocumented == []


# ---------------------------------------------------------------------------------------------
# one text per fact


def test_pages_include_readmes_instead_of_copying_them():
    """No run of 6 or more identical non-blank lines of a README in a page: include the README
    (``--8<-- "path:section"``) or write the page's own text."""
    readmes = [p for p in REPO.rglob("README.md") if not {".venv", "site"} & set(p.parts)]
    readmes += [REPO / "CHANGELOG.md", REPO / "CONTRIBUTING.md"]
    window = 6

    def runs(path: Path) -> set[tuple[str, ...]]:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        lines = [ln for ln in lines if ln and not ln.startswith(("```", "<!--", "--8<--", "|--"))]
        return {tuple(lines[i : i + window]) for i in range(len(lines) - window + 1)}

    readme_runs = {run: path for path in readmes for run in runs(path)}
    copied = [
        f"{page.relative_to(DOCS)} repeats {readme_runs[run].relative_to(REPO)}: {run[0][:60]}"
        for page in pages()
        for run in runs(page)
        if run in readme_runs
    ]
    assert copied == []
