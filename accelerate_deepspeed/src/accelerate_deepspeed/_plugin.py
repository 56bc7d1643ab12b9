"""Hook implementations of the ``deepspeed`` backend.

Deliberately tiny: loading it imports neither DeepSpeed nor the modules that use it. The hook
bodies import ``runtime`` (which imports DeepSpeed) only once ``deepspeed`` was selected.
"""

from __future__ import annotations

from typing import Any

from accelerate_core import (
    BackendSpec,
    CheckpointWeights,
    LaunchAlias,
    LaunchOption,
    MemoryEstimate,
    hookimpl,
)
from accelerate_core.specs import ExportedName

NAME = "deepspeed"


@hookimpl
def accelerate_core_backends() -> list[BackendSpec]:
    return [
        BackendSpec(
            NAME,
            "DeepSpeed ZeRO 0-3 engine (partitioned optimizer/gradients/parameters, offload)",
            owns_precision=True,
            places_models=True,
            reduces_every_micro_step=True,  # ZeRO-2/3 reduce into partitioned gradients
            steps_schedulers=True,  # engine.step() steps the LR scheduler once per update
            distributed_type="DEEPSPEED",
        )
    ]


@hookimpl
def accelerate_core_exported_names() -> list[ExportedName]:
    """HF's DeepSpeed names at ``accelerate_core.utils`` (none of them imports DeepSpeed)."""
    where = {"DeepSpeedPlugin": "hf_plugin", "DummyOptim": "placeholders",
             "DummyScheduler": "placeholders"}  # fmt: skip
    return [ExportedName(n, f"{__package__}.{m}:{n}", NAME) for n, m in where.items()]


def _runtime(context: Any) -> Any:
    from .runtime import runtime_for

    return runtime_for(context)


@hookimpl
def accelerate_core_validate_options(kind: str, name: str, options: dict[str, Any]) -> bool:
    from .options import DeepSpeedOptions  # no DeepSpeed import: options are plain records

    if kind == "backend":
        DeepSpeedOptions.from_mapping(dict(options))
    return kind == "backend"


@hookimpl
def accelerate_core_wrap(request: Any, context: Any) -> Any:
    return _runtime(context).wrap(request)


@hookimpl
def accelerate_core_unwrap_model(model: Any) -> Any:
    from .runtime import is_engine

    return model.module if is_engine(model) else model


@hookimpl
def accelerate_core_backward(context: Any, scaler: Any) -> Any:
    # Asked at Accelerator creation: a missing DeepSpeed fails here, on every rank.
    return _runtime(context).backward_function()


@hookimpl
def accelerate_core_no_sync(context: Any) -> Any:
    from .runtime import no_sync

    return no_sync


@hookimpl
def accelerate_core_clip_grad_norm(context: Any) -> Any:
    return _runtime(context).clip_function()


@hookimpl
def accelerate_core_clip_grad_value(context: Any) -> Any:
    from .runtime import clip_by_value

    return clip_by_value


@hookimpl
def accelerate_core_optimizer_step(context: Any, scaler: Any) -> Any:
    return _runtime(context).step


@hookimpl
def accelerate_core_get_state_dict(model: Any, context: Any) -> Any:
    from .checkpointing import full_state_dict

    return full_state_dict(model, context)


@hookimpl
def accelerate_core_save_state(objects: dict, directory: str, context: Any) -> list[str]:
    from .checkpointing import save_state

    return save_state(objects, directory, context)


@hookimpl
def accelerate_core_load_state(objects: dict, directory: str, context: Any) -> list[str]:
    from .checkpointing import load_state

    return load_state(objects, directory, context)


@hookimpl
def accelerate_core_launch_options() -> list[LaunchOption]:
    """``accel launch --zero-stage N --deepspeed-config FILE ...``; they reach backend_options."""
    from .options import launch_options

    return launch_options()


@hookimpl
def accelerate_core_launch_aliases() -> list[LaunchAlias]:
    """Hugging Face Accelerate's ``--use_deepspeed`` flags and ``deepspeed_config`` keys."""
    from .hf_aliases import aliases

    return aliases()


@hookimpl
def accelerate_core_checkpoint_weights(
    directory: str, manifest: dict | None, model: str, options: dict
) -> CheckpointWeights | None:
    """``accel merge-weights``: the fp32 master weights of a ZeRO checkpoint (offline)."""
    from .merge import checkpoint_weights

    return checkpoint_weights(directory, manifest, model, options.get("tag"))


@hookimpl
def accelerate_core_estimate_memory(
    parameters: list, num_processes: int, mixed_precisions: list[str]
) -> list[MemoryEstimate]:
    """ZeRO stages 0-3 (the ZeRO paper's layout, as measured on DeepSpeed 0.19)."""
    from .memory import estimates

    return estimates(parameters, num_processes, mixed_precisions)
