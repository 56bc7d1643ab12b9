"""Hugging Face Accelerate's configuration records (``accelerate.utils.dataclasses``).

Plain records with HF's names, fields and defaults; the ``Accelerator`` translates them into its
own settings once, at creation (``hf_arguments.py``). The records that belong to one backend
(``FullyShardedDataParallelPlugin``, ``DeepSpeedPlugin``, ``DDPCommunicationHookType``) are defined
by that backend's package and reached through ``accelerate_core.utils`` lazily.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch

from ..distributed_type import DistributedType, distributed_type_for
from ..enums import BaseEnum, EnumWithContains
from ..errors import ConfigurationError
from ..kwargs_handlers import AutocastKwargs, GradScalerKwargs, KwargsHandler


class SageMakerDistributedType(str, enum.Enum):
    NO = "NO"
    DATA_PARALLEL = "DATA_PARALLEL"
    MODEL_PARALLEL = "MODEL_PARALLEL"


class ComputeEnvironment(str, enum.Enum):
    LOCAL_MACHINE = "LOCAL_MACHINE"
    AMAZON_SAGEMAKER = "AMAZON_SAGEMAKER"


class DynamoBackend(str, BaseEnum):
    """``torch.compile`` backends by HF's names (``NO`` compiles nothing)."""

    NO = "NO"
    EAGER = "EAGER"
    AOT_EAGER = "AOT_EAGER"
    INDUCTOR = "INDUCTOR"
    AOT_TS_NVFUSER = "AOT_TS_NVFUSER"
    NVPRIMS_NVFUSER = "NVPRIMS_NVFUSER"
    CUDAGRAPHS = "CUDAGRAPHS"
    OFI = "OFI"
    FX2TRT = "FX2TRT"
    ONNXRT = "ONNXRT"
    TENSORRT = "TENSORRT"
    AOT_TORCHXLA_TRACE_ONCE = "AOT_TORCHXLA_TRACE_ONCE"
    TORCHXLA_TRACE_ONCE = "TORCHXLA_TRACE_ONCE"
    IPEX = "IPEX"
    TVM = "TVM"
    HPU_BACKEND = "HPU_BACKEND"


class PrecisionType(str, BaseEnum):
    NO = "no"
    FP8 = "fp8"
    FP16 = "fp16"
    BF16 = "bf16"


class RNGType(BaseEnum):
    TORCH = "torch"
    CUDA = "cuda"
    MLU = "mlu"
    SDAA = "sdaa"
    MUSA = "musa"
    NPU = "npu"
    XLA = "xla"
    XPU = "xpu"
    HPU = "hpu"
    NEURON = "neuron"
    GENERATOR = "generator"


class CustomDtype(enum.Enum):
    FP8 = "fp8"
    INT4 = "int4"
    INT2 = "int2"


@dataclass
class TensorInformation:
    shape: torch.Size
    dtype: torch.dtype


@dataclass
class DataLoaderConfiguration:
    """How ``prepare`` shards dataloaders (HF's fields; see ``Accelerator`` for each).

    ``use_seedable_sampler`` and ``use_stateful_dataloader`` are what prepared dataloaders always
    are here (a library-owned shuffle seed, a saved position); ``data_seed`` seeds that shuffle.
    """

    split_batches: bool = False
    dispatch_batches: bool | None = None
    even_batches: bool = True
    use_seedable_sampler: bool = False
    data_seed: int | None = None
    non_blocking: bool = False
    use_stateful_dataloader: bool = False


@dataclass
class GradientAccumulationPlugin(KwargsHandler):
    """Gradient accumulation as HF configures it.

    Args:
        num_steps: micro-batches per optimizer step.
        adjust_scheduler: accepted; prepared schedulers never step on micro-steps here anyway.
        sync_with_dataloader: the last batch of a prepared dataloader ends a cycle.
        sync_each_batch: synchronise gradients on every micro-step too (less memory with
            sharded backends, more communication); the optimizer still steps once per cycle.
    """

    num_steps: int | None = None
    adjust_scheduler: bool = True
    sync_with_dataloader: bool = True
    sync_each_batch: bool = False


@dataclass
class InitProcessGroupKwargs(KwargsHandler):
    """Process-group options: ``timeout`` is used; the group's backend is the device's."""

    backend: str | None = "nccl"
    init_method: str | None = None
    timeout: timedelta | None = None


@dataclass
class DistributedDataParallelKwargs(KwargsHandler):
    """Options of ``DistributedDataParallel`` (HF's fields and defaults).

    They become options of the ``ddp`` backend (its plugin checks and applies them); with another
    backend, or on one process, they are ignored, as in HF. ``comm_hook``/``comm_wrapper`` take
    ``DDPCommunicationHookType`` members (from ``accelerate-ddp``) or their string values.
    """

    dim: int = 0
    broadcast_buffers: bool = True
    bucket_cap_mb: int = 25
    find_unused_parameters: bool = False
    check_reduction: bool = False
    gradient_as_bucket_view: bool = False
    static_graph: bool = False
    comm_hook: Any = "no"
    comm_wrapper: Any = "no"
    comm_state_option: dict = field(default_factory=dict)

    target_backend = "ddp"

    def backend_options(self) -> dict[str, Any]:
        """The fields set to a non-default value, as ``ddp`` backend options."""
        return {
            key: (value.value if isinstance(value, enum.Enum) else value)
            for key, value in self.to_kwargs().items()
        }


PROFILER_ACTIVITIES = ("cpu", "cuda", "xpu", "mtia", "hpu")


@dataclass
class ProfileKwargs(KwargsHandler):
    """Options of ``torch.profiler.profile`` for ``accelerator.profile()`` (HF's fields).

    ``output_trace_dir``: every process writes ``profile_<rank>.json`` (Chrome trace) there.
    """

    activities: list[str] | None = None
    schedule_option: dict[str, int] | None = None
    on_trace_ready: Callable | None = None
    record_shapes: bool = False
    profile_memory: bool = False
    with_stack: bool = False
    with_flops: bool = False
    with_modules: bool = False
    output_trace_dir: str | None = None

    def _activity(self, name: str) -> torch.profiler.ProfilerActivity:
        found = getattr(torch.profiler.ProfilerActivity, str(name).upper(), None)
        if str(name) not in PROFILER_ACTIVITIES or found is None:
            raise ConfigurationError(
                f"invalid profiler activity {name!r}; valid: {', '.join(PROFILER_ACTIVITIES)}"
            )
        return found

    def build(self) -> torch.profiler.profile:
        """The ``torch.profiler.profile`` these options describe."""
        activities = None
        if self.activities is not None:
            activities = [self._activity(a) for a in self.activities]
        schedule = None
        if self.schedule_option is not None:
            schedule = torch.profiler.schedule(**self.schedule_option)
        return torch.profiler.profile(
            activities=activities,
            schedule=schedule,
            on_trace_ready=self.on_trace_ready,
            record_shapes=self.record_shapes,
            profile_memory=self.profile_memory,
            with_stack=self.with_stack,
            with_flops=self.with_flops,
            with_modules=self.with_modules,
        )


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "false").strip().lower() in {"1", "true", "yes", "on", "y"}


@dataclass
class TorchDynamoPlugin(KwargsHandler):
    """``torch.compile`` of prepared models (HF's fields; ``ACCELERATE_DYNAMO_*`` defaults).

    ``backend`` ``"no"`` compiles nothing. ``use_regional_compilation`` compiles each repeated
    block (the children of the model's ``ModuleList``s) instead of the whole model.
    """

    backend: Any = None
    mode: str | None = None
    fullgraph: bool | None = None
    dynamic: bool | None = None
    options: Any = None
    disable: bool = False
    use_regional_compilation: bool | None = None

    def __post_init__(self) -> None:
        prefix = "ACCELERATE_DYNAMO_"
        if self.backend is None:
            self.backend = os.environ.get(prefix + "BACKEND", "no")
        try:
            self.backend = DynamoBackend(str(self.backend).upper())
        except ValueError:
            raise ConfigurationError(
                f"unknown dynamo backend {self.backend!r}; valid: "
                f"{', '.join(b.value.lower() for b in DynamoBackend)}"
            ) from None
        if self.mode is None:
            self.mode = os.environ.get(prefix + "MODE", "default")
        if self.fullgraph is None:
            self.fullgraph = _env_flag(prefix + "USE_FULLGRAPH")
        if self.use_regional_compilation is None:
            self.use_regional_compilation = _env_flag(prefix + "USE_REGIONAL_COMPILATION")
        if self.dynamic is None and os.environ.get(prefix + "USE_DYNAMIC") is not None:
            self.dynamic = _env_flag(prefix + "USE_DYNAMIC")

    @property
    def enabled(self) -> bool:
        return self.backend != DynamoBackend.NO and not self.disable

    def compile_kwargs(self) -> dict[str, Any]:
        """Arguments of ``torch.compile``."""
        kwargs: dict[str, Any] = {"backend": self.backend.value.lower(), "mode": self.mode}
        if self.mode == "default":
            kwargs.pop("mode")
        for name in ("fullgraph", "dynamic", "options"):
            if getattr(self, name) not in (None, False):
                kwargs[name] = getattr(self, name)
        return kwargs


__all__ = [
    "AutocastKwargs",
    "BaseEnum",
    "ComputeEnvironment",
    "CustomDtype",
    "DataLoaderConfiguration",
    "DistributedDataParallelKwargs",
    "DistributedType",
    "DynamoBackend",
    "EnumWithContains",
    "GradScalerKwargs",
    "GradientAccumulationPlugin",
    "InitProcessGroupKwargs",
    "KwargsHandler",
    "PrecisionType",
    "ProfileKwargs",
    "RNGType",
    "SageMakerDistributedType",
    "TensorInformation",
    "TorchDynamoPlugin",
    "distributed_type_for",
]
