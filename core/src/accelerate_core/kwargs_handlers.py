"""Option objects for ``Accelerator(kwargs_handlers=[...])``, named as in Hugging Face Accelerate.

Each one is a thin, typed way to fill ``precision_options``; only values that differ from the
defaults are passed on, so torch's own defaults stay in charge.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass
class KwargsHandler:
    """Base class: ``to_kwargs()`` returns the fields set to a non-default value."""

    option_key = ""

    def to_kwargs(self) -> dict[str, Any]:
        default = self.__class__()
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        }


@dataclass
class GradScalerKwargs(KwargsHandler):
    """Options of ``torch.amp.GradScaler`` used under ``mixed_precision='fp16'``."""

    init_scale: float = 65536.0
    growth_factor: float = 2.0
    backoff_factor: float = 0.5
    growth_interval: int = 2000
    enabled: bool = True

    option_key = "grad_scaler"


@dataclass
class AutocastKwargs(KwargsHandler):
    """Options of ``torch.autocast`` used under ``mixed_precision='fp16'|'bf16'``."""

    enabled: bool = True
    cache_enabled: bool | None = None

    option_key = "autocast"
