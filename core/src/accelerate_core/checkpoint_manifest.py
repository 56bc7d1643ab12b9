"""The manifest of a checkpoint: every file with its size and checksum, and what the run held.

Built one way: once every process has written its files, the main process lists the temporary
directory, the processes hash a share of the files each (so a sharded checkpoint is hashed in
parallel, as it was written), and the main process writes ``manifest.json``. Files a backend wrote
with its own writer (DeepSpeed, ``torch.distributed.checkpoint``) are listed like the core's.
"""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from . import collectives
from .checkpoint_io import MANIFEST, Record, file_record, write_json
from .errors import CheckpointError
from .version import __version__

FORMAT = "accelerate-core-checkpoint/1"
OBJECT_KINDS = ("models", "optimizers", "schedulers", "dataloaders", "custom")


def describe_files(directory: Path, rank: int, world_size: int) -> dict[str, Record]:
    """Size and checksum of every file under ``directory``; collective when ``world_size > 1``.

    The main process lists the files (largest first) and deals them out, so each process hashes
    about the same number of bytes; everyone receives the whole table.
    """
    names: list[Any] = [None]
    if rank == 0:
        found = [p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST]
        found.sort(key=lambda p: (-p.stat().st_size, p.as_posix()))
        names[0] = [p.relative_to(directory).as_posix() for p in found]
    if world_size > 1:
        names = collectives.broadcast_object_list(names, from_process=0)
    mine = {name: file_record(directory / name) for name in names[0][rank::world_size]}
    if world_size == 1:
        return mine
    table: dict[str, Record] = {}
    for part in collectives.gather_object(mine):
        table.update(part)
    return dict(sorted(table.items()))


def write_manifest(directory: Path, files: dict[str, Record], **facts: Any) -> None:
    """``manifest.json`` with the format, creation time, versions, ``facts`` and ``files``."""
    write_json(
        directory / MANIFEST,
        {
            "format": FORMAT,
            "created": datetime.now(timezone.utc).isoformat(),
            **facts,
            "files": files,
        },
    )


def versions(backend_distribution: str | None) -> dict[str, str]:
    found = {
        "accelerate-core": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if backend_distribution is not None:
        found["backend"] = backend_distribution
    return found


def _mesh_text(sizes: dict[str, int]) -> str:
    return " x ".join(f"{dim}={size}" for dim, size in sizes.items() if size > 1) or "1 process"


def check_fits(
    manifest: dict[str, Any],
    directory: Path,
    *,
    world_size: int,
    backend: str,
    counts: dict[str, int],
    parallelism: dict[str, int] | None = None,
) -> None:
    """Refuse a checkpoint this run cannot resume from, before anything is read.

    ``parallelism``: the run's mesh sizes (``ParallelLayout.sizes``); a checkpoint saved under
    another mesh is refused (checkpoints from before meshes were recorded are not checked).
    """
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{directory} has format {manifest.get('format')!r}, not {FORMAT}")
    if manifest["world_size"] != world_size:
        raise CheckpointError(
            f"{directory} was saved by {manifest['world_size']} process(es) and this run has "
            f"{world_size}; backend '{backend}' cannot reshard its state. Resume with "
            f"{manifest['world_size']} process(es), or load the weights alone (save_model / "
            "load_state_dict)"
        )
    saved_layout = manifest.get("parallelism")
    if parallelism is not None and saved_layout is not None and saved_layout != parallelism:
        raise CheckpointError(
            f"{directory} was saved under the mesh {_mesh_text(saved_layout)} and this run has "
            f"{_mesh_text(parallelism)}; resharding a checkpoint to another mesh is not "
            "supported (the data-parallel ranks would read other batches, so the resume would "
            "not be exact). Resume with the same ParallelismConfig, or load the weights alone "
            "(save_model)"
        )
    if manifest["backend"] != backend:
        raise CheckpointError(
            f"{directory} was saved with backend '{manifest['backend']}', this run uses "
            f"'{backend}'; resume with the same backend"
        )
    saved = manifest["objects"]
    for kind in OBJECT_KINDS:
        if saved[kind] != counts[kind]:
            raise CheckpointError(
                f"{directory} holds {saved[kind]} {kind} but this run prepared {counts[kind]}; "
                "prepare (and register_for_checkpointing) the same objects before load_state"
            )
