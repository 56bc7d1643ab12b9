"""Tensor parallelism with DTensor: a plan of module-name patterns and styles, applied over ``tp``.

The plan maps module names to styles. Names are dotted paths in which ``*`` stands for one
segment (``"layers.*.attention.wq"``), as in the ``_tp_plan`` that Hugging Face transformers
models carry. A style is one of the names below (transformers' vocabulary) or any torch
``ParallelStyle`` (``ColwiseParallel(input_layouts=Shard(1))``, ``SequenceParallel()``, ...).
The plan comes from ``backend_options={"tp_plan": {...}}``, else from the model (``_tp_plan``
or ``tp_plan``).

Modules that hold parameters the plan does not name get them replicated over the ``tp`` ranks
(``ReplicateParallel``): every parameter then is a DTensor on the same mesh, so FSDP composes
over it (TP inside, FSDP across), the optimizer steps on DTensors and clipping sees one mesh.
Their inputs must be the same on every tp rank (true unless the plan shards the sequence:
a sequence-parallel plan must then name every module with parameters).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.distributed.tensor import DTensor, Replicate, distribute_module, distribute_tensor
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    ParallelStyle,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)

from accelerate_core import ConfigurationError

TP_LAYOUT = "_accelerate_fsdp_tp_layout"  # {param name: (mesh, placements)} set on the model


class ReplicateParallel(ParallelStyle):
    """The module's own parameters replicated over the mesh; plain tensors in and out.

    Each tp rank computes the same output from the same input, so the gradients of these
    parameters are the same everywhere and need no tensor-parallel communication.
    """

    def _apply(self, module: torch.nn.Module, device_mesh: Any) -> torch.nn.Module:
        def replicate(name: str, mod: torch.nn.Module, mesh: Any) -> None:
            for key, param in list(mod.named_parameters(recurse=False)):
                if isinstance(param, DTensor):
                    continue
                # Every rank holds the same values already: cut, do not send.
                tensor = distribute_tensor(param.detach(), mesh, [Replicate()], src_data_rank=None)
                mod.register_parameter(
                    key, torch.nn.Parameter(tensor, requires_grad=param.requires_grad)
                )

        def inputs(mod: torch.nn.Module, args: Any, mesh: Any) -> Any:
            return tuple(_as_replicate(a, mesh) for a in args)

        def outputs(mod: torch.nn.Module, out: Any, mesh: Any) -> Any:
            return out.to_local() if isinstance(out, DTensor) else out

        distribute_module(module, device_mesh, replicate, inputs, outputs)
        return module


def _as_replicate(value: Any, mesh: Any) -> Any:
    if isinstance(value, torch.Tensor) and not isinstance(value, DTensor):
        return DTensor.from_local(value, mesh, [Replicate()], run_check=False)
    return value


STYLES: dict[str, Callable[[], ParallelStyle]] = {
    "colwise": ColwiseParallel,
    "rowwise": RowwiseParallel,
    "colwise_rep": lambda: ColwiseParallel(output_layouts=Replicate()),
    "sequence_parallel": SequenceParallel,
    "replicate": ReplicateParallel,
}


def _style(pattern: str, value: Any) -> ParallelStyle:
    if isinstance(value, ParallelStyle):
        return value
    factory = STYLES.get(value) if isinstance(value, str) else None
    if factory is None:
        raise ConfigurationError(
            f"fsdp tp_plan: {pattern!r} has style {value!r}; use one of "
            f"{', '.join(sorted(STYLES))} or a torch ParallelStyle"
        )
    return factory()


def model_plan(model: torch.nn.Module) -> Mapping[str, Any] | None:
    """The plan a model carries (transformers: ``_tp_plan``), if any."""
    for name in ("_tp_plan", "tp_plan"):
        plan = getattr(model, name, None)
        if isinstance(plan, Mapping) and plan:
            return plan
    return None


def _matches(pattern: str, name: str) -> bool:
    parts, segments = pattern.split("."), name.split(".")
    return len(parts) == len(segments) and all(
        fnmatch.fnmatchcase(s, p) for p, s in zip(parts, segments)
    )


def resolve_plan(
    model: torch.nn.Module, given: Mapping[str, Any] | None
) -> dict[str, ParallelStyle]:
    """``{module name: style}`` for the modules of ``model`` the plan names.

    A pattern of a plan given in ``backend_options`` that names no module is an error (a
    typo); the model's own plan may name modules this instance lacks (tied heads, say).
    """
    plan = given if given is not None else model_plan(model)
    if plan is None:
        raise ConfigurationError(
            f"tensor parallelism needs a plan, and {type(model).__name__} carries none "
            "(_tp_plan): pass backend_options={'tp_plan': {'layers.*.mlp.up': 'colwise', ...}} "
            f"(styles: {', '.join(sorted(STYLES))} or torch ParallelStyle objects)"
        )
    if not isinstance(plan, Mapping):
        raise ConfigurationError(
            f"fsdp tp_plan must map module-name patterns to styles, got {type(plan).__name__}"
        )
    names = [name for name, _ in model.named_modules() if name]
    resolved: dict[str, ParallelStyle] = {}
    owners: dict[str, str] = {}
    for pattern, value in plan.items():
        style = _style(pattern, value)
        matched = [name for name in names if _matches(pattern, name)]
        if not matched and given is not None:
            raise ConfigurationError(
                f"fsdp tp_plan pattern {pattern!r} names no module of {type(model).__name__} "
                f"(its modules: {', '.join(names[:12])}{', ...' if len(names) > 12 else ''})"
            )
        for name in matched:
            if name in owners:
                raise ConfigurationError(
                    f"fsdp tp_plan: module {name!r} is named by both {owners[name]!r} and "
                    f"{pattern!r}; give each module one style"
                )
            owners[name] = pattern
            resolved[name] = style
    return resolved


def apply_tensor_parallel(
    model: torch.nn.Module, mesh: Any, given: Mapping[str, Any] | None
) -> None:
    """Parallelize ``model`` in place over ``mesh`` (the ``tp`` sub-mesh)."""
    if any(isinstance(p, DTensor) for p in model.parameters()):
        raise ConfigurationError(
            f"{type(model).__name__} has DTensor parameters already (tensor-parallel when "
            "loaded, e.g. from_pretrained(tp_plan=...)); load it without a tp_plan: the fsdp "
            "backend applies the plan over the ParallelismConfig's tp mesh itself"
        )
    plan = resolve_plan(model, given)
    if plan:
        parallelize_module(model, mesh, plan)
    for _, module in model.named_modules():
        own = module.named_parameters(recurse=False)
        if any(not isinstance(p, DTensor) for _, p in own):
            ReplicateParallel()._apply(module, mesh)
    layout = {name: (p.device_mesh, p.placements) for name, p in model.named_parameters()}
    model.__dict__[TP_LAYOUT] = layout


def as_tensor_parallel(model: torch.nn.Module, name: str, local: torch.Tensor) -> torch.Tensor:
    """``local`` (this rank's part of a gradient) as the DTensor TP laid out ``name`` as."""
    layout = model.__dict__.get(TP_LAYOUT, {}).get(name)
    if layout is None:
        return local
    mesh, placements = layout
    return DTensor.from_local(local, mesh, placements, run_check=False)
