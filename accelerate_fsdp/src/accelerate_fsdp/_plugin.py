"""Hook implementations of the ``fsdp`` backend (tiny: torch.distributed.fsdp is imported inside
the hook bodies, only when ``fsdp`` was selected; the work is in the other modules)."""

from __future__ import annotations

from typing import Any

from accelerate_core import BackendSpec, LaunchOption, hookimpl
from accelerate_core.specs import ExportedName

NAME = "fsdp"


@hookimpl
def accelerate_core_backends() -> list[BackendSpec]:
    return [
        BackendSpec(
            NAME,
            "torch FSDP2 (fully_shard): shard parameters, gradients and optimizer state",
            min_processes=2,
            places_models=True,  # fully_shard places the shards; meta-device models stay put
            distributed_type="FSDP",
        )
    ]


@hookimpl
def accelerate_core_exported_names() -> list[ExportedName]:
    """HF's ``FullyShardedDataParallelPlugin`` at ``accelerate_core.utils``."""
    target = f"{__package__}.hf_plugin:FullyShardedDataParallelPlugin"
    return [ExportedName("FullyShardedDataParallelPlugin", target, NAME)]


@hookimpl
def accelerate_core_validate_options(kind: str, name: str, options: dict[str, Any]) -> bool:
    from .options import FSDPOptions

    if kind == "backend":
        FSDPOptions.from_mapping(options)
    return kind == "backend"


@hookimpl
def accelerate_core_wrap(request: Any, context: Any) -> Any:
    from .wrapping import shard_request

    return shard_request(request, context)


@hookimpl
def accelerate_core_unwrap_model(model: Any) -> Any:
    return model  # fully_shard shards the user's module in place: it is its own unwrapped form


@hookimpl
def accelerate_core_no_sync(context: Any) -> Any:
    from .training import no_sync

    return no_sync


@hookimpl
def accelerate_core_clip_grad_norm(context: Any) -> Any:
    from .training import clip_grad_norm

    return clip_grad_norm


@hookimpl
def accelerate_core_clip_grad_value(context: Any) -> Any:
    from .training import clip_grad_value

    return clip_grad_value


@hookimpl
def accelerate_core_get_state_dict(model: Any, context: Any) -> Any:
    from .checkpointing import full_state_dict

    return full_state_dict(model)


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
    """``accel launch --fsdp-...`` options; they reach ``Accelerator(backend_options=...)``."""
    from .options import LAUNCH_OPTIONS

    return [
        LaunchOption(
            f"{NAME}-{flag.key.replace('_', '-')}",
            flag.help,
            flag.type,
            choices=flag.choices,
            backend=NAME,
            key=flag.key,
        )
        for flag in LAUNCH_OPTIONS
    ]
