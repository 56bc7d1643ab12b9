"""accelerate-core: one PyTorch training script for CPU, one GPU, many GPUs and many nodes."""

from .accelerator import Accelerator
from .checkpoint import ProjectConfiguration
from .collectives import (
    broadcast,
    broadcast_object_list,
    gather,
    gather_object,
    pad_across_processes,
    reduce,
)
from .errors import (
    AccelerateCoreError,
    CheckpointError,
    CollectiveError,
    ConfigurationError,
    EnvironmentDetectionError,
    PluginConflictError,
    PluginError,
    PluginNotInstalledError,
)
from .hookspecs import hookimpl
from .kwargs_handlers import AutocastKwargs, GradScalerKwargs
from .launchers import notebook_launcher
from .memory import release_memory
from .memory_tracker import MemoryTracker, track_memory
from .ops import send_to_device
from .seeding import set_seed
from .specs import (
    BackendSpec,
    CheckpointWeights,
    DeviceSpec,
    EnvironmentInfo,
    LaunchAlias,
    LaunchOption,
    MemoryEstimate,
    PluginContext,
    PrecisionSpec,
    PrepareRequest,
)
from .state import AcceleratorState, PartialState
from .version import __version__

__all__ = [
    "AccelerateCoreError",
    "Accelerator",
    "AcceleratorState",
    "AutocastKwargs",
    "BackendSpec",
    "CheckpointError",
    "CheckpointWeights",
    "CollectiveError",
    "ConfigurationError",
    "DeviceSpec",
    "EnvironmentDetectionError",
    "EnvironmentInfo",
    "GradScalerKwargs",
    "LaunchAlias",
    "LaunchOption",
    "MemoryEstimate",
    "MemoryTracker",
    "PartialState",
    "PluginConflictError",
    "PluginContext",
    "PluginError",
    "PluginNotInstalledError",
    "PrecisionSpec",
    "PrepareRequest",
    "ProjectConfiguration",
    "__version__",
    "broadcast",
    "broadcast_object_list",
    "gather",
    "gather_object",
    "hookimpl",
    "notebook_launcher",
    "pad_across_processes",
    "reduce",
    "release_memory",
    "send_to_device",
    "set_seed",
    "track_memory",
]
