"""Hook implementations of the ``ddp`` backend (tiny: the work is in ``wrapping``)."""

from __future__ import annotations

from typing import Any

from accelerate_core import BackendSpec, LaunchOption, MemoryEstimate, hookimpl
from accelerate_core.specs import ExportedName

NAME = "ddp"


@hookimpl
def accelerate_core_backends() -> list[BackendSpec]:
    return [BackendSpec(NAME, "torch DistributedDataParallel: replicate, all-reduce gradients")]


@hookimpl
def accelerate_core_exported_names() -> list[ExportedName]:
    """HF's DDP names at ``accelerate_core.utils`` (``DDPCommunicationHookType``)."""
    return [ExportedName("DDPCommunicationHookType", f"{__package__}.hf_names:"
                         "DDPCommunicationHookType", NAME)]  # fmt: skip


@hookimpl
def accelerate_core_validate_options(kind: str, name: str, options: dict[str, Any]) -> bool:
    from .options import DDPOptions

    if kind == "backend":
        DDPOptions.from_mapping(options)
    return kind == "backend"


@hookimpl
def accelerate_core_wrap(request: Any, context: Any) -> Any:
    from .wrapping import wrap_models

    request.models = wrap_models(request.models, context)
    return request


@hookimpl
def accelerate_core_unwrap_model(model: Any) -> Any:
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


@hookimpl
def accelerate_core_no_sync(context: Any) -> Any:
    from .wrapping import no_sync

    return no_sync


@hookimpl
def accelerate_core_launch_options() -> list[LaunchOption]:
    """``accel launch --ddp-...`` options; they reach ``Accelerator(backend_options=...)``."""
    from .options import COMM_HOOKS

    def option(name: str, help: str, type: str, **kwargs: Any) -> LaunchOption:
        return LaunchOption(f"ddp-{name}", help, type, backend=NAME, **kwargs)

    return [
        option(
            "find-unused-parameters",
            "DDP find_unused_parameters (models with unused parts)",
            "bool",
        ),
        option("static-graph", "DDP static_graph (the graph is the same every step)", "bool"),
        option("gradient-as-bucket-view", "DDP gradient_as_bucket_view (saves memory)", "bool"),
        option("bucket-cap-mb", "DDP bucket_cap_mb (all-reduce bucket size in MiB)", "float"),
        option("broadcast-buffers", "DDP broadcast_buffers at every forward (default on)", "bool"),
        option("comm-hook", "gradient compression hook", "str", choices=COMM_HOOKS),
        option("comm-hook-options", "JSON options of the comm hook (PowerSGD state)", "json"),
    ]


@hookimpl
def accelerate_core_estimate_memory(
    parameters: list, num_processes: int, mixed_precisions: list[str]
) -> list[MemoryEstimate]:
    """DDP replicates parameters, gradients and optimizer state on every rank (fp32 under the
    core's autocast), plus its gradient buckets (not model state, not counted)."""
    from accelerate_core.memory_formulas import replicated

    figures = replicated(parameters, num_processes)
    note = "replicated on every rank; autocast keeps fp32 state; buckets not counted"
    return [MemoryEstimate(NAME, "replicated", p, *figures, note) for p in mixed_precisions]
