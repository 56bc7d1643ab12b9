"""accelerate-core: one PyTorch training script for CPU, one GPU, many GPUs and many nodes."""

from typing import Any

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
from .data_loader import skip_first_batches
from .distributed_type import DistributedType
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
from .exported_names import resolve as _resolve
from .hookspecs import hookimpl
from .kwargs_handlers import AutocastKwargs, GradScalerKwargs
from .launchers import debug_launcher, notebook_launcher
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
from .utils.dataclasses import (
    DataLoaderConfiguration,
    DistributedDataParallelKwargs,
    GradientAccumulationPlugin,
    InitProcessGroupKwargs,
    ProfileKwargs,
)
from .utils.device_map import infer_auto_device_map
from .utils.imports import is_rich_available
from .utils.loading import load_checkpoint_in_model
from .utils.memory import find_executable_batch_size
from .utils.random import synchronize_rng_states
from .version import __version__

# HF's backend-specific top-level names (DeepSpeedPlugin, FullyShardedDataParallelPlugin,
# DDPCommunicationHookType) come from the backends' packages, looked up on first use.
_LAZY = ("DDPCommunicationHookType", "DeepSpeedPlugin", "FullyShardedDataParallelPlugin")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return _resolve(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    "DataLoaderConfiguration",
    "DistributedDataParallelKwargs",
    "DistributedType",
    "GradientAccumulationPlugin",
    "InitProcessGroupKwargs",
    "ProfileKwargs",
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
    "debug_launcher",
    "find_executable_batch_size",
    "is_rich_available",
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
    "skip_first_batches",
    "synchronize_rng_states",
    "track_memory",
]
