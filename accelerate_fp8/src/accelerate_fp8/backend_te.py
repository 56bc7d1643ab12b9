"""TransformerEngine: planned ``nn.Linear`` become ``te.Linear``, ``nn.LayerNorm`` ``te.LayerNorm``;
the forward runs in TransformerEngine's fp8 autocast with a ``DelayedScaling`` recipe.

Imported only when the ``te`` backend is selected (CUDA only). Weights are copied into the TE
modules, created on the process's device, before the distributed backend wraps the model.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch

from accelerate_core.errors import ConfigurationError
from accelerate_core.specs import PluginContext, PrepareRequest

from .layers import plan_conversion, record_conversion, replace_submodule
from .recipe import FP8Recipe


def _te() -> Any:
    import transformer_engine.pytorch as te

    return te


def delayed_scaling(recipe: FP8Recipe) -> Any:
    """TransformerEngine's ``DelayedScaling`` built from the recipe's fields."""
    from transformer_engine.common.recipe import DelayedScaling, Format

    kwargs: dict[str, Any] = {
        "margin": recipe.margin,
        "fp8_format": getattr(Format, recipe.effective_fp8_format),
        "amax_history_len": recipe.amax_history_len,
        "amax_compute_algo": recipe.amax_compute_algo,
    }
    if "interval" in inspect.signature(DelayedScaling).parameters:
        kwargs["interval"] = recipe.interval
    elif recipe.interval != 1:
        raise ConfigurationError(
            f"FP8Recipe.interval={recipe.interval} is not supported by the installed "
            "TransformerEngine (it removed `interval`: scaling factors update every step); "
            "leave interval at 1"
        )
    return DelayedScaling(**kwargs)


def autocast(
    recipe: FP8Recipe, context: PluginContext
) -> Callable[[], AbstractContextManager] | None:
    """A factory of TransformerEngine's fp8 autocast (``te.autocast`` or older ``fp8_autocast``)."""
    del context
    te = _te()
    te_recipe = delayed_scaling(recipe)
    if hasattr(te, "autocast"):
        return functools.partial(te.autocast, enabled=True, recipe=te_recipe)
    return functools.partial(te.fp8_autocast, enabled=True, fp8_recipe=te_recipe)


def _te_linear(te: Any, linear: torch.nn.Linear, device: torch.device) -> torch.nn.Module:
    new = te.Linear(
        linear.in_features,
        linear.out_features,
        bias=linear.bias is not None,
        params_dtype=linear.weight.dtype,
        device=device,
    )
    new.weight.copy_(linear.weight)
    if linear.bias is not None:
        new.bias.copy_(linear.bias)
    return new


def _te_layernorm(te: Any, norm: torch.nn.LayerNorm, device: torch.device) -> torch.nn.Module:
    new = te.LayerNorm(
        norm.normalized_shape[0], eps=norm.eps, params_dtype=norm.weight.dtype, device=device
    )
    new.weight.copy_(norm.weight)
    new.bias.copy_(norm.bias)
    return new


def _swappable_layernorm(module: torch.nn.Module) -> bool:
    return (
        type(module) is torch.nn.LayerNorm
        and len(module.normalized_shape) == 1
        and module.weight is not None
        and module.bias is not None
    )


def convert(request: PrepareRequest, recipe: FP8Recipe, context: PluginContext) -> PrepareRequest:
    te = _te()
    device = context.device
    models = []
    for model in request.models:
        plan = plan_conversion(model, recipe)
        norms = [n for n, m in model.named_modules() if _swappable_layernorm(m)]
        with torch.no_grad():
            for name in plan.convert:
                model = replace_submodule(
                    model, name, _te_linear(te, model.get_submodule(name), device)
                )
            for name in norms:
                model = replace_submodule(
                    model, name, _te_layernorm(te, model.get_submodule(name), device)
                )
        done = [n for n in plan.convert if isinstance(model.get_submodule(n), te.Linear)]
        record_conversion(
            model,
            recipe,
            plan,
            done,
            is_main_process=context.state.is_main_process,
            layernorms_swapped=len(norms),
        )
        models.append(model)
    request.models = models
    return request
