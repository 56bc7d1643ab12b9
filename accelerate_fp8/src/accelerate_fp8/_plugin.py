"""Entry point of accelerate-fp8: registers the ``fp8`` precision with accelerate-core.

Deliberately tiny: loading it imports neither torchao, transformer_engine nor msamp. The hook
bodies import ``hooks`` (and through it the selected library) only when ``fp8`` was selected.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from accelerate_core.hookspecs import hookimpl
from accelerate_core.specs import (
    LaunchAlias,
    LaunchOption,
    PluginContext,
    PrecisionSpec,
    PrepareRequest,
)


@hookimpl
def accelerate_core_precisions() -> list[PrecisionSpec]:
    # No device key: whether fp8 runs depends on the backend (torchao runs on CPU, TE and MS-AMP
    # need NVIDIA GPUs), so the hooks below check the hardware for the selected backend.
    return [PrecisionSpec("fp8", "fp8 Linear layers: torchao, TransformerEngine or MS-AMP")]


@hookimpl
def accelerate_core_validate_options(kind: str, name: str, options: dict[str, Any]) -> bool:
    from .recipe import check_precision_options  # plain records: no fp8 library is imported

    if kind == "precision":
        check_precision_options(options)
    return kind == "precision"


@hookimpl
def accelerate_core_autocast(context: PluginContext) -> Callable[[], AbstractContextManager] | None:
    from .hooks import autocast

    return autocast(context)


@hookimpl
def accelerate_core_convert(
    request: PrepareRequest, context: PluginContext
) -> PrepareRequest | None:
    from .hooks import convert

    return convert(request, context)


@hookimpl
def accelerate_core_launch_options() -> list[LaunchOption]:
    """``accel launch --fp8-recipe JSON``: the ``FP8Recipe`` fields, in ``precision_options``."""
    return [
        LaunchOption(
            "fp8-recipe",
            'FP8Recipe fields as JSON ({"backend": "te", "fp8_format": "HYBRID"})',
            "json",
            precision="fp8",
            key="fp8",
        )
    ]


@hookimpl
def accelerate_core_launch_aliases() -> list[LaunchAlias]:
    """Hugging Face Accelerate's ``--fp8_*`` flags and ``fp8_config`` keys."""
    from .hf_aliases import aliases

    return aliases()
