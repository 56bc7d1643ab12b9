"""The import graph of the product code: layered, acyclic, and the core knows no backend.

Every import statement counts, wherever it is written: at module level, inside a function, under
``if TYPE_CHECKING``. A module may import its own layer or a lower one (``LAYERS``), never a
higher one, and no two modules may import each other, directly or around a circle. Imports of a
package's ``__init__`` count as imports of that module; the implicit import of a parent package
that Python performs does not (it is not written anywhere).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = "accelerate_core"
BACKENDS = {
    "accelerate_ddp": ROOT / "accelerate_ddp" / "src",
    "accelerate_fsdp": ROOT / "accelerate_fsdp" / "src",
    "accelerate_deepspeed": ROOT / "accelerate_deepspeed" / "src",
    "accelerate_fp8": ROOT / "accelerate_fp8" / "src",
}
PLUGIN_PACKAGES = {"accelerate_conformance", "accelerate_example_device", *BACKENDS}

# The core's layers, lowest first (DESIGN.md section 8). A module imports only its own layer or
# lower ones. A new module belongs in this table: put it where its imports say it is.
LAYERS: dict[str, int] = {}
for layer, modules in enumerate(
    [
        # records and primitives: no behaviour of the plugin system
        "errors specs version launch_options option_checks kwargs_handlers gradient_state ops "
        "memory checkpoint_io enums logger_type tracker_base tracker_values utils.tensor_files "
        "utils.offload utils.modeling utils.loading launch_aliases progress memory_formulas "
        "distributed_type utils.dataclasses utils.imports utils.constants utils.versions "
        "utils.environment utils.memory hf_arguments local_sgd",
        "hookspecs",
        "builtin builtin.defaults builtin.devices builtin.environments builtin.precisions "
        "builtin.single_process builtin.hf_launch builtin.trackers trackers trackers.aim "
        "trackers.clearml trackers.comet_ml trackers.dvclive trackers.mlflow trackers.swanlab "
        "trackers.tensorboard trackers.trackio trackers.wandb",
        "plugins",
        # settings / state / data / collectives
        "process_settings config_files launch_settings state collectives samplers data seeding "
        "optimizer scheduler memory_tracker model_files checkpoint_manifest memory_estimate "
        "tracker_set tracker_metrics utils.device_map utils.tqdm hooks big_modeling "
        "parallelism_config parallelism context_parallel exported_names utils.operations "
        "utils.other utils.random logging data_loader hf_members",
        "checkpoint launchers checkpoint_convert",
        # utils is HF's accelerate.utils: a facade re-exporting names from every layer below
        "accelerator tracking utils testing cli cli.config cli.env cli.launch cli.main cli.memory "
        "cli.text cli.convert_checkpoint cli.merge_weights cli.estimate_memory cli.test_command "
        "cli.worker cli.training_check",
        "__init__ __main__",
    ]
):
    LAYERS.update(dict.fromkeys(modules.split(), layer))


def module_files(package: str, src: Path) -> dict[str, Path]:
    """``{dotted name relative to the package: path}``; ``__init__`` for packages."""
    base = src / package
    found = {}
    for path in sorted(base.rglob("*.py")):
        parts = list(path.relative_to(base).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports_of(path: Path, package: str, name: str, known: set[str]) -> Iterator[str]:
    """Every module of ``package`` (or other top-level package) that ``path`` imports, as
    ``package:module`` for the own package and the top-level name for others."""
    is_package = path.name == "__init__.py"
    here = [] if name == "__init__" else name.split(".")
    container = here if is_package else here[:-1]

    def own(target: list[str]) -> str:
        dotted = ".".join(target)
        return f"{package}:{dotted or '__init__'}"

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top, *rest = alias.name.split(".")
                yield own(rest) if top == package else top
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = container[: len(container) - (node.level - 1)]
                target = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == package:
                target = node.module.split(".")[1:]
            else:
                yield (node.module or "").split(".")[0]
                continue
            for alias in node.names:  # ``from . import checkpoint`` imports a submodule
                sub = ".".join([*target, alias.name])
                yield own(sub.split(".")) if sub in known else own(target)


def graph(package: str, src: Path) -> dict[str, set[str]]:
    files = module_files(package, src)
    known = set(files)
    return {
        f"{package}:{name}": set(imports_of(path, package, name, known))
        for name, path in files.items()
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), and self-imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in edges:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


CORE_SRC = ROOT / "core" / "src"


def test_the_core_has_no_import_cycle():
    assert cycles(graph(CORE, CORE_SRC)) == []


def test_every_core_import_points_down_the_layers():
    edges = graph(CORE, CORE_SRC)
    unplaced = sorted(m.split(":")[1] for m in edges if m.split(":")[1] not in LAYERS)
    assert unplaced == [], f"add {unplaced} to LAYERS in {Path(__file__).name}"
    upward = []
    for module, targets in sorted(edges.items()):
        name = module.split(":")[1]
        for target in sorted(t for t in targets if t.startswith(f"{CORE}:")):
            other = target.split(":")[1]
            if LAYERS[other] > LAYERS[name]:
                upward.append(f"{name} (layer {LAYERS[name]}) imports {other} ({LAYERS[other]})")
    assert upward == []


def test_the_core_imports_no_backend_and_no_backend_another():
    offenders = []
    for module, targets in graph(CORE, CORE_SRC).items():
        offenders += [f"{module} imports {t}" for t in targets & PLUGIN_PACKAGES]
    for package, src in BACKENDS.items():
        edges = graph(package, src)
        assert cycles(edges) == [], package
        for module, targets in edges.items():
            others = targets & (PLUGIN_PACKAGES - {package})
            offenders += [f"{module} imports {t}" for t in others]
    assert offenders == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from .. import checkpoint", "accelerate_core:checkpoint"),
        ("from .. import __version__", "accelerate_core:__init__"),
        ("from ..state import x", "accelerate_core:state"),
        ("import accelerate_core.plugins", "accelerate_core:plugins"),
        ("from accelerate_core import Accelerator", "accelerate_core:__init__"),
        ("if TYPE_CHECKING:\n    from .. import accelerator", "accelerate_core:accelerator"),
        ("def f():\n    from ..accelerator import Accelerator", "accelerate_core:accelerator"),
    ],
)
def test_the_parser_sees_every_kind_of_import(tmp_path, source, expected):
    """The graph is only as good as the parser: each spelling is an edge (here from builtin.x)."""
    package = tmp_path / CORE
    (package / "builtin").mkdir(parents=True)
    for name in ("__init__", "checkpoint", "state", "plugins", "accelerator"):
        (package / f"{name}.py").write_text("")
    (package / "builtin" / "__init__.py").write_text("")
    (package / "builtin" / "x.py").write_text(source)
    edges = graph(CORE, tmp_path)
    assert expected in edges[f"{CORE}:builtin.x"]


def hidden_imports(path: Path, package: str) -> Iterator[str]:
    """Imports of ``package``'s own modules written inside a function or under TYPE_CHECKING:
    the places an import goes to dodge a circle."""

    def own(node: ast.AST) -> bool:
        if isinstance(node, ast.ImportFrom):
            return bool(node.level) or (node.module or "").split(".")[0] == package
        return isinstance(node, ast.Import) and any(
            a.name.split(".")[0] == package for a in node.names
        )

    def visit(node: ast.AST, hidden: str | None) -> Iterator[str]:
        for child in ast.iter_child_nodes(node):
            where = hidden
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                where = f"inside {child.name}()"
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                where = "under TYPE_CHECKING"
            if where and own(child):
                yield f"{path.relative_to(ROOT)}:{child.lineno} {where}: {ast.unparse(child)}"
            yield from visit(child, where)

    yield from visit(ast.parse(path.read_text()), None)


def test_no_core_module_hides_an_import_of_another():
    hidden = [
        h for path in module_files(CORE, CORE_SRC).values() for h in hidden_imports(path, CORE)
    ]
    assert hidden == []


def test_a_planted_cycle_is_found():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]
