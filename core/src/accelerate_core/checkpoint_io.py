"""Checkpoint file I/O: safe formats, sizes and checksums, atomic directories.

Model weights go to safetensors; every other object through ``torch.save`` and back with
``weights_only=True``, so loading a checkpoint never runs pickled code. Every file's size and
CRC32 are recorded as it is written (the checksum runs in a second thread while the bytes are
written, so it costs next to no time) and checked before anything is loaded.
"""

from __future__ import annotations

import io
import json
import os
import threading
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError

MANIFEST = "manifest.json"


def _crc32(data: memoryview, out: list[int]) -> None:
    out.append(zlib.crc32(data) & 0xFFFFFFFF)


def write_bytes(path: Path, data: bytes | memoryview) -> dict[str, int]:
    """Write ``data`` to ``path``; return its size and CRC32 (computed while writing)."""
    view = memoryview(data)
    checksum: list[int] = []
    worker = threading.Thread(target=_crc32, args=(view, checksum))
    worker.start()
    with open(path, "wb") as f:
        f.write(view)
    worker.join()
    return {"size": len(view), "crc32": checksum[0]}


def read_verified(path: Path, record: Mapping[str, int] | None) -> bytes:
    """The bytes of ``path``, after checking them against their manifest record."""
    if not path.exists():
        raise CheckpointError(f"checkpoint file {path} is missing; the checkpoint is incomplete")
    data = path.read_bytes()
    if record is None:
        raise CheckpointError(
            f"{path.name} is not listed in {path.parent / MANIFEST}; the checkpoint was altered"
        )
    if len(data) != record["size"]:
        raise CheckpointError(
            f"checkpoint file {path} has {len(data)} bytes, the manifest says {record['size']}: "
            "it is truncated or was replaced; use another checkpoint"
        )
    if zlib.crc32(data) & 0xFFFFFFFF != record["crc32"]:
        raise CheckpointError(
            f"checkpoint file {path} is corrupt (checksum mismatch); use another checkpoint"
        )
    return data


def tensors_to_bytes(tensors: Mapping[str, torch.Tensor]) -> bytes:
    """safetensors bytes of ``tensors`` (shared or non-contiguous storage handled by copying)."""
    from safetensors.torch import save

    seen: set[tuple[int, int]] = set()
    prepared = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu()
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in seen or not tensor.is_contiguous():
            tensor = tensor.clone().contiguous()
        seen.add(key)
        prepared[name] = tensor
    return save(prepared)


def tensors_from_bytes(data: bytes) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(data)


def object_to_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def object_from_bytes(data: bytes, path: Path) -> Any:
    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as exc:
        raise CheckpointError(
            f"{path} cannot be loaded safely (weights_only=True): {exc}. Only tensors, numbers, "
            "strings and containers of them are loaded; save other state as those"
        ) from exc


def write_json(path: Path, obj: Any) -> dict[str, int]:
    return write_bytes(path, json.dumps(obj, indent=2, sort_keys=True).encode())


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    if not path.exists():
        raise CheckpointError(
            f"{directory} has no {MANIFEST}: it is not a complete accelerate-core checkpoint "
            "(a save that was interrupted, or another format)"
        )
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc


def replace_directory(source: Path, target: Path) -> None:
    """Move the finished ``source`` to ``target``; an existing ``target`` is replaced."""
    if target.exists():
        trash = target.with_name(f".trash-{target.name}-{os.getpid()}")
        os.replace(target, trash)
        os.replace(source, target)
        _remove_tree(trash)
    else:
        os.replace(source, target)


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
