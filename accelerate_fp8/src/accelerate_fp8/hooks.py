"""Bodies of the ``fp8`` precision hooks; ``_plugin.py`` imports this module only when called.

Both hooks resolve the recipe the same way (parse, library import, hardware check), so a wrong
recipe or a missing library fails at ``Accelerator(...)`` when the core asks for the autocast, and
still fails at ``prepare`` when a backend that owns precision skipped that question.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from types import ModuleType

import torch

from accelerate_core.errors import ConfigurationError
from accelerate_core.specs import PluginContext, PrepareRequest

from .recipe import FP8Recipe, recipe_from_options
from .support import check_hardware, import_library

BACKEND_MODULES = {
    "torchao": "accelerate_fp8.backend_torchao",
    "te": "accelerate_fp8.backend_te",
    "msamp": "accelerate_fp8.backend_msamp",
}


def resolve(context: PluginContext) -> tuple[FP8Recipe, ModuleType]:
    """The recipe and its backend module, after checking library and hardware."""
    recipe = recipe_from_options(context.precision_options)
    import_library(recipe.backend)
    check_hardware(recipe.backend, context.device)
    return recipe, importlib.import_module(BACKEND_MODULES[recipe.backend])


def convert(request: PrepareRequest, context: PluginContext) -> PrepareRequest | None:
    recipe, backend = resolve(context)
    return backend.convert(request, recipe, context)


def autocast(context: PluginContext) -> Callable[[], AbstractContextManager] | None:
    """torch.autocast for the non-fp8 ops (``autocast_dtype``) plus the backend's own context."""
    recipe, backend = resolve(context)
    outer = None
    if recipe.autocast_dtype == "bf16":
        device_spec = getattr(context.state, "device_spec", None)
        if device_spec is not None and "bf16" not in device_spec.precisions:
            raise ConfigurationError(
                f"FP8Recipe(autocast_dtype='bf16') runs the non-fp8 ops in bf16, which device "
                f"{context.device} does not support; use FP8Recipe(autocast_dtype='fp32')"
            )
        options = dict(context.precision_options.get("autocast", {}))
        outer = functools.partial(
            torch.autocast, device_type=context.device.type, dtype=torch.bfloat16, **options
        )
    inner = backend.autocast(recipe, context)
    if outer is None or inner is None:
        return outer or inner
    return functools.partial(_nested, outer, inner)


@contextlib.contextmanager
def _nested(
    outer: Callable[[], AbstractContextManager], inner: Callable[[], AbstractContextManager]
) -> Iterator[None]:
    with outer(), inner():
        yield
