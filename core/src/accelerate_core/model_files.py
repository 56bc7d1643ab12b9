"""``save_model``: consolidated weights as (sharded) safetensors that plain libraries can load.

The layout is the one the ecosystem reads: ``model.safetensors``, or
``model-00001-of-0000N.safetensors`` files plus ``model.safetensors.index.json`` mapping every
tensor to its file (``pytorch_model*.bin`` the same way with ``safe_serialization=False``).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from .checkpoint_io import write_object, write_tensors

UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
         "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}  # fmt: skip


def parse_size(size: int | str) -> int:
    """``"5GB"`` / ``"500MiB"`` / ``1000`` -> bytes."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*([\d.]+)\s*([A-Za-z]*)\s*", size)
    if not match or match.group(2).upper() not in UNITS | {"": 1}:
        raise ValueError(f"max_shard_size {size!r} is not a size like '5GB' or '500MiB'")
    return int(float(match.group(1)) * UNITS.get(match.group(2).upper(), 1))


def shard_state_dict(state: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, Any]]:
    """Split into consecutive shards of at most ``max_bytes`` (a larger tensor stands alone)."""
    shards: list[dict[str, Any]] = [{}]
    size = 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    return shards


def write_model(
    state: dict[str, Any],
    directory: str | os.PathLike[str],
    max_shard_size: int | str = "10GB",
    safe_serialization: bool = True,
) -> list[Path]:
    """Write ``state`` (tensors) into ``directory``; returns the files written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    shards = shard_state_dict(tensors, parse_size(max_shard_size))
    stem, suffix = ("model", ".safetensors") if safe_serialization else ("pytorch_model", ".bin")
    names = (
        [f"{stem}{suffix}"]
        if len(shards) == 1
        else [f"{stem}-{i + 1:05d}-of-{len(shards):05d}{suffix}" for i in range(len(shards))]
    )
    for stale in directory.glob(f"{stem}*{suffix}*"):
        stale.unlink()
    written = []
    for name, shard in zip(names, shards):
        if safe_serialization:
            write_tensors(directory / name, shard)
        else:
            write_object(directory / name, {k: v.detach().cpu() for k, v in shard.items()})
        written.append(directory / name)
    if len(shards) > 1:
        index = {
            "metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())},
            "weight_map": {k: name for name, shard in zip(names, shards) for k in shard},
        }
        index_path = directory / f"{stem}{suffix}.index.json"
        index_path.write_text(json.dumps(index, indent=2, sort_keys=True))
        written.append(index_path)
    return written
