"""MS-AMP: ``msamp.initialize(model, optimizer, opt_level)`` in the precision hook.

It must run before the model is moved to the device and before any wrapping (it replaces the
Linear layers and rebuilds the optimizer around the new fp8 parameters), and it needs the model and
its optimizer together, so both must come in the same ``prepare`` call. Linears the recipe keeps
in high precision are marked ``use_fp32_linear = True``, MS-AMP's own opt-out.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from accelerate_core.errors import ConfigurationError
from accelerate_core.specs import PluginContext, PrepareRequest

from .layers import plan_conversion, record_conversion
from .recipe import FP8Recipe

OPT_OUT = "use_fp32_linear"


def convert(
    request: PrepareRequest, recipe: FP8Recipe, context: PluginContext
) -> PrepareRequest | None:
    import msamp
    import torch

    models, optimizers = request.models, request.optimizers
    if not models and not optimizers:
        return None
    if len(models) != 1 or len(optimizers) != 1:
        raise ConfigurationError(
            "MS-AMP converts one model together with its optimizer: pass exactly one model and "
            f"one optimizer to the same prepare() call (got {len(models)} model(s) and "
            f"{len(optimizers)} optimizer(s))"
        )
    model, optimizer = models[0], optimizers[0]
    plan = plan_conversion(model, recipe)
    for name in plan.skipped:
        setattr(model.get_submodule(name), OPT_OUT, True)
    new_model, new_optimizer = msamp.initialize(model, optimizer, opt_level=recipe.opt_level)
    done = [
        name
        for name in plan.convert
        if not isinstance(new_model.get_submodule(name), torch.nn.Linear)
    ]
    record_conversion(
        new_model,
        recipe,
        plan,
        done,
        is_main_process=context.state.is_main_process,
        opt_level=recipe.opt_level,
    )
    if new_optimizer is not optimizer:
        for scheduler in request.schedulers:
            if getattr(scheduler, "optimizer", None) is optimizer:
                follow(scheduler, new_optimizer)
    request.models = [new_model]
    request.optimizers = [new_optimizer]
    return request


def follow(scheduler: Any, optimizer: Any) -> None:
    """Make a scheduler built on the user's optimizer drive the one MS-AMP built instead.

    torch's LR schedulers mark ``optimizer.step`` to check that it runs before
    ``scheduler.step()``; the new optimizer gets the same marks so that check stays quiet.
    """
    scheduler.optimizer = optimizer
    step = optimizer.step
    if hasattr(step, "_wrapped_by_lr_sched"):
        return
    function = getattr(step, "__func__", None)
    if function is None:
        return  # not a plain method: leave it alone (torch only warns)
    owner = weakref.ref(optimizer)  # no cycle optimizer -> step -> optimizer

    @functools.wraps(function)
    def tracked_step(*args: Any, **kwargs: Any) -> Any:
        target = owner()
        target._opt_called = True
        return function(target, *args, **kwargs)

    tracked_step._wrapped_by_lr_sched = True  # type: ignore[attr-defined]
    optimizer.step = tracked_step


def autocast(
    recipe: FP8Recipe, context: PluginContext
) -> Callable[[], AbstractContextManager] | None:
    """MS-AMP has no forward context: its FP8Linear casts inside ``F.linear``."""
    del recipe, context
    return None
