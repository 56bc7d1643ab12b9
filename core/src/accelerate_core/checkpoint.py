"""``save_state`` / ``load_state``: everything a run needs to continue exactly where it stopped.

A checkpoint is a directory written under a temporary name and renamed when complete, with a
``manifest.json`` listing every file (size, CRC32), the world size, backend and versions. Models
and optimizers go through the backend's checkpoint hook (the core's default writes replicated
state from the main process, which serves one process and DDP); the rest is the core's:
schedulers, the fp16 scaler, prepared dataloaders' positions, registered objects, accumulated
gradients of an unfinished accumulation cycle, and every process's RNG states.
"""

from __future__ import annotations

import os
import platform
import random
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import collectives
from .checkpoint_io import (
    MANIFEST,
    Record,
    Verification,
    file_record,
    read_manifest,
    read_object,
    read_tensors,
    replace_directory,
    write_json,
    write_object,
    write_tensors,
)
from .errors import CheckpointError
from .plugins import get_plugin_manager

if TYPE_CHECKING:
    from .accelerator import Accelerator
    from .specs import PluginContext

FORMAT = "accelerate-core-checkpoint/1"
CHECKPOINTS_DIR = "checkpoints"
NAME = re.compile(r"^checkpoint_(\d+)$")
TMP_PREFIX = ".tmp-"


@dataclass
class ProjectConfiguration:
    """Where a run keeps its checkpoints (Hugging Face Accelerate's names).

    Args:
        project_dir: root of the run; checkpoints go to ``project_dir/checkpoints``.
        automatic_checkpoint_naming: ``save_state()`` without a directory writes
            ``checkpoint_<n>`` (n = one more than the last complete one).
        total_limit: keep at most this many automatic checkpoints (the oldest are removed
            after a new one is complete).
    """

    project_dir: str | None = None
    automatic_checkpoint_naming: bool = True
    total_limit: int | None = None


# --------------------------------------------------------------------------- records

_RECORDS: dict[str, Record] | None = None


@contextmanager
def _recording() -> Iterator[dict[str, Record]]:
    global _RECORDS
    _RECORDS = {}
    try:
        yield _RECORDS
    finally:
        _RECORDS = None


def _remember(name: str, record: Record) -> None:
    if _RECORDS is not None:
        _RECORDS[name] = record


def put_tensors(directory: Path, name: str, tensors: dict[str, torch.Tensor]) -> None:
    """Write one safetensors file and record its size and checksum for the manifest."""
    _remember(name, write_tensors(directory / name, tensors))


def put_object(directory: Path, name: str, obj: Any) -> None:
    """Write one ``torch.save`` file (loaded back with weights_only) and record it."""
    _remember(name, write_object(directory / name, obj))


def _listed(directory: Path, name: str, manifest: dict[str, Any]) -> Path:
    if name not in manifest["files"]:
        raise CheckpointError(
            f"{name} is not listed in {directory / MANIFEST}; the checkpoint is incomplete or "
            "was altered"
        )
    return directory / name


def get_object(directory: Path, name: str, manifest: dict[str, Any]) -> Any:
    return read_object(_listed(directory, name, manifest))


def get_tensors(directory: Path, name: str, manifest: dict[str, Any]) -> dict[str, torch.Tensor]:
    return read_tensors(_listed(directory, name, manifest))


# --------------------------------------------------------------------------- model state


def unwrap(model: Any, context: PluginContext) -> Any:
    manager = get_plugin_manager()
    inner = manager.call_owner(
        "accelerate_core_unwrap_model", context.state.backend_owner, model=model, context=context
    )
    return getattr(inner, "_orig_mod", inner)


def full_state_dict(model: Any, context: PluginContext) -> dict[str, Any]:
    """The consolidated state dict of a prepared model, whatever the backend."""
    state = get_plugin_manager().call_owner(
        "accelerate_core_get_state_dict", context.state.backend_owner, model=model,
        context=context,
    )  # fmt: skip
    return state if state is not None else unwrap(model, context).state_dict()


def save_replicated(objects: dict[str, Any], directory: Path, context: PluginContext) -> list[str]:
    """The default checkpoint hook: replicated models/optimizers, written by the main process."""
    if context.state.is_main_process:
        for name, obj in objects.items():
            if name.startswith("model_"):
                put_tensors(directory, f"{name}.safetensors", full_state_dict(obj, context))
            else:
                put_object(directory, f"{name}.bin", obj.state_dict())
    return list(objects)


def load_replicated(objects: dict[str, Any], directory: Path, context: PluginContext) -> list[str]:
    manifest = read_manifest(directory)
    for name, obj in objects.items():
        if name.startswith("model_"):
            tensors = get_tensors(directory, f"{name}.safetensors", manifest)
            unwrap(obj, context).load_state_dict(tensors)
        else:
            obj.load_state_dict(get_object(directory, f"{name}.bin", manifest))
    return list(objects)


# --------------------------------------------------------------------------- RNG


def has_device_rng(accelerator: Accelerator) -> bool:
    """Whether the device owner's RNG hooks are asked: for every device but the built-in CPU
    (its generator is the ``"torch"`` entry), including a plugin device that drives the CPU."""
    return accelerator.device.type != "cpu" or accelerator.state.device_spec.name != "cpu"


def rng_state(accelerator: Accelerator) -> dict[str, Any]:
    """This process's RNG states (python, numpy, torch CPU, device) in weights_only-safe form."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    device = accelerator.device
    if has_device_rng(accelerator):
        state["device"] = get_plugin_manager().call_owner(
            "accelerate_core_device_rng_state", accelerator.state.device_owner, device=device
        )
    return state


def restore_rng(accelerator: Accelerator, state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state.get("device") is not None and has_device_rng(accelerator):
        get_plugin_manager().call_owner(
            "accelerate_core_set_device_rng_state", accelerator.state.device_owner,
            device=accelerator.device, rng_state=state["device"],
        )  # fmt: skip


# --------------------------------------------------------------------------- directories


def checkpoints_root(accelerator: Accelerator) -> Path:
    project_dir = accelerator.project_configuration.project_dir
    if project_dir is None:
        raise CheckpointError(
            "save_state()/load_state() without a directory need a project directory: "
            "Accelerator(project_dir='runs/my-run') (or pass a directory)"
        )
    return Path(project_dir) / CHECKPOINTS_DIR


def complete_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Numbered checkpoints under ``root`` that finished (have a manifest), oldest first."""
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = NAME.match(path.name)
        if match and (path / MANIFEST).exists():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(root: Path) -> Path:
    found = complete_checkpoints(root)
    if not found:
        raise CheckpointError(f"no complete checkpoint under {root}; nothing to resume from")
    return found[-1][1]


def _next_target(accelerator: Accelerator) -> Path:
    root = checkpoints_root(accelerator)
    found = complete_checkpoints(root)
    return root / f"checkpoint_{found[-1][0] + 1 if found else 0}"


def _rotate(accelerator: Accelerator, root: Path) -> None:
    limit = accelerator.project_configuration.total_limit
    if limit is None:
        return
    found = complete_checkpoints(root)
    for _, path in found[: max(len(found) - limit, 0)]:
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- save / load


def _objects(accelerator: Accelerator) -> dict[str, Any]:
    named: dict[str, Any] = {}
    named.update({f"model_{i}": m for i, m in enumerate(accelerator._models)})
    named.update({f"optimizer_{i}": o for i, o in enumerate(accelerator._optimizers)})
    return named


def _versions(accelerator: Accelerator) -> dict[str, str]:
    from . import __version__

    versions = {"accelerate-core": __version__, "torch": torch.__version__,
                "python": platform.python_version()}  # fmt: skip
    registered = get_plugin_manager().registry()["backend"].get(accelerator.backend)
    if registered is not None:
        versions["backend"] = registered.distribution
    return versions


def save_state(accelerator: Accelerator, output_dir: str | os.PathLike[str] | None = None) -> Path:
    """Write a complete checkpoint (see module docstring); returns its directory."""
    state = accelerator.state
    automatic = output_dir is None
    target = _next_target(accelerator) if automatic else Path(output_dir)
    tmp_name = [f"{TMP_PREFIX}{target.name}-{secrets.token_hex(4)}"]
    if state.is_main_process:
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in target.parent.glob(f"{TMP_PREFIX}*"):  # left by a killed save
            shutil.rmtree(stale, ignore_errors=True)
        (target.parent / tmp_name[0]).mkdir()
    collectives.broadcast_object_list(tmp_name, from_process=0)  # also: the directory exists
    tmp = target.parent / tmp_name[0]
    context = accelerator.plugin_context
    gradient_state = accelerator.gradient_state
    mid_cycle = gradient_state.step % gradient_state.num_steps != 0
    # Queued device work (an asynchronous or lazy device) must finish before its state is read.
    get_plugin_manager().call_owner(
        "accelerate_core_synchronize", state.device_owner, device=accelerator.device
    )
    with _recording() as records:
        objects = _objects(accelerator)
        handled = get_plugin_manager().call_owner(
            "accelerate_core_save_state", state.backend_owner, objects=objects,
            directory=str(tmp), context=context,
        )  # fmt: skip
        rest = {k: v for k, v in objects.items() if k not in set(handled or ())}
        if rest:  # what the backend left to the core
            save_replicated(rest, tmp, context)
        rank = state.process_index
        put_object(tmp, f"random_states_{rank}.bin", rng_state(accelerator))
        if mid_cycle:
            for i, model in enumerate(accelerator._models):
                grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
                put_tensors(tmp, f"grads_{rank}_model_{i}.safetensors", grads)
        if state.is_main_process:
            for i, scheduler in enumerate(accelerator._schedulers):
                put_object(tmp, f"scheduler_{i}.bin", scheduler.state_dict())
            for i, loader in enumerate(accelerator._dataloaders):
                put_object(tmp, f"dataloader_{i}.bin", loader.state_dict())
            for i, obj in enumerate(accelerator._custom_objects):
                put_object(tmp, f"custom_checkpoint_{i}.bin", obj.state_dict())
            if accelerator.scaler is not None:
                put_object(tmp, "scaler.bin", accelerator.scaler.state_dict())
        mine = dict(records)
    every_rank = collectives.gather_object(mine)
    if state.is_main_process:
        files: dict[str, dict[str, int]] = {}
        for part in every_rank:
            files.update(part)
        for path in sorted(tmp.rglob("*")):  # files a backend wrote with its own writer
            name = path.relative_to(tmp).as_posix()
            if path.is_file() and name not in files:
                files[name] = file_record(path)
        write_json(tmp / MANIFEST, {
            "format": FORMAT,
            "created": datetime.now(timezone.utc).isoformat(),
            "world_size": state.num_processes,
            "backend": accelerator.backend,
            "mixed_precision": accelerator.mixed_precision,
            "versions": _versions(accelerator),
            "objects": {
                "models": len(accelerator._models),
                "optimizers": len(accelerator._optimizers),
                "schedulers": len(accelerator._schedulers),
                "dataloaders": len(accelerator._dataloaders),
                "custom": len(accelerator._custom_objects),
                "scaler": accelerator.scaler is not None,
            },
            "gradient_accumulation": {"step": gradient_state.step, "mid_cycle": mid_cycle},
            "files": files,
        })  # fmt: skip
        replace_directory(tmp, target)
        if automatic:
            _rotate(accelerator, target.parent)
    accelerator.wait_for_everyone()
    return target


def _check_fits(accelerator: Accelerator, manifest: dict[str, Any], directory: Path) -> None:
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{directory} has format {manifest.get('format')!r}, not {FORMAT}")
    if manifest["world_size"] != accelerator.num_processes:
        raise CheckpointError(
            f"{directory} was saved by {manifest['world_size']} process(es) and this run has "
            f"{accelerator.num_processes}; backend '{accelerator.backend}' cannot reshard its "
            f"state. Resume with {manifest['world_size']} process(es), or load the weights "
            "alone (save_model / load_state_dict)"
        )
    if manifest["backend"] != accelerator.backend:
        raise CheckpointError(
            f"{directory} was saved with backend '{manifest['backend']}', this run uses "
            f"'{accelerator.backend}'; resume with the same backend"
        )
    counts = manifest["objects"]
    ours = {
        "models": len(accelerator._models), "optimizers": len(accelerator._optimizers),
        "schedulers": len(accelerator._schedulers),
        "dataloaders": len(accelerator._dataloaders), "custom": len(accelerator._custom_objects),
    }  # fmt: skip
    for kind, count in ours.items():
        if counts[kind] != count:
            raise CheckpointError(
                f"{directory} holds {counts[kind]} {kind} but this run prepared {count}; "
                "prepare (and register_for_checkpointing) the same objects before load_state"
            )


def load_state(accelerator: Accelerator, input_dir: str | os.PathLike[str] | None = None) -> Path:
    """Restore a checkpoint written by ``save_state``; returns its directory."""
    directory = (
        latest_checkpoint(checkpoints_root(accelerator)) if input_dir is None else Path(input_dir)
    )
    manifest = read_manifest(directory)
    _check_fits(accelerator, manifest, directory)
    verification = Verification(directory, manifest["files"])
    try:
        _load_everything(accelerator, directory, manifest)
    except Exception:
        verification.check()  # a corrupt file explains the failure better than its symptom
        raise
    verification.check()
    return directory


def _load_everything(accelerator: Accelerator, directory: Path, manifest: dict[str, Any]) -> None:
    state = accelerator.state
    objects = _objects(accelerator)
    handled = get_plugin_manager().call_owner(
        "accelerate_core_load_state", state.backend_owner, objects=objects,
        directory=str(directory), context=accelerator.plugin_context,
    )  # fmt: skip
    rest = {k: v for k, v in objects.items() if k not in set(handled or ())}
    if rest:  # what the backend left to the core
        load_replicated(rest, directory, accelerator.plugin_context)
    for i, scheduler in enumerate(accelerator._schedulers):
        scheduler.load_state_dict(get_object(directory, f"scheduler_{i}.bin", manifest))
    for i, loader in enumerate(accelerator._dataloaders):
        loader.load_state_dict(get_object(directory, f"dataloader_{i}.bin", manifest))
    for i, obj in enumerate(accelerator._custom_objects):
        obj.load_state_dict(get_object(directory, f"custom_checkpoint_{i}.bin", manifest))
    if accelerator.scaler is not None and manifest["objects"]["scaler"]:
        accelerator.scaler.load_state_dict(get_object(directory, "scaler.bin", manifest))
    accumulation = manifest["gradient_accumulation"]
    accelerator.gradient_state.step = accumulation["step"]
    rank = state.process_index
    for i, model in enumerate(accelerator._models):
        name = f"grads_{rank}_model_{i}.safetensors"
        parameters = dict(model.named_parameters())
        if accumulation["mid_cycle"]:
            grads = get_tensors(directory, name, manifest)
            for param_name, grad in grads.items():
                parameters[param_name].grad = grad.to(parameters[param_name].device)
        else:
            for parameter in parameters.values():
                parameter.grad = None
    restore_rng(accelerator, get_object(directory, f"random_states_{rank}.bin", manifest))
