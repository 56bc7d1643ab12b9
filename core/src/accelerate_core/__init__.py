"""accelerate-core: one PyTorch training script for CPU, one GPU, many GPUs and many nodes."""

from .accelerator import Accelerator
from .big_modeling import (
    cpu_offload,
    cpu_offload_with_hook,
    disk_offload,
    dispatch_model,
    init_empty_weights,
    init_on_device,
    load_checkpoint_and_dispatch,
)
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
    TrackerError,
)
from .hookspecs import hookimpl
from .kwargs_handlers import AutocastKwargs, GradScalerKwargs
from .launchers import notebook_launcher
from .memory import release_memory
from .memory_tracker import MemoryTracker, track_memory
from .ops import send_to_device
from .parallelism_config import ParallelismConfig
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
    TrackerSpec,
)
from .state import AcceleratorState, PartialState
from .utils import infer_auto_device_map, load_checkpoint_in_model
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
    "ParallelismConfig",
    "PartialState",
    "PluginConflictError",
    "PluginContext",
    "PluginError",
    "PluginNotInstalledError",
    "PrecisionSpec",
    "PrepareRequest",
    "TrackerError",
    "ProjectConfiguration",
    "TrackerSpec",
    "__version__",
    "broadcast",
    "broadcast_object_list",
    "cpu_offload",
    "cpu_offload_with_hook",
    "disk_offload",
    "dispatch_model",
    "gather",
    "gather_object",
    "hookimpl",
    "infer_auto_device_map",
    "init_empty_weights",
    "init_on_device",
    "load_checkpoint_and_dispatch",
    "load_checkpoint_in_model",
    "notebook_launcher",
    "pad_across_processes",
    "reduce",
    "release_memory",
    "send_to_device",
    "set_seed",
    "track_memory",
]
