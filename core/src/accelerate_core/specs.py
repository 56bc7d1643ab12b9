"""Records that plugins return from the discovery hooks.

They are plain, declarative data so that the core can list, select and check them without running
any plugin code. Behaviour is asked for later, once, through the family hooks of the owning plugin.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class BackendSpec:
    """A training backend: how models/optimizers are wrapped and gradients synchronised.

    Attributes:
        name: what users select (``Accelerator(backend=name)``), unique across installed plugins.
        description: one line shown by ``accel env``.
        distributed: True when the backend needs a process group (runs on several processes).
            A non-distributed backend is refused when the environment has several processes.
        min_processes: fewest processes the backend accepts (FSDP-style sharding needs 2).
        owns_precision: True when the backend's engine implements fp16/bf16 itself (DeepSpeed);
            the core then applies no autocast and no loss scaling of its own.
        places_models: True when the backend moves models to the device itself (memory-efficient
            loading from the meta device, engines that place parameters); the core then leaves
            models where they are.
        reduces_every_micro_step: True when the engine reduces gradients on every accumulation
            micro-step by design (DeepSpeed ZeRO-2/3 accumulate into partitioned gradients), so
            its ``no_sync`` cannot silence them; the conformance suite then does not require
            silent micro-steps.
        parallelism: the ``ParallelismConfig`` dimensions the backend applies to models
            (``"dp_replicate"``, ``"dp_shard"``, ``"tp"``, ``"cp"``); a layout enabling another
            is refused at ``Accelerator`` creation. Plain data parallelism (only
            ``dp_replicate``) needs none. A backend listing ``"dp_shard"`` gets every process
            as ``dp_shard`` from a ``ParallelismConfig`` whose sizes are all 1.
        steps_schedulers: True when the backend's engine steps the LR scheduler itself, once per
            optimizer update (DeepSpeed, as in HF), so the prepared scheduler's ``step()`` does
            nothing; otherwise the core's prepared scheduler follows HF's rule (``num_processes``
            steps per update). The conformance suite's reference follows this.
        distributed_type: the value ``Accelerator.distributed_type`` reports (HF's
            ``DistributedType``: ``"FSDP"``, ``"DEEPSPEED"``, a new name for a new kind);
            ``{device}`` is replaced by the device's word (``MULTI_{device}`` -> ``MULTI_GPU``).
            Empty: ``MULTI_{device}`` for a distributed backend, ``NO`` otherwise; a
            ``MULTI_...`` run of one process reports ``NO``.
    """

    name: str
    description: str = ""
    distributed: bool = True
    min_processes: int = 1
    owns_precision: bool = False
    places_models: bool = False
    reduces_every_micro_step: bool = False
    parallelism: frozenset[str] = field(default_factory=frozenset)
    steps_schedulers: bool = False
    distributed_type: str = ""


@dataclass(frozen=True)
class PrecisionSpec:
    """A mixed-precision mode selected by ``Accelerator(mixed_precision=name)``.

    Attributes:
        name: the value users pass, unique across installed plugins.
        description: one line shown by ``accel env``.
        requires_device_support: the key looked up in ``DeviceSpec.precisions``; ``None`` when the
            mode runs on any device (full precision).
    """

    name: str
    description: str = ""
    requires_device_support: str | None = None


@dataclass(frozen=True)
class DeviceSpec:
    """A device type the process may train on.

    Attributes:
        name: the device's name; by default also its ``torch.device`` type (``"cpu"``,
            ``"cuda"``, ``"xpu"``, a vendor's own). The record whose name is the type torch
            reports is used unless a device is selected by name (``ACCELERATE_CORE_DEVICE``).
        dist_backend: the ``torch.distributed`` process-group backend for this device.
        precisions: mixed-precision modes this device supports (``"fp16"``, ``"bf16"``, ...).
        device_type: the ``torch.device`` type when it differs from ``name`` (a plugin that
            drives an existing device type its own way, say for memory statistics).
        autocast_type: the ``device_type`` to give ``torch.autocast`` when it differs.
    """

    name: str
    dist_backend: str = "gloo"
    precisions: frozenset[str] = field(default_factory=frozenset)
    device_type: str | None = None
    autocast_type: str | None = None

    @property
    def torch_type(self) -> str:
        return self.device_type or self.name


@dataclass(frozen=True)
class EnvironmentInfo:
    """What an environment detector found about the current process.

    Attributes:
        source: the detector's name (``"torchrun"``, ``"slurm"``, ``"single"``).
        priority: detectors that answer are ranked by it; the highest wins. A launcher that sets
            variables inside the process (torchrun) outranks the scheduler that started it (SLURM).
        rank, world_size, local_rank, local_world_size: the usual meaning.
        master_addr, master_port: rendezvous address for the process group, when known.
    """

    source: str
    priority: int
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    master_addr: str | None = None
    master_port: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass
class PrepareRequest:
    """Everything given to one ``Accelerator.prepare`` call, grouped by kind.

    Backends receive it whole because some build one object from several parts (DeepSpeed builds
    one engine from model + optimizer + scheduler; FSDP2 rebinds the optimizer to sharded
    parameters). A hook returns a request of the same shape with objects replaced in place.
    """

    models: list[Any] = field(default_factory=list)
    optimizers: list[Any] = field(default_factory=list)
    schedulers: list[Any] = field(default_factory=list)
    dataloaders: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class PluginContext:
    """What the core tells a plugin's family hooks: the resolved choices for this process.

    Attributes:
        state: the process state (rank, world size, device, ...).
        backend: the selected backend's name.
        mixed_precision: the selected precision's name.
        gradient_accumulation_steps: micro-steps per optimizer step.
        backend_options: user options for the backend (``Accelerator(backend_options=...)``).
        precision_options: user options for the precision (``Accelerator(precision_options=...)``).
        gradient_state: the live accumulation state (``sync_gradients``, ``end_of_dataloader``):
            engines that own accumulation boundaries (DeepSpeed) read it on each step.
        parallelism: the process layout (``accelerate_core.parallelism.ParallelLayout``):
            the ``ParallelismConfig`` (``.config``, ``None`` when the script gave none), its
            ``DeviceMesh`` (``.mesh``) and sub-meshes (``.submesh("tp")``,
            ``.submesh("dp_replicate", "dp_shard_cp")``), the data-parallel rank and size.
    """

    state: Any
    backend: str
    mixed_precision: str
    gradient_accumulation_steps: int = 1
    backend_options: dict[str, Any] = field(default_factory=dict)
    precision_options: dict[str, Any] = field(default_factory=dict)
    gradient_state: Any = None
    parallelism: Any = None

    @property
    def device(self) -> Any:
        return self.state.device


@dataclass(frozen=True)
class LaunchOption:
    """One option of ``accel launch`` / ``accel config``, as a record (plugins return these).

    Attributes:
        name: the flag without dashes, dash-separated (``"ddp-find-unused-parameters"``). The
            command line accepts ``--name`` and ``--name_with_underscores``; the config-file key
            is the name with underscores. Plugin options should start with their backend's name.
        help: one line for ``--help`` and the ``accel config`` questionnaire.
        type: ``"bool"`` (a flag, with ``--no-NAME``), ``"int"``, ``"float"``, ``"str"`` or
            ``"json"`` (a JSON value on the command line, any YAML value in a config file).
        choices: the accepted values, when there is a fixed set.
        backend: for a plugin option, the backend whose ``backend_options`` receive the value;
            processes that selected another backend ignore it.
        precision: like ``backend``, for a precision's ``precision_options``.
        key: the key in those options; default the name without the ``backend-``/
            ``precision-`` prefix, with underscores (``find_unused_parameters``).
    """

    name: str
    help: str = ""
    type: str = "str"
    choices: tuple[Any, ...] | None = None
    backend: str | None = None
    precision: str | None = None
    key: str | None = None

    @property
    def dest(self) -> str:
        """The config-file key and argparse destination."""
        return self.name.replace("-", "_")

    @property
    def target(self) -> tuple[str, str] | None:
        """``("backend"|"precision", name)`` for a plugin option, ``None`` for a core one."""
        if self.backend is not None:
            return ("backend", self.backend)
        if self.precision is not None:
            return ("precision", self.precision)
        return None

    @property
    def option_key(self) -> str:
        if self.key is not None:
            return self.key
        target = self.target
        name = self.name
        if target is not None and name.startswith(target[1] + "-"):
            name = name[len(target[1]) + 1 :]
        return name.replace("-", "_")


@dataclass(frozen=True)
class TrackerSpec:
    """An experiment tracker that ``Accelerator(log_with=name)`` selects.

    Attributes:
        name: what users pass to ``log_with`` (and the key of ``init_kwargs``/``log_kwargs``),
            unique across installed plugins.
        install: the command that installs the tracker's library (``"pip install wandb"``); the
            error for a selected tracker whose library is missing quotes it.
        modules: import names of the library; the tracker counts as installed when any of them
            can be found (nothing is imported to check). Empty: always installed.
        requires_logging_directory: the tracker writes under ``Accelerator(project_dir=...)``
            (``ProjectConfiguration.logging_dir``); selecting it without one is an error.
        description: one line shown by ``accel env``.
    """

    name: str
    install: str = ""
    modules: tuple[str, ...] = ()
    requires_logging_directory: bool = False
    description: str = ""


@dataclass(frozen=True)
class LaunchAlias:
    """Another launcher's spelling of launch settings, mapped onto this project's options.

    Hugging Face Accelerate users bring ``accelerate launch`` flags and ``accelerate config``
    files; each of HF's names is a record like this one, returned by the plugin that owns what it
    means (``accelerate_core_launch_aliases``), so no flag is ever silently dropped: it is
    translated, or refused with a message naming what to use instead.

    Attributes:
        name: HF's spelling with underscores, without dashes (``"use_fsdp"``): the command line
            accepts ``--name`` and ``--name-with-dashes``; an HF config file uses it as a key.
        help: one line for ``--help``: what the flag becomes here.
        type: how its value is read: ``"flag"`` (no value on the command line; true/false in a
            file), ``"bool"`` (true/false, yes/no, 1/0), ``"int"``, ``"float"`` or ``"str"``.
        translate: ``translate(value, given) -> {option key: value}``, the settings it gives
            (keys are config-file keys of ``accel launch`` options). ``given`` maps every HF name
            of the same launch to its value, for names whose meaning depends on others. Raise
            ``ConfigurationError`` for a value that cannot be honoured, naming what to use.
            ``None``: the name is always refused with ``instead``.
        instead: for a refused name, what to use instead (completes "is not supported: ...").
        command_line: False for names that exist only as config-file keys (``distributed_type``).
        short: an extra one-letter command-line spelling (``"-t"``), as HF has for a few flags.
    """

    name: str
    help: str = ""
    type: str = "str"
    translate: Callable[[Any, Mapping[str, Any]], Mapping[str, Any]] | None = field(
        default=None, compare=False
    )
    instead: str = ""
    command_line: bool = True
    short: str | None = None


@dataclass(frozen=True)
class CheckpointWeights:
    """A model's full weights inside a checkpoint, read one tensor at a time.

    Returned by ``accelerate_core_checkpoint_weights`` for ``accel merge-weights``, which writes
    them as safetensors with a progress bar; loading tensor by tensor keeps memory at one tensor
    (plus the output shard) for formats that allow it.

    Attributes:
        names: the parameter and buffer names, as a plain model's ``state_dict`` has them.
        load: ``load(name) -> torch.Tensor`` on the CPU.
        nbytes: bytes of every tensor by name (for the progress bar), when known.
        description: what the weights are, for the report (``"fp32 master weights (ZeRO-3)"``).
    """

    names: tuple[str, ...]
    load: Callable[[str], Any] = field(compare=False)
    nbytes: Mapping[str, int] = field(default_factory=dict, compare=False)
    description: str = ""


@dataclass(frozen=True)
class MemoryEstimate:
    """Model-state bytes each rank holds under one backend setting (``accel estimate-memory``).

    Returned by ``accelerate_core_estimate_memory``: the figures are what the ranks hold at rest
    after an optimizer step (parameters, gradients kept for the next step, optimizer state),
    not activations, communication buffers or the allocator's cache.

    Attributes:
        backend: the backend's name.
        setting: the variant (``"replicated"``, ``"sharded"``, ``"ZeRO-2"``...).
        mixed_precision: the precision the figures are for.
        parameters, gradients, optimizer_states: bytes on each rank, rank 0 first.
        note: how the figures are computed (shown under the table).
    """

    backend: str
    setting: str
    mixed_precision: str
    parameters: tuple[int, ...]
    gradients: tuple[int, ...]
    optimizer_states: tuple[int, ...]
    note: str = ""

    def per_rank(self) -> tuple[int, ...]:
        """Total model-state bytes of each rank."""
        return tuple(map(sum, zip(self.parameters, self.gradients, self.optimizer_states)))


@dataclass(frozen=True)
class ExportedName:
    """A public name a plugin defines for the core's import paths (``accelerate_core.utils``).

    Hugging Face Accelerate exports names that belong to one backend here
    (``FullyShardedDataParallelPlugin``, ``DeepSpeedPlugin``, ``DDPCommunicationHookType``);
    their backend's package defines them and returns these records, so the core stays
    backend-agnostic and a script's ``from accelerate_core.utils import ...`` still works.

    Attributes:
        name: the attribute name users import.
        target: ``"package.module:attribute"``, imported only when the name is used.
        backend: the backend the name belongs to (for the error when it is not installed).
    """

    name: str
    target: str
    backend: str = ""
