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
    check_replaceable,
    get_object,
    get_tensors,
    partial_save_name,
    put_object,
    put_tensors,
    read_manifest,
    remove_partial_saves,
    replace_directory,
)
from .checkpoint_manifest import OBJECT_KINDS, check_fits, describe_files, versions, write_manifest
from .checkpoint_space import (
    check_space,
    estimate_bytes,
    payload_bytes,
    removal_report,
    write_failure,
)
from .errors import CheckpointError
from .gradient_state import GradientState
from .hang_watch import during, translated
from .ops import uncompiled
from .plugins import get_plugin_manager
from .specs import PluginContext

CHECKPOINTS_DIR = "checkpoints"
NAME = re.compile(r"^checkpoint_(\d+)$")


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


def read_replicated(name: str, directory: Path, manifest: dict[str, Any]) -> Any:
    """Read (without applying) what ``core_files`` saved for ``name`` (no backend stored it)."""
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
    """``checkpoint_<n>``, n one more than any existing ``checkpoint_<m>`` (complete or not:
    an entry of that name that is not ours is never replaced)."""
    root = checkpoints_root(project)
    entries = root.iterdir() if root.is_dir() else ()
    numbers = [int(m.group(1)) for p in entries if (m := NAME.match(p.name))]
    return root / f"checkpoint_{max(numbers) + 1 if numbers else 0}"


def _rotate(project: ProjectConfiguration, root: Path) -> None:
    if project.total_limit is None:
        return
    found = complete_checkpoints(root)
    for _, path in found[: max(len(found) - project.total_limit, 0)]:
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- save


def _start_save(
    state: Any, project: ProjectConfiguration, output_dir: str | os.PathLike[str] | None
) -> tuple[Path, Path]:
    """On the main process: refuse a target that is not ours, remove what killed saves left,
    create the temporary directory. Every process gets its path, or the same error."""
    setup: list[Any] = [None]
    if state.is_main_process:
        try:
            target = _next_target(project) if output_dir is None else Path(output_dir)
            check_replaceable(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            pattern = r"checkpoint_\d+" if output_dir is None else re.escape(target.name)
            remove_partial_saves(target.parent, pattern)
            tmp = target.parent / partial_save_name(target, secrets.token_hex(4))
            tmp.mkdir()
            setup[0] = (str(tmp), str(target))
        except CheckpointError as exc:
            setup[0] = str(exc)
        except OSError as exc:
            where = output_dir or project.project_dir
            setup[0] = f"cannot save a checkpoint to {where}: {type(exc).__name__}: {exc}"
    collectives.broadcast_object_list(setup, from_process=0)  # also: the directory exists
    if isinstance(setup[0], str):
        raise CheckpointError(setup[0])
    return Path(setup[0][0]), Path(setup[0][1])


def core_files(
    objects: TrainingObjects, rest: dict[str, Any], mid_cycle: bool
) -> list[tuple[str, Any]]:
    """Every file the core writes on this process, as ``(file name, state)``, in write order:
    models/optimizers no backend stored, the RNG states, accumulated gradients of an unfinished
    cycle, schedulers, dataloaders, registered objects and the loss scaler."""
    state, context = objects.state, objects.context
    is_main, rank = state.is_main_process, state.process_index
    files: list[tuple[str, Any]] = []
    if is_main:
        for name, obj in rest.items():
            saved = full_state_dict(obj, context) if name.startswith("model_") else obj.state_dict()
            files.append((_replicated_file(name), saved))
    files.append((f"random_states_{rank}.bin", rng_state(state)))
    if mid_cycle:
        for i, model in enumerate(objects.models):
            if f"model_{i}" in rest:  # a backend keeps the accumulated gradients it shards
                grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
                files.append((f"grads_{rank}_model_{i}.safetensors", grads))
    if is_main:
        for prefix, found in (
            ("scheduler", objects.schedulers),
            ("dataloader", objects.dataloaders),
            ("custom_checkpoint", objects.custom_objects),
        ):
            files += [(f"{prefix}_{i}.bin", obj.state_dict()) for i, obj in enumerate(found)]
        if objects.scaler is not None:
            files.append(("scaler.bin", objects.scaler.state_dict()))
    return files


def write_files(directory: Path, files: list[tuple[str, Any]]) -> None:
    for name, saved in files:
        if name.endswith(".safetensors"):
            put_tensors(directory, name, saved)
        else:
            put_object(directory, name, saved)


@dataclass
class SaveJob:
    """One save under way: where it goes, and what its manifest will say (read when it began)."""

    state: Any
    tmp: Path
    target: Path
    needed: int
    facts: dict[str, Any]
    project: ProjectConfiguration | None  # automatic naming: rotate once complete

    @property
    def mid_cycle(self) -> bool:
        return bool(self.facts["gradient_accumulation"]["mid_cycle"])


def _agree(job: SaveJob, failure: Any, group: Any = None) -> None:
    """Every process learns whether any failed; then all raise the first failure, the partial
    save removed (by the main process), or all go on. Replaces a barrier."""
    state, tmp, target = job.state, job.tmp, job.target
    gathered = collectives.gather_object((state.process_index, failure), group=group)
    failures = [f for f in gathered if f[1]]
    if not failures:
        return
    if state.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    collectives.gather_object(None, group=group)  # the space is free before anyone reports it
    rank, (kind, text, needed) = failures[0]
    unchanged = f"{target} and every earlier checkpoint are as they were"
    if kind == "space":
        raise CheckpointError(f"{text}; {unchanged}")
    where = f" on rank {rank}" if state.num_processes > 1 else ""
    raise CheckpointError(
        f"saving checkpoint {target} failed{where}: {text}. The partial save was removed; "
        f"{unchanged}" + removal_report(kind == "disk full", tmp, needed)
    )


def begin_save(objects: TrainingObjects, output_dir: str | os.PathLike[str] | None) -> SaveJob:
    """The temporary directory, refused (on every process) when it cannot fit."""
    state = objects.state
    tmp, target = _start_save(state, objects.project, output_dir)
    mid_cycle = objects.gradient_state.mid_cycle
    needed = estimate_bytes(
        objects.models, objects.optimizers, state.is_main_process, with_grads=mid_cycle
    )
    registered = get_plugin_manager().registry()["backend"].get(state.backend)
    facts = {
        "world_size": state.num_processes,
        "parallelism": objects.context.parallelism.sizes,
        "backend": state.backend,
        "device": {"name": state.device_spec.name, "type": state.device.type},
        "mixed_precision": state.mixed_precision,
        "versions": versions(registered.distribution if registered else None),
        "objects": {**objects.counts(), "scaler": objects.scaler is not None},
        "gradient_accumulation": {"step": objects.gradient_state.step, "mid_cycle": mid_cycle},
    }
    job = SaveJob(
        state, tmp, target, needed, facts, objects.project if output_dir is None else None
    )
    problem = check_space(target.parent, target, needed)
    _agree(job, None if problem is None else ("space", problem, needed))
    return job


def backend_save(
    objects: TrainingObjects, job: SaveJob, **async_arguments: Any
) -> tuple[dict[str, Any], Callable[[], None] | None]:
    """Hand the backend its objects; returns what no backend stored (the core writes those) and,
    for an asynchronous save, the callable that waits for the backend's own writes.

    With ``async_arguments`` the backend's asynchronous hook is asked first; a backend without
    one writes synchronously here.
    """
    state, manager = objects.state, get_plugin_manager()
    # Queued device work (an asynchronous or lazy device) must finish before state is read.
    manager.call_owner("accelerate_core_synchronize", state.device_owner, device=state.device)
    _run_save_hooks(objects, job.tmp)
    named = objects.named()
    hook = dict(objects=named, directory=str(job.tmp), context=objects.context)
    answer = None
    if async_arguments:
        answer = manager.call_owner(
            "accelerate_core_save_state_async", state.backend_owner, **hook, **async_arguments
        )
    if answer is None:
        handled, wait = (
            manager.call_owner("accelerate_core_save_state", state.backend_owner, **hook),
            None,
        )
    else:
        handled, wait = answer
    job.facts["backend_objects"] = sorted(set(handled or ()))
    return {k: v for k, v in named.items() if k not in job.facts["backend_objects"]}, wait


def finish_save(job: SaveJob, failure: Any, group: Any = None) -> Path:
    """Once every process wrote its files (or failed): list and hash them, write the manifest,
    rename into place and rotate; every process raises the same error if anything failed."""
    state = job.state
    _agree(job, failure, group)  # every file is written: now they can be listed
    files = describe_files(job.tmp, state.process_index, state.num_processes, group=group)
    failure = None
    if state.is_main_process:
        try:
            write_manifest(job.tmp, files, **job.facts)
            replace_directory(job.tmp, job.target)
        except Exception as exc:
            failure = write_failure(exc, job.tmp, job.needed)
        else:
            if job.project is not None:
                _rotate(job.project, job.target.parent)
    _agree(job, failure, group)
    return job.target


def warn_unsafe_serialization_ignored() -> None:
    """HF's ``save_state(safe_serialization=False)`` writes pickled weights; not here."""
    warnings.warn(
        "save_state(safe_serialization=False): accelerate-core writes a checkpoint's weights as "
        "safetensors regardless (so that loading it never runs pickled code); the argument "
        "changes nothing here",
        UserWarning,
        stacklevel=3,
    )


def save_state(objects: TrainingObjects, output_dir: str | os.PathLike[str] | None = None) -> Path:
    """Write a complete checkpoint (see module docstring); returns its directory.

    Refused before anything is written when a file system the processes write to lacks the
    room; a write that fails on any process (disk full, I/O error) raises ``CheckpointError`` on
    every process with the partial save removed. A process that never comes makes the others
    raise ``CollectiveError`` naming it.
    """
    with during("save_state"):
        job = begin_save(objects, output_dir)
        failure = None
        try:
            rest, _ = backend_save(objects, job)
            files = core_files(objects, rest, job.mid_cycle)
            job.needed = max(job.needed, payload_bytes(files))
            write_files(job.tmp, files)
        except Exception as exc:
            failure = write_failure(translated("save_state", exc), job.tmp, job.needed)
        return finish_save(job, failure)


# --------------------------------------------------------------------------- load


def load_state(objects: TrainingObjects, input_dir: str | os.PathLike[str] | None = None) -> Path:
    """Restore a checkpoint written by ``save_state``; returns its directory.

    Nothing is changed until every file of the checkpoint has been verified against the manifest.
    """
    with during("load_state"):
        return _load_state(objects, input_dir)


def _load_state(objects: TrainingObjects, input_dir: str | os.PathLike[str] | None) -> Path:
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
