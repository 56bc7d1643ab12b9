"""``accel merge-weights`` for the fsdp backend: one model's full weights, offline.

A sharded checkpoint (``torch.distributed.checkpoint`` under ``fsdp_sharded/``) is read tensor by
tensor without a process group (``no_dist=True``): each tensor is assembled from every rank's
shards straight into a full CPU tensor, so memory holds one tensor at a time. A ``full``
checkpoint already holds ``model_<i>.safetensors``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from accelerate_core import CheckpointWeights

from .checkpointing import META, SHARDED_DIR

NAME = "fsdp"


def checkpoint_weights(
    directory: str, manifest: dict[str, Any] | None, model: str
) -> CheckpointWeights | None:
    """The weights of ``model`` in a checkpoint this backend wrote, or ``None`` (not ours)."""
    if manifest is None or manifest.get("backend") != NAME:
        return None
    if model not in manifest.get("backend_objects", ()):
        return None  # stored by the core (a model this backend did not shard)
    path = Path(directory)
    meta = json.loads((path / META).read_text())
    if meta["state_dict_type"] == "full":
        return _full(path / f"{model}.safetensors")
    return _sharded(path / SHARDED_DIR, model)


def _full(file: Path) -> CheckpointWeights:
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as opened:
        names = tuple(opened.keys())

    def load(name: str) -> torch.Tensor:
        with safe_open(str(file), framework="pt") as opened:
            return opened.get_tensor(name)

    return CheckpointWeights(names, load, description=f"{file.name} (fsdp, full)")


def _sharded(directory: Path, model: str) -> CheckpointWeights:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    metadata = dcp.FileSystemReader(str(directory)).read_metadata()
    prefix = f"{model}."
    entries = {
        key[len(prefix) :]: value
        for key, value in metadata.state_dict_metadata.items()
        if key.startswith(prefix) and isinstance(value, TensorStorageMetadata)
    }
    sizes = {
        name: math.prod(entry.size) * entry.properties.dtype.itemsize
        for name, entry in entries.items()
    }

    def load(name: str) -> torch.Tensor:
        entry = entries[name]
        tensor = torch.empty(tuple(entry.size), dtype=entry.properties.dtype)
        dcp.load(
            {prefix + name: tensor},
            storage_reader=dcp.FileSystemReader(str(directory)),
            no_dist=True,
        )
        return tensor

    return CheckpointWeights(
        tuple(entries), load, sizes, f"{model} from torch.distributed.checkpoint shards (fsdp)"
    )
