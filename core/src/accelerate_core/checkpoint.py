"""``save_state`` / ``load_state``: everything a run needs to continue exactly where it stopped.

A checkpoint is a directory written under a temporary name and renamed when complete, with a
``manifest.json`` listing every file (size, XXH3-64), the world size, backend, device and versions
(``checkpoint_manifest``). Models and optimizers go first to the backend's checkpoint hook, which
stores those it shards or owns in its own format and says which; the core stores the rest
replicated, from the main process. The core also stores schedulers, the fp16 scaler, prepared
dataloaders' positions, registered objects, accumulated gradients of an unfinished accumulation
cycle, and every process's RNG states.

Loading checks the whole checkpoint before it changes anything: the core reads its own files
while the checksums are computed, waits for them, and only then hands the backend its files and
restores the objects. A corrupt checkpoint raises and leaves the run as it was. A checkpoint from
another device restores what does not depend on the device and warns, naming both devices, about
the device generator (``device_rng_to_restore``).
"""

from __future__ import annotations

import os
import random
import re
import secrets
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import collectives
from .checkpoint_io import (
    MANIFEST,
    Verification,
    get_object,
    get_tensors,
    put_object,
    put_tensors,
    read_manifest,
    replace_directory,
)
from .checkpoint_manifest import OBJECT_KINDS, check_fits, describe_files, versions, write_manifest
from .errors import CheckpointError
from .gradient_state import GradientState
from .ops import uncompiled
from .plugins import get_plugin_manager
from .specs import PluginContext

CHECKPOINTS_DIR = "checkpoints"
NAME = re.compile(r"^checkpoint_(\d+)$")
TMP_PREFIX = ".tmp-"


@dataclass
class ProjectConfiguration:
    """Where a run keeps its checkpoints (Hugging Face Accelerate's names).

    Args:
        project_dir: root of the run; checkpoints go to ``project_dir/checkpoints``.
        logging_dir: where trackers that write files (TensorBoard, Aim) write; default
            ``project_dir``.
        automatic_checkpoint_naming: ``save_state()`` without a directory writes
            ``checkpoint_<n>`` (n = one more than the last complete one).
        total_limit: keep at most this many automatic checkpoints (the oldest are removed
            after a new one is complete).
        iteration: HF's save counter; accepted, automatic names number on from the last
            complete checkpoint found instead (a restarted run never overwrites one).
        save_on_each_node: ``Accelerator.save`` writes on each machine's main process instead
            of the main process only.
    """

    project_dir: str | None = None
    logging_dir: str | None = None
    automatic_checkpoint_naming: bool = True
    total_limit: int | None = None
    iteration: int = 0
    save_on_each_node: bool = False

    def set_directories(self, project_dir: str | None = None) -> None:
        """Set ``project_dir``, and ``logging_dir`` to it when no logging directory is set."""
        self.project_dir = project_dir
        if self.logging_dir is None:
            self.logging_dir = project_dir

    def __post_init__(self) -> None:
        self.set_directories(self.project_dir)


@dataclass
class TrainingObjects:
    """What a checkpoint holds: the training objects the ``Accelerator`` owns (its own lists,
    not copies) and the process facts needed to save and restore them."""

    state: Any
    context: PluginContext
    gradient_state: GradientState
    project: ProjectConfiguration
    models: list[Any]
    optimizers: list[Any]
    schedulers: list[Any]
    dataloaders: list[Any]
    custom_objects: list[Any]
    scaler: Any = None
    # register_save_state_pre_hook / register_load_state_pre_hook (HF): called in order.
    save_hooks: list[Callable[..., None]] = field(default_factory=list)
    load_hooks: list[Callable[..., None]] = field(default_factory=list)

    def named(self) -> dict[str, Any]:
        """Models and optimizers by checkpoint name: what the backend's hook is offered."""
        named: dict[str, Any] = {f"model_{i}": uncompiled(m) for i, m in enumerate(self.models)}
        named.update({f"optimizer_{i}": o for i, o in enumerate(self.optimizers)})
        return named

    def counts(self) -> dict[str, int]:
        lists = (self.models, self.optimizers, self.schedulers, self.dataloaders,
                 self.custom_objects)  # fmt: skip
        return {kind: len(objects) for kind, objects in zip(OBJECT_KINDS, lists)}


# --------------------------------------------------------------------------- model state


def unwrap(model: Any, context: PluginContext) -> Any:
    """The user's module: ``torch.compile`` wrappers and the backend's wrapper removed."""
    manager = get_plugin_manager()
    inner = manager.call_owner(
        "accelerate_core_unwrap_model", context.state.backend_owner, model=uncompiled(model),
        context=context,
    )  # fmt: skip
    return uncompiled(inner)


def full_state_dict(model: Any, context: PluginContext) -> dict[str, Any]:
    """The consolidated state dict of a prepared model, whatever the backend."""
    state = get_plugin_manager().call_owner(
        "accelerate_core_get_state_dict", context.state.backend_owner, model=uncompiled(model),
        context=context,
    )  # fmt: skip
    return state if state is not None else unwrap(model, context).state_dict()


def _replicated_file(name: str) -> str:
    return f"{name}.safetensors" if name.startswith("model_") else f"{name}.bin"


def save_replicated(objects: dict[str, Any], directory: Path, context: PluginContext) -> None:
    """What no backend stored: replicated models/optimizers, written by the main process."""
    if not context.state.is_main_process:
        return
    for name, obj in objects.items():
        if name.startswith("model_"):
            put_tensors(directory, _replicated_file(name), full_state_dict(obj, context))
        else:
            put_object(directory, _replicated_file(name), obj.state_dict())


def read_replicated(name: str, directory: Path, manifest: dict[str, Any]) -> Any:
    """Read (without applying) what ``save_replicated`` wrote for ``name``."""
    if name.startswith("model_"):
        return get_tensors(directory, _replicated_file(name), manifest)
    return get_object(directory, _replicated_file(name), manifest)


def apply_replicated(name: str, obj: Any, saved: Any, context: PluginContext) -> None:
    if name.startswith("model_"):
        unwrap(obj, context).load_state_dict(saved)
    else:
        obj.load_state_dict(saved)


# --------------------------------------------------------------------------- RNG


class CheckpointDeviceWarning(UserWarning):
    """A checkpoint saved on another device was loaded: what did not apply was not restored."""


def has_device_rng(state: Any) -> bool:
    """Whether the device owner's RNG hooks are asked: for every device but the built-in CPU
    (its generator is the ``"torch"`` entry), including a plugin device that drives the CPU."""
    return state.device.type != "cpu" or state.device_spec.name != "cpu"


def rng_state(state: Any) -> dict[str, Any]:
    """This process's RNG states (python, numpy, torch CPU, device) in weights_only-safe form,
    with the name of the device whose generator ``"device"`` holds."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    rng: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
        "torch": torch.get_rng_state(),
        "device_name": state.device_spec.name,
    }
    if has_device_rng(state):
        rng["device"] = get_plugin_manager().call_owner(
            "accelerate_core_device_rng_state", state.device_owner, device=state.device
        )
    return rng


def device_rng_to_restore(state: Any, rng: dict[str, Any], directory: Path) -> Any:
    """The saved device RNG state this run's device restores, or ``None``.

    The rule for a checkpoint from another device: the Python, NumPy and torch CPU generators
    are restored whatever the device; a device generator's state is handed only to a device of
    the name that saved it. Otherwise this run's device generator keeps its state, and a
    ``CheckpointDeviceWarning`` (main process) names both devices and what was not restored.
    """
    current = state.device_spec.name
    saved = rng.get("device_name", current)  # checkpoints older than the name: the same device
    saved_state = rng.get("device")
    if saved == current:
        return saved_state if has_device_rng(state) else None
    lost = []
    # A CPU-type device without RNG hooks of its own draws from torch's CPU generator, which is
    # restored in any case: nothing of it is lost.
    if saved_state is not None and not (
        torch.is_tensor(saved_state) and torch.equal(saved_state, rng["torch"])
    ):
        lost.append(f"the RNG state of device '{saved}' does not apply here and was not restored")
    if has_device_rng(state) and not _draws_from_the_cpu_generator(state):
        lost.append(
            f"the generator of device '{current}' keeps its current state (call set_seed after "
            "load_state for reproducible draws)"
        )
    if lost and state.is_main_process:
        warnings.warn(
            f"{directory} was saved on device '{saved}' and this run uses device '{current}': "
            "weights, optimizer and the Python, NumPy and torch CPU random states were restored; "
            + "; ".join(lost),
            CheckpointDeviceWarning,
            stacklevel=4,
        )
    return None


def _draws_from_the_cpu_generator(state: Any) -> bool:
    """A CPU-type device whose owner implements no RNG hook uses torch's CPU generator."""
    if state.device.type != "cpu":
        return False
    hook = get_plugin_manager().pm.hook.accelerate_core_device_rng_state
    return not any(impl.plugin is state.device_owner for impl in hook.get_hookimpls())


def restore_device_rng(state: Any, device_rng: Any, directory: Path) -> None:
    """Hand the device its saved generator state; a refusal raises before anything changed."""
    if device_rng is None:
        return
    done = get_plugin_manager().call_owner(
        "accelerate_core_set_device_rng_state", state.device_owner, device=state.device,
        rng_state=device_rng,
    )  # fmt: skip
    if not done:
        raise CheckpointError(
            f"device '{state.device_spec.name}' could not restore the RNG state saved in "
            f"{directory} (accelerate_core_set_device_rng_state answered {done!r}); nothing was "
            "restored. Update the device plugin, or load the weights alone"
        )


def restore_rng(state: Any, rng: dict[str, Any]) -> None:
    """Restore the Python, NumPy and torch CPU generators (the device's: ``restore_device_rng``)."""
    random.setstate(rng["python"])
    kind, keys, position, has_gauss, cached = rng["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(rng["torch"])


# --------------------------------------------------------------------------- directories


def checkpoints_root(project: ProjectConfiguration) -> Path:
    if project.project_dir is None:
        raise CheckpointError(
            "save_state()/load_state() without a directory need a project directory: "
            "Accelerator(project_dir='runs/my-run') (or pass a directory)"
        )
    return Path(project.project_dir) / CHECKPOINTS_DIR


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


def _next_target(project: ProjectConfiguration) -> Path:
    root = checkpoints_root(project)
    found = complete_checkpoints(root)
    return root / f"checkpoint_{found[-1][0] + 1 if found else 0}"


def _rotate(project: ProjectConfiguration, root: Path) -> None:
    if project.total_limit is None:
        return
    found = complete_checkpoints(root)
    for _, path in found[: max(len(found) - project.total_limit, 0)]:
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- save


def save_state(objects: TrainingObjects, output_dir: str | os.PathLike[str] | None = None) -> Path:
    """Write a complete checkpoint (see module docstring); returns its directory."""
    state = objects.state
    manager = get_plugin_manager()
    automatic = output_dir is None
    target = _next_target(objects.project) if automatic else Path(output_dir)
    tmp_name = [f"{TMP_PREFIX}{target.name}-{secrets.token_hex(4)}"]
    if state.is_main_process:
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in target.parent.glob(f"{TMP_PREFIX}*"):  # left by a killed save
            shutil.rmtree(stale, ignore_errors=True)
        (target.parent / tmp_name[0]).mkdir()
    collectives.broadcast_object_list(tmp_name, from_process=0)  # also: the directory exists
    tmp = target.parent / tmp_name[0]
    context = objects.context
    mid_cycle = objects.gradient_state.mid_cycle
    # Queued device work (an asynchronous or lazy device) must finish before its state is read.
    manager.call_owner("accelerate_core_synchronize", state.device_owner, device=state.device)
    _run_save_hooks(objects, tmp)
    named = objects.named()
    handled = manager.call_owner(
        "accelerate_core_save_state", state.backend_owner, objects=named, directory=str(tmp),
        context=context,
    )  # fmt: skip
    by_backend = sorted(set(handled or ()))
    rest = {k: v for k, v in named.items() if k not in by_backend}
    save_replicated(rest, tmp, context)
    rank = state.process_index
    put_object(tmp, f"random_states_{rank}.bin", rng_state(state))
    if mid_cycle:
        for i, model in enumerate(objects.models):
            if f"model_{i}" in rest:  # a backend keeps the accumulated gradients it shards
                grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
                put_tensors(tmp, f"grads_{rank}_model_{i}.safetensors", grads)
    if state.is_main_process:
        for i, scheduler in enumerate(objects.schedulers):
            put_object(tmp, f"scheduler_{i}.bin", scheduler.state_dict())
        for i, loader in enumerate(objects.dataloaders):
            put_object(tmp, f"dataloader_{i}.bin", loader.state_dict())
        for i, obj in enumerate(objects.custom_objects):
            put_object(tmp, f"custom_checkpoint_{i}.bin", obj.state_dict())
        if objects.scaler is not None:
            put_object(tmp, "scaler.bin", objects.scaler.state_dict())
    state.wait_for_everyone()  # every process wrote its files: now they can be listed
    files = describe_files(tmp, rank, state.num_processes)
    if state.is_main_process:
        registered = manager.registry()["backend"].get(state.backend)
        write_manifest(
            tmp,
            files,
            world_size=state.num_processes,
            parallelism=context.parallelism.sizes,
            backend=state.backend,
            device={"name": state.device_spec.name, "type": state.device.type},
            mixed_precision=state.mixed_precision,
            versions=versions(registered.distribution if registered else None),
            objects={**objects.counts(), "scaler": objects.scaler is not None},
            backend_objects=by_backend,
            gradient_accumulation={"step": objects.gradient_state.step, "mid_cycle": mid_cycle},
        )
        replace_directory(tmp, target)
        if automatic:
            _rotate(objects.project, target.parent)
    state.wait_for_everyone()
    return target


# --------------------------------------------------------------------------- load


def load_state(objects: TrainingObjects, input_dir: str | os.PathLike[str] | None = None) -> Path:
    """Restore a checkpoint written by ``save_state``; returns its directory.

    Nothing is changed until every file of the checkpoint has been verified against the manifest.
    """
    state = objects.state
    directory = (
        latest_checkpoint(checkpoints_root(objects.project)) if input_dir is None
        else Path(input_dir)
    )  # fmt: skip
    manifest = read_manifest(directory)
    check_fits(
        manifest, directory, world_size=state.num_processes, backend=state.backend,
        counts=objects.counts(), parallelism=objects.context.parallelism.sizes,
    )  # fmt: skip
    verification = Verification(directory, manifest["files"])
    try:
        replicated, rng, steps = _read_core_files(objects, directory, manifest)
    except Exception:
        verification.check()  # a corrupt file explains the failure better than its symptom
        raise
    verification.check()  # before any live object changes
    # First: a device that cannot take its saved state refuses before anything else changed
    # (the user's load pre-hooks included). A checkpoint converted from HF Accelerate without
    # its pickled RNG states has none: every generator keeps its state, the device's too.
    if rng is not None:
        restore_device_rng(state, device_rng_to_restore(state, rng, directory), directory)
    _run_load_hooks(objects, directory)
    named = objects.named()
    handled = get_plugin_manager().call_owner(
        "accelerate_core_load_state", state.backend_owner, objects=named,
        directory=str(directory), context=objects.context,
    )  # fmt: skip
    for name, obj in named.items():
        if name not in set(handled or ()):
            saved = replicated.get(name)
            if saved is None:  # the manifest said the backend stores it; it did not load it
                saved = read_replicated(name, directory, manifest)
            apply_replicated(name, obj, saved, objects.context)
    for step in steps:
        step()
    return directory


def _run_save_hooks(objects: TrainingObjects, directory: Path) -> None:
    """``hook(models, weights, output_dir)``: files a hook writes become part of the checkpoint
    (listed in its manifest and verified on load)."""
    if not objects.save_hooks:
        return
    models = list(objects.models)
    weights = [unwrap(m, objects.context).state_dict() for m in models]
    count = len(weights)
    for hook in objects.save_hooks:
        hook(models, weights, str(directory))
    if len(weights) != count or len(models) != len(objects.models):
        raise CheckpointError(
            "a save_state pre-hook removed models or weights from the lists it was given; "
            "taking over how a model is saved is not supported here (the checkpoint always "
            "holds every prepared model): write extra files from the hook instead"
        )


def _run_load_hooks(objects: TrainingObjects, directory: Path) -> None:
    """``hook(models, input_dir)``, after every file was verified, before anything is loaded."""
    models = list(objects.models)
    for hook in objects.load_hooks:
        hook(models, str(directory))
    if len(models) != len(objects.models):
        raise CheckpointError(
            "a load_state pre-hook removed models from the list it was given; taking over how a "
            "model is loaded is not supported here: read extra files from the hook instead"
        )


def _read_core_files(
    objects: TrainingObjects, directory: Path, manifest: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any] | None, list[Callable[[], None]]]:
    """Read every file the core restores itself; nothing is applied yet.

    Returns the saved state of each replicated model/optimizer by name, this process's RNG
    states (``None`` for an HF checkpoint converted without them), and one callable per other
    object that applies its saved state, in the order they must run.
    """
    by_backend = set(manifest.get("backend_objects", objects.named()))
    read: dict[str, Any] = {
        name: read_replicated(name, directory, manifest)
        for name in objects.named()
        if name not in by_backend
    }
    steps: list[Callable[[], None]] = []

    def restore(obj: Any, file: str) -> None:
        saved = get_object(directory, file, manifest)
        steps.append(lambda: obj.load_state_dict(saved))

    for i, scheduler in enumerate(objects.schedulers):
        restore(scheduler, f"scheduler_{i}.bin")
    for i, loader in enumerate(objects.dataloaders):
        restore(loader, f"dataloader_{i}.bin")
    for i, obj in enumerate(objects.custom_objects):
        restore(obj, f"custom_checkpoint_{i}.bin")
    if objects.scaler is not None and manifest["objects"]["scaler"]:
        restore(objects.scaler, "scaler.bin")
    accumulation = manifest["gradient_accumulation"]
    rank = objects.state.process_index
    grads: dict[int, dict[str, torch.Tensor]] = {}
    if accumulation["mid_cycle"]:
        for i in range(len(objects.models)):
            name = f"grads_{rank}_model_{i}.safetensors"
            if name in manifest["files"]:
                grads[i] = get_tensors(directory, name, manifest)
    # A checkpoint converted from HF Accelerate without its pickled RNG states has none.
    rng_file = f"random_states_{rank}.bin"
    converted = "converted_from" in manifest and rng_file not in manifest["files"]
    rng = None if converted else get_object(directory, rng_file, manifest)

    def finish() -> None:
        objects.gradient_state.step = accumulation["step"]
        for i, model in enumerate(objects.models):
            parameters = dict(model.named_parameters())
            if accumulation["mid_cycle"]:
                for param_name, grad in grads.get(i, {}).items():
                    parameters[param_name].grad = grad.to(parameters[param_name].device)
            else:
                for parameter in parameters.values():
                    parameter.grad = None
        if rng is not None:
            restore_rng(objects.state, rng)

    steps.append(finish)
    return read, rng, steps
