"""Checkpoint file I/O: safe formats, sizes and checksums, atomic directories.

Model weights go to safetensors; every other object through ``torch.save`` and back with
``weights_only=True``, so loading a checkpoint never runs pickled code. Files are written
straight to disk by those libraries (no extra copy in memory); each file's size and XXH3-64
checksum are then recorded, hashed through a memory map at memory speed. On load, presence and
sizes are checked before anything is read, and the checksums in a second thread while loading
runs; a mismatch raises before ``load_state`` returns.
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import xxhash

from .errors import CheckpointError

MANIFEST = "manifest.json"
Record = dict[str, Any]


def file_record(path: Path) -> Record:
    """Size and XXH3-64 of ``path`` (hashed through mmap: the page cache is not copied)."""
    size = path.stat().st_size
    if size == 0:
        return {"size": 0, "xxh3_64": xxhash.xxh3_64_hexdigest(b"")}
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
        return {"size": size, "xxh3_64": xxhash.xxh3_64_hexdigest(view)}


class Verification:
    """Checks a checkpoint's files against its manifest: sizes now, checksums in a thread."""

    def __init__(self, directory: Path, files: Mapping[str, Record]) -> None:
        self.directory = directory
        for name, record in files.items():
            path = directory / name
            if not path.exists():
                raise CheckpointError(
                    f"checkpoint file {path} is missing; the checkpoint is incomplete"
                )
            size = path.stat().st_size
            if size != record["size"]:
                raise CheckpointError(
                    f"checkpoint file {path} has {size} bytes, the manifest says "
                    f"{record['size']}: it is truncated or was replaced; use another checkpoint"
                )
        self._corrupt: list[str] = []
        self._thread = threading.Thread(target=self._hash_all, args=(dict(files),), daemon=True)
        self._thread.start()

    def _hash_all(self, files: dict[str, Record]) -> None:
        for name, record in files.items():
            if file_record(self.directory / name)["xxh3_64"] != record["xxh3_64"]:
                self._corrupt.append(name)

    def check(self) -> None:
        """Wait for the checksums; raise naming the first corrupt file."""
        self._thread.join()
        if self._corrupt:
            raise CheckpointError(
                f"checkpoint file {self.directory / self._corrupt[0]} is corrupt (checksum "
                "mismatch); use another checkpoint"
            )


def _storable(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors with no shared storage (what safetensors accepts)."""
    seen: set[tuple[int, int]] = set()
    prepared = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu()
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in seen or not tensor.is_contiguous():
            tensor = tensor.clone().contiguous()
        seen.add(key)
        prepared[name] = tensor
    return prepared


def write_tensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    save_file(_storable(tensors), path)


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)


def write_object(path: Path, obj: Any) -> None:
    torch.save(obj, path)


def read_object(path: Path) -> Any:
    try:
        return torch.load(path, weights_only=True, map_location="cpu", mmap=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path} cannot be loaded safely (weights_only=True): {exc}. Only tensors, numbers, "
            "strings and containers of them are loaded; save other state as those"
        ) from exc


def put_tensors(directory: Path, name: str, tensors: Mapping[str, torch.Tensor]) -> None:
    """Write ``directory/name`` as safetensors (the manifest records it once the save is done)."""
    write_tensors(Path(directory) / name, tensors)


def put_object(directory: Path, name: str, obj: Any) -> None:
    """Write ``directory/name`` with ``torch.save`` (read back with ``weights_only=True``)."""
    write_object(Path(directory) / name, obj)


def listed(directory: Path, name: str, manifest: Mapping[str, Any]) -> Path:
    """``directory/name``, which must be one of the files the manifest vouches for."""
    if name not in manifest["files"]:
        raise CheckpointError(
            f"{name} is not listed in {Path(directory) / MANIFEST}; the checkpoint is incomplete "
            "or was altered"
        )
    return Path(directory) / name


def get_object(directory: Path, name: str, manifest: Mapping[str, Any]) -> Any:
    return read_object(listed(directory, name, manifest))


def get_tensors(directory: Path, name: str, manifest: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    return read_tensors(listed(directory, name, manifest))


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True))


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    if not path.exists():
        if _written_by_hf_accelerate(directory):
            raise CheckpointError(
                f"{directory} was written by Hugging Face Accelerate's save_state; convert it "
                f"once with `accel convert-checkpoint {directory} NEW_DIR` and load_state(NEW_DIR)"
            )
        raise CheckpointError(
            f"{directory} has no {MANIFEST}: it is not a complete accelerate-core checkpoint "
            "(a save that was interrupted, or another format)"
        )
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc


def _written_by_hf_accelerate(directory: Path) -> bool:
    """HF's ``save_state`` layout: its RNG pickles next to its model or optimizer files."""
    names = {p.name for p in directory.iterdir()}
    has_rng = any(n.startswith("random_states_") and n.endswith(".pkl") for n in names)
    has_state = bool(names & {"model.safetensors", "pytorch_model.bin", "optimizer.bin"})
    return has_rng or has_state


def replace_directory(source: Path, target: Path) -> None:
    """Move the finished ``source`` to ``target``; an existing ``target`` is replaced."""
    if target.exists():
        trash = target.with_name(f".trash-{target.name}-{os.getpid()}")
        os.replace(target, trash)
        os.replace(source, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(source, target)
