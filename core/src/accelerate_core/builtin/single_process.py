"""The built-in backend ``none``: one process, nothing wrapped.

All of its behaviour is the core's defaults (``defaults.py``): plain backward, no gradient
synchronisation, ``torch.nn.utils`` clipping, plain optimizer step.
"""

from __future__ import annotations

from ..hookspecs import hookimpl
from ..memory_formulas import ParameterInfo, replicated
from ..specs import BackendSpec, MemoryEstimate

NAME = "none"


@hookimpl
def accelerate_core_backends() -> list[BackendSpec]:
    return [BackendSpec(NAME, "one process, no wrapping (the default for one process)", False)]


@hookimpl
def accelerate_core_estimate_memory(
    parameters: list[ParameterInfo], num_processes: int, mixed_precisions: list[str]
) -> list[MemoryEstimate]:
    """One process holds everything; the core's fp16/bf16 autocast keeps fp32 model state."""
    if num_processes != 1:
        return []
    figures = replicated(parameters, 1)
    note = "fp16/bf16 autocast computes in 16 bits; the model state stays in its own dtype"
    return [MemoryEstimate(NAME, "one process", p, *figures, note) for p in mixed_precisions]
