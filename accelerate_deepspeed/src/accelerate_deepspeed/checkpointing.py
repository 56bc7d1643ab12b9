"""``save_state``/``load_state``/``save_model`` under DeepSpeed, in the engine's own format.

``save_state`` writes each engine with ``engine.save_checkpoint(directory, tag="model_<i>")``:
every rank writes its ZeRO partitions of the optimizer state (and, under ZeRO-3, of the
parameters) into ``model_<i>/``; the core lists those files in its manifest and checks them on
load. The hooks return the names of the engines and their optimizers; models that DeepSpeed does
not own (prepared without an optimizer) are left to the core, which stores them replicated.
``accel merge-weights`` turns a saved engine into safetensors offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from accelerate_core import CheckpointError

from .runtime import DeepSpeedOptimizer, is_engine


def _ours(objects: dict[str, Any]) -> dict[str, Any]:
    """The engines and their optimizers (the core stores everything else)."""
    return {
        name: obj
        for name, obj in objects.items()
        if is_engine(obj) or isinstance(getattr(obj, "optimizer", None), DeepSpeedOptimizer)
    }


def save_state(objects: dict[str, Any], directory: str, context: Any) -> list[str]:
    """Write every engine with ``save_checkpoint`` (all ranks); return what was stored."""
    gradient_state = context.gradient_state
    if gradient_state is not None and gradient_state.mid_cycle:
        raise CheckpointError(
            "save_state() in the middle of a gradient-accumulation cycle: under DeepSpeed the "
            "accumulated gradients live in the engine's partitioned buffers, which DeepSpeed "
            "checkpoints do not hold. Save after the optimizer step (when "
            "accelerator.sync_gradients is True)"
        )
    ours = _ours(objects)
    for name, obj in ours.items():
        if is_engine(obj):
            obj.save_checkpoint(directory, tag=name, client_state={}, save_latest=False)
    return list(ours)


def load_state(objects: dict[str, Any], directory: str, context: Any) -> list[str]:
    """Load what ``save_state`` wrote: engines, with their optimizers and schedulers."""
    ours = _ours(objects)
    for name, obj in ours.items():
        if not is_engine(obj):
            continue
        if not (Path(directory) / name).is_dir():
            raise CheckpointError(
                f"{directory} holds no DeepSpeed checkpoint {name}/; it was not written by "
                "save_state() with backend 'deepspeed' and the same prepared objects"
            )
        path, _ = obj.load_checkpoint(
            directory, tag=name, load_optimizer_states=True, load_lr_scheduler_states=True
        )
        if path is None:
            raise CheckpointError(f"DeepSpeed could not load {Path(directory) / name}")
    return list(ours)


def full_state_dict(model: Any, context: Any) -> dict[str, Any] | None:
    """ZeRO-3: the gathered weights on the main process (``{}`` on the others); else ``None``.

    Under ZeRO 0-2 every rank holds the full module, so the core's default (the unwrapped
    module's ``state_dict()``) is already complete. The weights are the module's (16-bit under
    fp16/bf16); ``accel merge-weights`` gives the fp32 master weights of a checkpoint instead.
    """
    if not is_engine(model) or not model.zero_optimization_partition_weights():
        return None
    state = model._zero3_consolidated_16bit_state_dict()
    return dict(state) if state is not None else {}
