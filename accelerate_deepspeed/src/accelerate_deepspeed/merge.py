"""``accel merge-weights`` for DeepSpeed (ZeRO) checkpoints: full fp32 weights, offline.

Runs on one process without GPUs: DeepSpeed's ``zero_to_fp32`` reassembles the fp32 master
weights from every rank's partitions. Accepts a ``save_state`` directory of accelerate-core (the
engine is its ``model_<i>/``), a DeepSpeed ``save_checkpoint`` directory (tag from ``latest``),
or one tag directory; ``accel merge-weights`` reaches it through the plugin hook
``accelerate_core_checkpoint_weights``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from accelerate_core import CheckpointWeights

NAME = "deepspeed"

MODEL_STATES = "*mp_rank_00_model_states.pt"  # ZeRO-3 prefixes zero_pp_rank_<r>_


def _is_checkpoint(directory: Path) -> bool:
    return directory.is_dir() and any(directory.glob(MODEL_STATES))


def find_checkpoint(path: str | os.PathLike[str], tag: str | None = None) -> tuple[Path, str]:
    """``(checkpoint_dir, tag)`` of the DeepSpeed checkpoint at ``path``; clear error if none."""
    path = Path(path)
    if tag is not None:
        if not _is_checkpoint(path / tag):
            raise FileNotFoundError(f"{path / tag} holds no DeepSpeed checkpoint ({MODEL_STATES})")
        return path, tag
    if _is_checkpoint(path):
        return path.parent, path.name
    latest = path / "latest"
    if latest.is_file():
        return path, latest.read_text().strip()
    tags = sorted(p.name for p in path.iterdir() if _is_checkpoint(p)) if path.is_dir() else []
    if len(tags) == 1:
        return path, tags[0]
    if not tags:
        raise FileNotFoundError(
            f"{path} holds no DeepSpeed checkpoint: expected a save_state() directory of backend "
            f"'deepspeed', a DeepSpeed checkpoint with a 'latest' file, or a directory with "
            f"{MODEL_STATES}"
        )
    raise FileNotFoundError(
        f"{path} holds several DeepSpeed checkpoints ({', '.join(tags)}); choose one with --tag"
    )


def fp32_state_dict(path: str | os.PathLike[str], tag: str | None = None) -> dict[str, Any]:
    """The full fp32 weights of the checkpoint at ``path`` (ZeRO 0-3), on the CPU."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")  # offline: never touch a GPU
    import torch
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    directory, tag = find_checkpoint(path, tag)
    if not any((directory / tag).glob("*optim_states.pt")):  # ZeRO stage 0: the module as is
        (file,) = (directory / tag).glob(MODEL_STATES)
        states = torch.load(file, map_location="cpu", weights_only=False)
        return {k: v.float() if v.is_floating_point() else v for k, v in states["module"].items()}
    return dict(get_fp32_state_dict_from_zero_checkpoint(str(directory), tag=tag))


def merge_weights(
    checkpoint: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    tag: str | None = None,
    max_shard_size: int | str = "10GB",
    safe_serialization: bool = True,
) -> list[Path]:
    """Write the checkpoint's fp32 weights as ``model.safetensors`` (sharded when large)."""
    from accelerate_core.model_files import write_model

    state = fp32_state_dict(checkpoint, tag)
    return write_model(
        {k: v.contiguous() for k, v in state.items()}, output_dir, max_shard_size,
        safe_serialization,
    )  # fmt: skip


def checkpoint_weights(
    directory: str, manifest: dict[str, Any] | None, model: str, tag: str | None
) -> CheckpointWeights | None:
    """The fp32 weights for ``accel merge-weights``, or ``None`` when the checkpoint is not
    DeepSpeed's (another backend's manifest, or no ZeRO files at all)."""
    path = Path(directory)
    if manifest is not None:
        if manifest.get("backend") != NAME or model not in manifest.get("backend_objects", ()):
            return None
        tag = model  # save_state keeps the engine's checkpoint under the model's name
    elif (
        not _is_checkpoint(path)
        and not (path / "latest").is_file()
        and not any(_is_checkpoint(p) for p in (path.iterdir() if path.is_dir() else ()))
    ):
        return None
    state = fp32_state_dict(path, tag)
    sizes = {k: v.numel() * v.element_size() for k, v in state.items()}
    return CheckpointWeights(tuple(state), state.__getitem__, sizes, "fp32 master weights (ZeRO)")
