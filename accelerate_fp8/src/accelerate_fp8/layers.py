"""Which Linear layers become fp8, and the record of what was converted.

The plan is computed by us, the same way for every backend, and handed to the library as its
filter; so ``converted_layer_count`` means the same thing for torchao, TransformerEngine and
MS-AMP, and a model where nothing was converted is reported instead of silently training in
high precision.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import FP8NoLayersConvertedWarning
from .recipe import FP8Recipe

logger = logging.getLogger("accelerate_fp8")

REPORT_ATTRIBUTE = "_accelerate_fp8_report"
FP8_DIM_MULTIPLE = 16


@dataclass(frozen=True)
class ConversionPlan:
    """Names of the Linear layers to convert, and why each other Linear stays as it is."""

    convert: tuple[str, ...]
    skipped: Mapping[str, str]


@dataclass(frozen=True)
class FP8ConversionReport:
    """What ``prepare`` did to one model (found with ``conversion_report(model)``).

    Attributes:
        backend: the fp8 backend that converted it.
        converted: qualified names of the Linear layers now computing in fp8.
        skipped: qualified name -> reason, for every Linear left in high precision.
        extra: backend facts worth logging (say, LayerNorms swapped by TransformerEngine).
    """

    backend: str
    converted: tuple[str, ...]
    skipped: Mapping[str, str]
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.converted)

    @property
    def linear_count(self) -> int:
        return len(self.converted) + len(self.skipped)


def plan_conversion(model: torch.nn.Module, recipe: FP8Recipe) -> ConversionPlan:
    """Apply the recipe's layer filter to every ``nn.Linear`` of ``model``."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    convert: list[str] = []
    skipped: dict[str, str] = {}
    last = len(linears) - 1
    for index, (name, module) in enumerate(linears):
        reason = None
        if recipe.skip_first_last and index == 0:
            reason = "first Linear (skip_first_last=True)"
        elif recipe.skip_first_last and index == last:
            reason = "last Linear (skip_first_last=True)"
        elif module.in_features % FP8_DIM_MULTIPLE or module.out_features % FP8_DIM_MULTIPLE:
            reason = (
                f"in_features={module.in_features}, out_features={module.out_features} are "
                f"not both multiples of {FP8_DIM_MULTIPLE}"
            )
        elif any(fragment in name for fragment in recipe.exclude):
            reason = "matches FP8Recipe.exclude"
        elif recipe.module_filter is not None and not recipe.module_filter(module, name):
            reason = "rejected by FP8Recipe.module_filter"
        if reason is None:
            convert.append(name)
        else:
            skipped[name] = reason
    return ConversionPlan(tuple(convert), skipped)


def record_conversion(
    model: torch.nn.Module,
    recipe: FP8Recipe,
    plan: ConversionPlan,
    converted: list[str] | tuple[str, ...],
    is_main_process: bool = True,
    **extra: Any,
) -> FP8ConversionReport:
    """Attach the report to ``model``, log it, and warn when no layer was converted."""
    skipped = dict(plan.skipped)
    for name in plan.convert:
        if name not in converted:
            skipped[name] = "the backend left it unconverted"
    report = FP8ConversionReport(recipe.backend, tuple(converted), skipped, dict(extra))
    model.__dict__[REPORT_ATTRIBUTE] = report
    kept = "; ".join(f"{name or '<root>'}: {why}" for name, why in skipped.items()) or "none"
    if report.count == 0:
        warnings.warn(
            f"fp8 ({describe(recipe)}): no Linear layer of {type(model).__name__} was converted "
            f"({report.linear_count} Linear layers; kept in high precision: {kept}), so it "
            "trains without fp8. Relax the filter (FP8Recipe(skip_first_last=False), exclude, "
            "module_filter), make dimensions multiples of 16, or use mixed_precision='bf16'",
            FP8NoLayersConvertedWarning,
            stacklevel=2,
        )
    elif is_main_process:
        extras = "".join(f", {key}: {value}" for key, value in extra.items())
        logger.info(
            "fp8 (%s): converted %d of %d Linear layers of %s%s; kept in high precision: %s",
            describe(recipe),
            report.count,
            report.linear_count,
            type(model).__name__,
            extras,
            kept,
        )
    return report


def describe(recipe: FP8Recipe) -> str:
    details = {
        "torchao": f"{recipe.scaling} scaling",
        "te": f"delayed scaling, amax history {recipe.amax_history_len}",
        "msamp": f"opt_level {recipe.opt_level}",
    }[recipe.backend]
    return (
        f"{recipe.backend}, {details}, {recipe.effective_fp8_format}, "
        f"{recipe.autocast_dtype} elsewhere"
    )


def conversion_report(model: torch.nn.Module) -> FP8ConversionReport:
    """The report of the fp8 conversion of ``model`` (or of the model inside a wrapper).

    Raises ``ValueError`` when ``model`` was not prepared under ``mixed_precision='fp8'``.
    """
    for module in model.modules():
        report = module.__dict__.get(REPORT_ATTRIBUTE)
        if report is not None:
            return report
    raise ValueError(
        f"{type(model).__name__} was not converted to fp8: pass it to Accelerator(mixed_precision="
        "'fp8').prepare(...) first (prepare returns the model to ask about)"
    )


def converted_layer_count(model: torch.nn.Module) -> int:
    """How many Linear layers of a prepared model compute in fp8 (0 means none: see the warning)."""
    return conversion_report(model).count


def replace_submodule(root: torch.nn.Module, name: str, new: torch.nn.Module) -> torch.nn.Module:
    """Put ``new`` at ``name`` in ``root``; returns the root (``new`` itself when name is "")."""
    if name == "":
        return new
    parent_name, _, leaf = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, leaf, new)
    return root
