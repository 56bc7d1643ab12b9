"""torchao: ``convert_to_float8_training`` swaps the planned ``nn.Linear`` for ``Float8Linear``.

Imported only when the torchao backend is selected. The conversion runs in the precision hook,
before device placement and before the distributed backend wraps the model, which is where
torchao's FSDP2 fp8 all-gather needs it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from accelerate_core.specs import PluginContext, PrepareRequest

from .layers import plan_conversion, record_conversion
from .recipe import FP8Recipe


def float8_config(recipe: FP8Recipe) -> Any:
    """The ``Float8LinearConfig`` that implements ``recipe`` (scaling, formats, all-gather)."""
    from torchao.float8 import Float8LinearConfig
    from torchao.float8.config import CastConfig, ScalingGranularity, e4m3_dtype, e5m2_dtype

    grad_dtype = e5m2_dtype if recipe.effective_fp8_format == "HYBRID" else e4m3_dtype
    if recipe.scaling == "rowwise":
        axiswise = ScalingGranularity.AXISWISE
        return Float8LinearConfig(
            cast_config_input=CastConfig(scaling_granularity=axiswise, target_dtype=e4m3_dtype),
            cast_config_weight=CastConfig(scaling_granularity=axiswise, target_dtype=e4m3_dtype),
            cast_config_grad_output=CastConfig(
                scaling_granularity=axiswise, target_dtype=grad_dtype
            ),
            round_scales_to_power_of_2=True,  # as torchao's own rowwise recipe
        )
    return Float8LinearConfig(
        cast_config_input=CastConfig(target_dtype=e4m3_dtype),
        cast_config_weight=CastConfig(target_dtype=e4m3_dtype),
        cast_config_grad_output=CastConfig(target_dtype=grad_dtype),
        enable_fsdp_float8_all_gather=recipe.fsdp_fp8_all_gather,
    )


def convert(request: PrepareRequest, recipe: FP8Recipe, context: PluginContext) -> PrepareRequest:
    from torchao.float8 import convert_to_float8_training
    from torchao.float8.float8_linear import Float8Linear

    config = float8_config(recipe)
    models = []
    for model in request.models:
        plan = plan_conversion(model, recipe)
        chosen = frozenset(plan.convert)
        converted_model = convert_to_float8_training(
            model, module_filter_fn=lambda _m, name, chosen=chosen: name in chosen, config=config
        )
        done = [
            name
            for name, module in converted_model.named_modules()
            if name in chosen and isinstance(module, Float8Linear)
        ]
        record_conversion(
            converted_model, recipe, plan, done, is_main_process=context.state.is_main_process
        )
        models.append(converted_model)
    request.models = models
    if recipe.fsdp_fp8_all_gather:
        _precompute_scales_after_each_step(request.optimizers, models)
    return request


def _precompute_scales_after_each_step(optimizers: list[Any], models: list[Any]) -> None:
    """With fp8 all-gather, torchao wants the weights' scales computed once per step, for all
    shards together, after the optimizer updated them (one all-reduce instead of one per layer).

    A post-step hook on each optimizer does it, so it runs after whichever backend steps.
    Models that are not sharded by FSDP2 have no such weights and are skipped by torchao.
    """
    from torchao.float8 import precompute_float8_dynamic_scale_for_fsdp

    def precompute(*_: Any) -> None:
        for model in models:
            precompute_float8_dynamic_scale_for_fsdp(model)

    for optimizer in optimizers:
        inner = getattr(optimizer, "optimizer", optimizer)
        register = getattr(inner, "register_step_post_hook", None)
        if callable(register):
            register(precompute)


def autocast(
    recipe: FP8Recipe, context: PluginContext
) -> Callable[[], AbstractContextManager] | None:
    """torchao needs no context of its own: ``Float8Linear`` casts inside its forward."""
    del recipe, context
    return None
