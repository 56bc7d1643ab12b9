"""Hook specifications: the whole contract between the core and its plugins.

Every hook's docstring is its reference documentation. Hooks fall into the families of the design:

* **discovery** - every plugin is asked; each returns records (``specs.py``) naming what it offers.
* **environment** - every plugin is asked to detect the launch environment; device hooks are asked
  of the plugin that registered the device in use, with ``device`` the ``torch.device`` the
  process uses (``torch.device(spec.torch_type, local_rank)``, no index for a CPU type).
* **precision conversion** - asked of the plugin that registered the selected precision.
* **wrapping**, **backward**, **checkpoint state** - asked of the plugin that registered the
  selected backend.

"Asked of the owner" means the core calls the hook on that one plugin (plus the core's own default
implementation, which runs last and answers only if the owner returned ``None``). Plugins never need
to check whether they were selected. All family hooks are called once, at ``Accelerator`` creation
or ``prepare``; what they return (often a plain callable) is what the per-step path calls.

Compatibility rule: hooks only ever gain arguments (pluggy lets an implementation accept fewer);
removing or renaming a hook or argument is a breaking change of the core API version.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import pluggy

from .specs import (
    BackendSpec,
    CheckpointWeights,
    DeviceSpec,
    EnvironmentInfo,
    ExportedName,
    LaunchAlias,
    LaunchOption,
    MemoryEstimate,
    PluginContext,
    PrecisionSpec,
    PrepareRequest,
    TrackerSpec,
)
from .tracker_base import GeneralTracker

if TYPE_CHECKING:
    import torch

PROJECT_NAME = "accelerate_core"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

# --------------------------------------------------------------------------- discovery


@hookspec
def accelerate_core_backends() -> list[BackendSpec]:
    """Return the backends this plugin provides (``BackendSpec`` records).

    Called on every plugin when the plugin manager builds its registry. Must be cheap and must not
    import heavy libraries: only the records are needed to list and select backends. A name offered
    by two plugins is a ``PluginConflictError`` naming both distributions.
    """


@hookspec
def accelerate_core_precisions() -> list[PrecisionSpec]:
    """Return the mixed-precision modes this plugin provides (``PrecisionSpec`` records).

    Called on every plugin when the registry is built; same rules as ``accelerate_core_backends``.
    The core's built-in plugin provides ``no``, ``fp16`` and ``bf16``.
    """


@hookspec
def accelerate_core_devices() -> list[DeviceSpec]:
    """Return the device types this plugin knows (``DeviceSpec`` records).

    Called on every plugin when the registry is built. The device a process uses is the one
    selected by name (``accel launch --device``, the config key ``device``,
    ``ACCELERATE_CORE_DEVICE``, ``PartialState(device=...)``), else the record named after the type
    ``torch.accelerator`` reports (or CPU); the record supplies the process-group backend and the
    precisions it supports, and its name is the one messages show. An accelerator type with no
    record still works with generic defaults (gloo, no mixed precision).
    """


@hookspec
def accelerate_core_trackers() -> list[TrackerSpec]:
    """Return the experiment trackers this plugin provides (``TrackerSpec`` records).

    Called on every plugin when the registry is built; same rules as ``accelerate_core_backends``
    (cheap, nothing heavy imported, a name offered twice is a ``PluginConflictError``). Each
    record names the tracker's library (``modules``) and the command that installs it; the
    core checks that the library can be found without importing it. The core's built-in plugin
    provides Hugging Face's trackers (``tensorboard``, ``wandb``, ``mlflow``, ``comet_ml``,
    ``aim``, ``clearml``, ``dvclive``, ``swanlab``, ``trackio``); ``accel env`` lists them all.
    """


@hookspec(firstresult=True)
def accelerate_core_tracker_class(name: str) -> type[GeneralTracker] | None:
    """Return the ``GeneralTracker`` subclass of the tracker ``name`` (asked of its owner).

    Asked once per selected tracker, at ``Accelerator`` creation, of the plugin whose
    ``accelerate_core_trackers`` registered ``name``. Import the class here, not at module
    level; the class imports its library in ``start()``. The core instantiates it as
    ``cls(project_name, logging_dir, **init_kwargs)`` when the record says
    ``requires_logging_directory``, else ``cls(project_name, **init_kwargs)``, and calls
    ``start``, ``store_init_configuration``, ``log`` and ``finish`` on the processes the
    class's ``main_process_only`` names.
    """


@hookspec
def accelerate_core_exported_names() -> list[ExportedName]:
    """Return the public names this plugin defines for ``accelerate_core.utils`` (records).

    Called on every plugin the first time such a name is looked up (``from
    accelerate_core.utils import DeepSpeedPlugin``); the record's target is imported only then,
    so keep it light. The core knows which backend each of Hugging Face Accelerate's
    backend-specific names belongs to (``exported_names.BACKEND_NAMES``): when that backend is
    not installed, the name still imports, and using it raises the error naming the
    ``pip install``. A name offered by two plugins is a ``PluginConflictError``.
    """


# --------------------------------------------------------------------------- environment


@hookspec
def accelerate_core_detect_environment(environ: Mapping[str, str]) -> EnvironmentInfo | None:
    """Detect how this process was launched; return ``EnvironmentInfo`` or ``None``.

    Called on every plugin once per process, when the process state is created. ``environ`` is a
    snapshot of ``os.environ``. Return ``None`` when the variables of your launcher are absent.
    The answer with the highest ``priority`` wins; two answers at the same priority that disagree
    are an error. Raise ``EnvironmentDetectionError`` when the variables are present but
    incomplete or contradictory: the core must never fall back to one process when the
    environment says there are several.
    """


@hookspec(firstresult=True)
def accelerate_core_setup_device(device: torch.device, environment: EnvironmentInfo) -> bool | None:
    """Make ``device`` the current device of this process; return True when done.

    Asked of the device's owner once, after the device has been chosen from the local rank and
    before any model is placed. The core's default sets the current index through
    ``torch.accelerator``.
    """


@hookspec(firstresult=True)
def accelerate_core_seed_device(device: torch.device, seed: int) -> bool | None:
    """Seed the device's own random number generator with ``seed``; return True when done.

    Asked of the device's owner by ``set_seed`` after Python, NumPy and torch were seeded
    (``torch.manual_seed`` already seeds the default generators of the devices torch ships);
    when ``set_seed`` runs before the process state exists, asked once the device is set up.
    A device whose generator is its own (a vendor runtime's) seeds it here. Default: nothing
    more to do.
    """


@hookspec(firstresult=True)
def accelerate_core_device_rng_state(device: torch.device) -> Any:
    """Return the RNG state of ``device`` for checkpoints (asked of the device's owner).

    Asked by ``save_state`` on every process, for every device except the built-in CPU record
    (whose generator is saved anyway), so a plugin device that drives the CPU is asked too. The
    value must load with ``torch.load(weights_only=True)`` (tensors, numbers, strings, lists,
    dicts). The default returns ``torch.get_rng_state()`` for CPU and ``None`` for devices it
    cannot read.
    """


@hookspec(firstresult=True)
def accelerate_core_set_device_rng_state(device: torch.device, rng_state: Any) -> bool | None:
    """Restore an RNG state from ``accelerate_core_device_rng_state``; return True when done.

    Asked of the device's owner by ``load_state`` after the CPU generator has been restored,
    only with a state saved on a device of the same name: a checkpoint from another device
    leaves this device's generator as it is, with a warning naming both devices.
    """


@hookspec(firstresult=True)
def accelerate_core_device_memory_stats(device: torch.device) -> dict[str, int] | None:
    """Return ``{"allocated": bytes, "reserved": bytes, "max_allocated": bytes}`` for ``device``.

    Asked of the device's owner by memory tracking; the default reads ``torch.accelerator``.
    """


@hookspec(firstresult=True)
def accelerate_core_device_memory_info(device: torch.device) -> tuple[int, int] | None:
    """Return ``(free, total)`` bytes of ``device``, or ``None`` when they cannot be read.

    Asked of the device's owner by big-model inference (``get_max_memory``, and so
    ``infer_auto_device_map`` and ``device_map="auto"``) for the CPU and every index of the
    accelerator torch drives, after one small tensor was created there. A device answering
    ``None`` is left out of automatic device maps. The default reads
    ``torch.accelerator.get_memory_info``.
    """


@hookspec(firstresult=True)
def accelerate_core_synchronize(device: torch.device) -> bool | None:
    """Wait for all queued work on ``device``; return True when done (default: torch).

    Asked of the device's owner by ``save_state`` before any state is read, so an asynchronous
    or lazily executing device finishes its queued steps first.
    """


# --------------------------------------------------------------------------- options


@hookspec(firstresult=True)
def accelerate_core_validate_options(
    kind: str, name: str, options: dict[str, Any], context: PluginContext
) -> bool | None:
    """Check the options users gave the backend or precision ``name`` that this plugin provides.

    Asked of the owner once per ``Accelerator``, on every process, before any other family hook:
    ``kind`` is ``"backend"`` (``options`` is ``context.backend_options``: ``Accelerator(
    backend_options=...)`` over ``accel launch``'s) or ``"precision"`` (``precision_options``).
    Raise ``ConfigurationError`` naming the fix for unknown keys, wrong types, invalid choices
    and contradictions (the other selection is in ``context``); return True once checked. When
    the owner does not answer, any option at all is an error: the selection takes none.
    """


# --------------------------------------------------------------------------- precision conversion


@hookspec(firstresult=True)
def accelerate_core_convert(
    request: PrepareRequest, context: PluginContext
) -> PrepareRequest | None:
    """Convert the objects of a ``prepare`` call for the selected precision (asked of its owner).

    Runs first in ``prepare``: before models are moved to the device and before the backend wraps
    anything. fp8 swaps ``nn.Linear`` layers here; MS-AMP initialises model and optimizer here.
    Return the request with objects replaced, or ``None`` to leave it as it is.
    """


@hookspec(firstresult=True)
def accelerate_core_autocast(
    context: PluginContext,
) -> Callable[[], AbstractContextManager[Any]] | None:
    """Return a factory of the context manager that wraps every forward pass, or ``None``.

    Asked of the selected precision's owner once, at ``Accelerator`` creation (not asked when the
    backend owns precision). The built-in fp16/bf16 return ``torch.autocast`` with their dtype.
    """


@hookspec(firstresult=True)
def accelerate_core_grad_scaler(context: PluginContext) -> Any | None:
    """Return the loss scaler (``torch.amp.GradScaler``-like) for this precision, or ``None``.

    Asked of the selected precision's owner once. With a scaler the core scales the loss before
    backward, unscales before clipping, skips the optimizer step on inf/nan gradients and updates
    the scale (``optimizer_step_was_skipped`` tells the user).
    """


# --------------------------------------------------------------------------- wrapping


@hookspec(firstresult=True)
def accelerate_core_wrap(request: PrepareRequest, context: PluginContext) -> PrepareRequest | None:
    """Wrap the objects of one ``prepare`` call (asked of the selected backend's owner).

    Receives everything at once (models, optimizers, schedulers, dataloaders) after precision
    conversion and device placement; returns the request with wrapped objects in the same
    positions, or ``None`` to leave it unchanged. DDP wraps models; FSDP2 shards them and rebinds
    the optimizers' parameters; DeepSpeed builds one engine from model, optimizer and scheduler.
    The dataloaders arrive prepared (the core shards them between the processes already).
    """


@hookspec(firstresult=True)
def accelerate_core_unwrap_model(model: torch.nn.Module, context: PluginContext) -> Any:
    """Return the user's module inside a model wrapped by ``accelerate_core_wrap``, or ``None``."""


# --------------------------------------------------------------------------- backward


@hookspec(firstresult=True)
def accelerate_core_backward(context: PluginContext, scaler: Any) -> Callable[..., None] | None:
    """Return ``backward(loss, **kwargs)`` for this backend, or ``None`` for the core's default.

    Asked once at creation. The callable receives the loss exactly as the user passed it to
    ``Accelerator.backward``. The core's default divides it by ``gradient_accumulation_steps``,
    scales it with ``scaler`` when there is one, and calls ``loss.backward(**kwargs)``. A backend
    whose engine owns backward (DeepSpeed) returns its own callable and does all of that itself.
    """


@hookspec(firstresult=True)
def accelerate_core_no_sync(
    context: PluginContext,
) -> Callable[[torch.nn.Module], AbstractContextManager[Any]] | None:
    """Return ``no_sync(model)``: a context in which backward does not synchronise gradients.

    Used on the micro-steps of gradient accumulation that do not step the optimizer, so only the
    step that syncs communicates. DDP returns ``model.no_sync``; FSDP2 toggles
    ``set_requires_gradient_sync``. The default (one process) returns a no-op context.
    """


@hookspec(firstresult=True)
def accelerate_core_clip_grad_norm(context: PluginContext) -> Callable[..., Any] | None:
    """Return ``clip(parameters, max_norm, norm_type) -> total_norm`` for this backend.

    The norm must be the global norm over every rank's gradients (sharded backends reduce it).
    Called by the core only on steps that sync, after unscaling. Default:
    ``torch.nn.utils.clip_grad_norm_``.
    """


@hookspec(firstresult=True)
def accelerate_core_clip_grad_value(context: PluginContext) -> Callable[..., Any] | None:
    """Return ``clip(parameters, clip_value)`` for this backend (default ``clip_grad_value_``).

    A backend that cannot clip by value raises a ``ConfigurationError`` from the returned callable.
    """


@hookspec(firstresult=True)
def accelerate_core_optimizer_step(
    context: PluginContext, scaler: Any
) -> Callable[[Any], None] | None:
    """Return ``step(optimizer)`` that applies one update, or ``None`` for the core's default.

    The default calls ``scaler.step(optimizer)`` and ``scaler.update()`` when there is a scaler,
    ``optimizer.step()`` otherwise. The core calls it only on steps that sync gradients.
    """


# --------------------------------------------------------------------------- checkpoint state


@hookspec(firstresult=True)
def accelerate_core_get_state_dict(model: torch.nn.Module, context: PluginContext) -> Any:
    """Return the full (consolidated, unsharded) state dict of a prepared model, or ``None``.

    Sharded backends gather the shards (to CPU, on the main process at least). The default
    returns the unwrapped model's ``state_dict()``.
    """


@hookspec(firstresult=True)
def accelerate_core_save_state(
    objects: dict[str, Any], directory: str, context: PluginContext
) -> list[str] | None:
    """Save the prepared models and optimizers in the backend's own (possibly sharded) format.

    ``objects`` maps checkpoint names to prepared objects. Return the names handled (the core
    saves the rest itself, with their accumulated gradients when ``gradient_state.mid_cycle``)
    or ``None`` to let the core save everything.
    """


@hookspec(firstresult=True)
def accelerate_core_load_state(
    objects: dict[str, Any], directory: str, context: PluginContext
) -> list[str] | None:
    """Load what ``accelerate_core_save_state`` wrote; return the names handled, or ``None``.

    Called once every file of the checkpoint matched its manifest; the core loads the rest.
    """


@hookspec(firstresult=True)
def accelerate_core_checkpoint_weights(
    directory: str, manifest: dict[str, Any] | None, model: str, options: dict[str, Any]
) -> CheckpointWeights | None:
    """Return the full weights of ``model`` (``"model_0"``) in the checkpoint at ``directory``.

    Asked of every plugin by ``accel merge-weights`` (offline, one process, no GPU), the first
    answer wins: answer only for a checkpoint your backend wrote (``manifest["backend"]``, the
    names it stored in ``manifest["backend_objects"]``) or for your library's own format when
    there is no manifest (``manifest`` is ``None``); return ``None`` otherwise. ``options`` holds
    the command's format options (``tag`` for DeepSpeed). Sharded formats consolidate here
    (FSDP: ``torch.distributed.checkpoint`` shards; DeepSpeed: ZeRO partitions to fp32). The
    core answers last, for the weights it stored itself (``model_<i>.safetensors``).
    """


@hookspec
def accelerate_core_estimate_memory(
    parameters: list[tuple[tuple[int, ...], int, bool]],
    num_processes: int,
    mixed_precisions: list[str],
) -> list[MemoryEstimate]:
    """Return what each rank would hold under this plugin's backend (``MemoryEstimate`` records).

    Asked of every plugin by ``accel estimate-memory``, offline. ``parameters`` describes the
    model's parameters, built on the meta device: ``(shape, element size in bytes, trainable)``
    each; the optimizer is Adam/AdamW (two moments and a step count per trainable parameter).
    Return one record per setting and precision of ``mixed_precisions`` your backend supports on
    ``num_processes`` processes (nothing when it cannot run that many), computed the way your
    backend lays the state out (how it shards, pads and keeps master copies).
    """


# --------------------------------------------------------------------------- launch


@hookspec
def accelerate_core_launch_options() -> list[LaunchOption]:
    """Return the options this plugin adds to ``accel launch`` and ``accel config``.

    Called on every plugin (like the discovery hooks) when a launch command builds its parser,
    never in training processes; must be cheap and import nothing heavy. Each ``LaunchOption``
    record becomes the flag ``--NAME`` (also spelled with underscores; ``type="bool"`` adds
    ``--no-NAME``), the config-file key ``NAME`` with underscores, and a question of
    ``accel config``. A value given to the launch reaches every process through
    ``ACCELERATE_CORE_BACKEND_OPTIONS`` (or ``..._PRECISION_OPTIONS``) and is merged into
    ``Accelerator(backend_options=...)`` as ``{record.option_key: value}`` when the process
    selected ``record.backend`` (or ``precision_options`` for ``record.precision``); explicit
    ``backend_options`` keys win over config-file values and contradicting a command-line value
    is an error. Name options after the backend (``ddp-find-unused-parameters``): a name offered
    twice, or one that shadows a core option, is a ``PluginConflictError`` naming both
    distributions. The backend's own hooks still validate the values (unknown keys, choices).
    """


@hookspec
def accelerate_core_launch_aliases() -> list[LaunchAlias]:
    """Return Hugging Face Accelerate's launch flags and config keys this plugin gives meaning to.

    Called on every plugin, like ``accelerate_core_launch_options``, when a launch command builds
    its parser or reads a config file; must be cheap. Each ``LaunchAlias`` record becomes a
    command-line flag of ``accel launch`` (``--use_fsdp``) and a key an HF config file may hold
    (``fsdp_config: {fsdp_offload_params: true}`` is read as ``fsdp_offload_params``); its
    ``translate`` turns the value into settings of ``accel launch`` options, or raises a
    ``ConfigurationError`` naming what to use instead. A backend maps the names that concern it
    (``use_fsdp``, ``fsdp_*``; ``use_deepspeed``, ``zero3_*``...); the core maps the general ones.
    A name offered twice, or one that is another plugin's option, is a ``PluginConflictError``;
    a name that is one of the plugin's own options (HF's ``fsdp_state_dict_type``) takes over its
    underscore spelling and config key, and its ``translate`` accepts both vocabularies.
    Two names that set one option to different values are an error naming both.
    """
