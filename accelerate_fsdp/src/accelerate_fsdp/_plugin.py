"""Hook implementations of the ``fsdp`` backend (tiny: torch.distributed.fsdp is imported inside
the hook bodies, only when ``fsdp`` was selected; the work is in the other modules)."""

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

NAME = "fsdp"


@hookimpl
def accelerate_core_backends() -> list[BackendSpec]:
    return [
        BackendSpec(
            NAME,
            "torch FSDP2 (fully_shard): shard parameters, gradients and optimizer state",
            min_processes=2,
            places_models=True,  # fully_shard places the shards; meta-device models stay put
            parallelism=frozenset({"dp_replicate", "dp_shard", "tp", "cp"}),
            distributed_type="FSDP",
        )
    ]


@hookimpl
def accelerate_core_exported_names() -> list[ExportedName]:
    """HF's ``FullyShardedDataParallelPlugin`` at ``accelerate_core.utils``."""
    target = f"{__package__}.hf_plugin:FullyShardedDataParallelPlugin"
    return [ExportedName("FullyShardedDataParallelPlugin", target, NAME)]


@hookimpl
def accelerate_core_validate_options(
    kind: str, name: str, options: dict[str, Any], context: Any
) -> bool:
    from .options import FSDPOptions
    from .wrapping import check_layout

    if kind == "backend":
        # The ParallelismConfig layouts this backend refuses, with the options they clash with.
        check_layout(context.parallelism, FSDPOptions.from_mapping(options))
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


@hookimpl
def accelerate_core_launch_aliases() -> list[LaunchAlias]:
    """Hugging Face Accelerate's ``--use_fsdp`` / ``--fsdp_*`` flags and ``fsdp_config`` keys."""
    from .hf_aliases import aliases

    return aliases()


@hookimpl
def accelerate_core_checkpoint_weights(
    directory: str, manifest: dict | None, model: str
) -> CheckpointWeights | None:
    """``accel merge-weights``: a sharded (DCP) or full fsdp checkpoint's weights."""
    from .merging import checkpoint_weights

    return checkpoint_weights(directory, manifest, model)


@hookimpl
def accelerate_core_estimate_memory(
    parameters: list, num_processes: int, mixed_precisions: list[str]
) -> list[MemoryEstimate]:
    """FSDP2 splits every parameter (and its gradient and Adam state) along dimension 0; the
    sharded parameters stay fp32 under bf16/fp16 (only the gathered copies are 16-bit) and
    gradients are reduced in fp32, so the state at rest does not depend on the precision."""
    from accelerate_core.memory_formulas import sharded_dim0

    if num_processes < 2:
        return []
    figures = sharded_dim0(parameters, num_processes)
    note = "dim-0 shards, stored padded to ceil(rows/N); gathered units in compute not counted"
    return [MemoryEstimate(NAME, "sharded", p, *figures, note) for p in mixed_precisions]
