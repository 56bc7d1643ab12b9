"""The built-in backend ``none``: one process, nothing wrapped.

All of its behaviour is the core's defaults (``defaults.py``): plain backward, no gradient
synchronisation, ``torch.nn.utils`` clipping, plain optimizer step.
"""

from __future__ import annotations

from ..hookspecs import hookimpl
from ..specs import BackendSpec

NAME = "none"


@hookimpl
def accelerate_core_backends() -> list[BackendSpec]:
    return [BackendSpec(NAME, "one process, no wrapping (the default for one process)", False)]
