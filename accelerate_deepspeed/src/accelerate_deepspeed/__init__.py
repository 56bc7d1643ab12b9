"""accelerate-deepspeed: the DeepSpeed ZeRO backend of accelerate-core.

Importing this package does not import DeepSpeed; selecting ``backend="deepspeed"`` does.
"""

from .config import Knowledge, ResolvedConfig, format_config, resolve_config
from .options import DeepSpeedOptions
from .placeholders import DummyOptim, DummyScheduler
from .runtime import DeepSpeedGradNorm, resolved_config

__version__ = "0.1.0"

__all__ = [
    "DeepSpeedGradNorm",
    "DeepSpeedOptions",
    "DummyOptim",
    "DummyScheduler",
    "Knowledge",
    "ResolvedConfig",
    "__version__",
    "format_config",
    "resolve_config",
    "resolved_config",
]
