"""``Accelerator``: the object a training script talks to.

It holds no backend logic. At creation it selects the backend and precision (through the process
state) and asks their plugins, once, for the callables of every family (autocast, loss scaler,
backward, no-sync, clipping, optimizer step); the per-step methods call those directly.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any, cast

import torch
from torch.distributed.algorithms.join import Join, Joinable

from . import checkpoint
from .async_checkpoint import save_checkpoint, wait_for_pending_save
from .checkpoint import ProjectConfiguration, warn_unsafe_serialization_ignored
from .data import DataLoaderShard, prepare_data_loader
from .errors import ConfigurationError, PluginError
from .gradient_state import GradientState
from .hang_watch import NamedOperation
from .hf_arguments import resolve_arguments
from .hf_members import HFMembers, check_accumulation_steps
from .memory import release_memory
from .memory_tracker import DEFAULT_INTERVAL, MemoryTracker
from .model_files import write_model
from .ops import ORIGINAL_FORWARD, DeviceMover, convert_to_fp32
from .optimizer import AcceleratedOptimizer
from .parallelism import MeshMethods, default_backend, parallelism_from_launch, resolve_layout
from .parallelism_config import ParallelismConfig
from .plugins import get_plugin_manager
from .prepare_checks import check_optimizer_parameters, check_prepared, find_prepared
from .process_settings import launch_plugin_options, launch_setting
from .run_guards import RunGuards
from .scheduler import AcceleratedScheduler
from .specs import PluginContext, PrepareRequest
from .state import AcceleratorState, PartialState, describe_device, teardown_process_group
from .tracker_metrics import SystemMetrics, system_metric_kinds
from .tracker_set import TrackerSet, TrackingMethods

KINDS = ("model", "optimizer", "scheduler", "dataloader")
ACCEPTED_TYPES = (
    "torch.nn.Module (models), torch.optim.Optimizer (optimizers), "
    "torch.optim.lr_scheduler.LRScheduler (schedulers) and torch.utils.data.DataLoader "
    "(dataloaders)"
)
_NO_CONTEXT = contextlib.nullcontext()  # stateless and reentrant: one instance serves every step


class Accelerator(MeshMethods, HFMembers, TrackingMethods):
    """Runs one training script unchanged on CPU, one device or many processes.

    Args:
        device_placement: move prepared models and every batch to ``self.device``.
        mixed_precision: ``"no"``, ``"fp16"``, ``"bf16"`` or a plugin's (``"fp8"``); default
            from ``ACCELERATE_CORE_MIXED_PRECISION`` else ``"no"``.
        gradient_accumulation_steps: micro-batches per optimizer step (use ``accumulate``);
            default from ``accel launch`` (``ACCELERATE_CORE_GRADIENT_ACCUMULATION_STEPS``) else 1.
        cpu: train on the CPU even when an accelerator is present.
        backend: an installed backend's name; default ``none`` for one process, ``ddp`` for
            several (``ACCELERATE_CORE_BACKEND`` also sets it).
        backend_options: options for the backend's plugin (for DDP, ``find_unused_parameters``...),
            merged over those given to ``accel launch`` (``--ddp-find-unused-parameters``).
        precision_options: options for the precision's plugin (``{"grad_scaler": {...}}``).
        kwargs_handlers: HF's handlers: ``GradScalerKwargs``/``AutocastKwargs`` (precision
            options), ``DistributedDataParallelKwargs`` (ddp options; ignored by other backends),
            ``InitProcessGroupKwargs`` (timeout), ``ProfileKwargs`` (``profile()``).
        step_scheduler_with_optimizer: prepared schedulers step only when the optimizer did, and
            then ``num_processes`` times unless ``split_batches`` (HF's rule: a schedule sized
            from the unprepared dataloader runs its full length).
        split_batches: with several processes, split each batch between them (the batch size is
            the global one) instead of giving each process whole batches.
        even_batches: complete the last round of batches with samples from the start so every
            process gets as many batches (``gather_for_metrics`` drops the repeats).
        dispatch_batches: iterable datasets are read by the main process, which sends each
            process its batches (the default for them; False is an error for them).
        timeout: process-group timeout for multi-process runs.
        project_dir: where checkpoints and logs go (``project_dir/checkpoints``).
        project_config: ``ProjectConfiguration`` (project_dir, total_limit) as in HF.
        track_memory: sample this rank's memory into a run directory (``True``:
            ``project_dir/memory``); see ``track_memory`` and ``accel memory plot``.
        log_with: experiment trackers: a name (``"tensorboard"``, ``"wandb"``, ``"mlflow"``,
            ...; ``"all"`` for every installed one), a ``LoggerType``, a ``GeneralTracker``
            instance, or a list of them. See ``init_trackers``, ``log``, ``end_training``.
        log_system_metrics: also log memory (needs ``track_memory``) and seconds per step with
            every ``log`` call: True, ``"memory"``, ``"step_time"`` or both in a list.
        parallelism_config: ``ParallelismConfig``: the device mesh (HSDP, tensor and context
            parallelism; ``parallelism.py``); default from ``accel launch --parallelism-config-*``.
        dataloader_config: Hugging Face's argument, translated once (``hf_arguments.py``).
        gradient_accumulation_plugin: Hugging Face's argument, translated once.
        fsdp_plugin: Hugging Face's argument, translated once; selects the fsdp backend.
        deepspeed_plugin: Hugging Face's argument, translated once; selects the deepspeed
            backend.
        deepspeed_plugins: Hugging Face's argument (several plugins), translated once.
        dynamo_backend: Hugging Face's argument, translated once.
        dynamo_plugin: Hugging Face's argument, translated once.
        rng_types: Hugging Face's argument, translated once.
        handle_preemption: on SIGTERM/SIGUSR1 every rank finishes its training step, saves a
            checkpoint under ``project_dir`` and exits with 75 (``preemption``).
        auto_resume: load the latest complete checkpoint under ``project_dir`` once the
            prepared objects match it (a restarted or requeued run goes on where it stopped).
    """

    def __init__(
        self,
        device_placement: bool = True,
        split_batches: bool = False,
        mixed_precision: str | None = None,
        gradient_accumulation_steps: int | None = None,
        cpu: bool | None = None,
        backend: str | None = None,
        backend_options: dict[str, Any] | None = None,
        precision_options: dict[str, Any] | None = None,
        kwargs_handlers: Sequence[Any] | None = None,
        step_scheduler_with_optimizer: bool = True,
        even_batches: bool = True,
        dispatch_batches: bool | None = None,
        timeout: timedelta | None = None,
        project_dir: str | None = None,
        track_memory: str | os.PathLike[str] | bool | None = None,
        project_config: ProjectConfiguration | None = None,
        log_with: Any = None,
        log_system_metrics: bool | str | Sequence[str] = False,
        parallelism_config: ParallelismConfig | None = None,
        dataloader_config: Any = None,
        gradient_accumulation_plugin: Any = None,
        fsdp_plugin: Any = None,
        deepspeed_plugin: Any = None,
        deepspeed_plugins: Any = None,
        dynamo_backend: Any = None,
        dynamo_plugin: Any = None,
        rng_types: Sequence[Any] | None = None,
        handle_preemption: bool = False,
        auto_resume: bool = False,
    ) -> None:
        self._hf = hf = resolve_arguments(
            backend=backend, timeout=timeout,
            gradient_accumulation_steps=gradient_accumulation_steps, split_batches=split_batches,
            even_batches=even_batches,
            dispatch_batches=dispatch_batches, dataloader_config=dataloader_config,
            gradient_accumulation_plugin=gradient_accumulation_plugin,
            kwargs_handlers=kwargs_handlers, fsdp_plugin=fsdp_plugin,
            deepspeed_plugin=deepspeed_plugin, deepspeed_plugins=deepspeed_plugins,
            dynamo_backend=dynamo_backend, dynamo_plugin=dynamo_plugin, rng_types=rng_types,
        )  # fmt: skip
        # Explicit arguments > accel launch > config file > defaults (process_settings.py).
        steps = launch_setting("gradient_accumulation_steps", hf.gradient_accumulation_steps)
        steps = check_accumulation_steps(1 if steps is None else steps)
        parallelism_config = parallelism_from_launch(parallelism_config)
        backend = hf.backend
        if backend is None and launch_setting("backend", None) is None:
            backend = default_backend(parallelism_config)
        self.state = AcceleratorState(mixed_precision, cpu=cpu, backend=backend, timeout=hf.timeout)
        if hf.deepspeed_plugin is not None:
            self.state.deepspeed_plugin = hf.deepspeed_plugin
        self.parallel_layout = resolve_layout(parallelism_config, self.state)
        backend_options = launch_plugin_options(
            "backend", self.state.backend, hf.backend_options(self.state.backend, backend_options)
        )
        precision_options = launch_plugin_options(
            "precision", self.state.mixed_precision, hf.precision_options(precision_options)
        )
        self.device_placement = device_placement
        self.step_scheduler_with_optimizer = step_scheduler_with_optimizer
        self._sync_each_batch = hf.accumulation.sync_each_batch
        self._flag_tensor = None
        self._save_state_hooks: dict[int, Callable[..., None]] = OrderedDict()
        self._load_state_hooks: dict[int, Callable[..., None]] = OrderedDict()
        self.project_configuration = project_config or ProjectConfiguration()
        if project_dir is not None:
            self.project_configuration.set_directories(str(project_dir))
        self.gradient_state = GradientState(steps, hf.accumulation.sync_with_dataloader)
        self.plugin_context = PluginContext(
            state=self.state,
            backend=self.state.backend,
            mixed_precision=self.state.mixed_precision,
            gradient_accumulation_steps=steps,
            backend_options=backend_options,
            precision_options=precision_options,
            gradient_state=self.gradient_state,
            parallelism=self.parallel_layout,
        )
        self._validate_plugin_options()
        self._resolve_plugin_callables()
        self._models: list[torch.nn.Module] = []
        self._optimizers: list[AcceleratedOptimizer] = []
        self._schedulers: list[AcceleratedScheduler] = []
        self._dataloaders: list[DataLoaderShard] = []
        self._custom_objects: list[Any] = []
        self.memory_tracker: MemoryTracker | None = None
        kinds = system_metric_kinds(log_system_metrics, bool(track_memory))
        metrics = SystemMetrics(kinds, lambda: self.memory_tracker) if kinds else None
        self._tracking = TrackerSet(log_with, self.logging_dir, self.is_main_process, metrics)
        if track_memory:
            self.track_memory(None if track_memory is True else track_memory)
        self._guards = RunGuards(self, handle_preemption, auto_resume)

    def _validate_plugin_options(self) -> None:
        """The owners check the options they receive, once, on every process; none go unread."""
        manager = get_plugin_manager()
        context = self.plugin_context
        for kind, name, owner, options in (
            ("backend", self.backend, self.state.backend_owner, context.backend_options),
            ("precision", self.mixed_precision, self.state.precision_owner,
             context.precision_options),
        ):  # fmt: skip
            checked = manager.call_owner(
                "accelerate_core_validate_options", owner, kind=kind, name=name,
                options=dict(options), context=context,
            )  # fmt: skip
            if options and not checked:
                raise ConfigurationError(
                    f"{kind} '{name}' takes no options, got {kind}_options="
                    f"{dict(options)!r}; remove them"
                )

    def _resolve_plugin_callables(self) -> None:
        """Ask the owning plugins once; the per-step path only calls what they returned."""
        manager = get_plugin_manager()
        context = self.plugin_context
        precision_owner = self.state.precision_owner
        self._manager = manager
        if self.state.backend_spec.owns_precision:
            self.scaler = None
            self._autocast: Callable[[], AbstractContextManager[Any]] | None = None
        else:
            self.scaler = manager.call_owner(
                "accelerate_core_grad_scaler", precision_owner, context=context
            )
            self._autocast = manager.call_owner(
                "accelerate_core_autocast", precision_owner, context=context
            )
        self._resolve_backend_callables()
        # Host-to-device copies can overlap compute; to the CPU there is nothing to overlap.
        non_blocking = self.device.type != "cpu" or self._hf.dataloader.non_blocking
        self._place_batch = DeviceMover(self.device, non_blocking=non_blocking)

    def _resolve_backend_callables(self) -> None:
        def ask(hook: str, **kwargs: Any) -> Any:
            return self._manager.call_owner(
                hook, self.state.backend_owner, context=self.plugin_context, **kwargs
            )

        self._backward = ask("accelerate_core_backward", scaler=self.scaler)
        self._no_sync: Callable[[torch.nn.Module], AbstractContextManager[Any]] = ask(
            "accelerate_core_no_sync"
        )
        self._clip_norm: Callable[..., torch.Tensor | None] = ask("accelerate_core_clip_grad_norm")
        self._clip_value = ask("accelerate_core_clip_grad_value")
        self._optimizer_step = ask("accelerate_core_optimizer_step", scaler=self.scaler)

    # ------------------------------------------------------------------ process facts

    @property
    def device(self) -> torch.device:
        return self.state.device

    @property
    def backend(self) -> str:
        return self.state.backend

    @property
    def mixed_precision(self) -> str:
        return self.state.mixed_precision

    @property
    def process_index(self) -> int:
        return self.state.process_index

    @property
    def local_process_index(self) -> int:
        return self.state.local_process_index

    @property
    def num_processes(self) -> int:
        return self.state.num_processes

    @property
    def use_distributed(self) -> bool:
        return self.state.use_distributed

    @property
    def is_main_process(self) -> bool:
        return self.state.is_main_process

    @property
    def is_local_main_process(self) -> bool:
        return self.state.is_local_main_process

    @property
    def is_last_process(self) -> bool:
        return self.state.is_last_process

    @property
    def optimizer_step_was_skipped(self) -> bool:
        """True when fp16 loss scaling skipped the last step of any prepared optimizer."""
        return any(optimizer.step_was_skipped for optimizer in self._optimizers)

    # ------------------------------------------------------------------ prepare

    def prepare(self, *args: Any, device_placement: Sequence[bool] | None = None) -> Any:
        """Prepare models, optimizers, schedulers and dataloaders, given in any order.

        Returns them in the same order (one object when given one). Everything from one call
        reaches the backend as one request, so engines built from several parts see them all.
        """
        if device_placement is not None and len(device_placement) != len(args):
            raise ConfigurationError(
                f"device_placement has {len(device_placement)} entries for {len(args)} objects"
            )
        placement = list(device_placement or [self.device_placement] * len(args))
        request = PrepareRequest()
        slots: list[tuple[str, int] | None] = []
        place_model: list[bool] = []
        for obj, place in zip(args, placement):
            kind = self._kind_of(obj)
            if kind is None:
                slots.append(None)
                continue
            bucket = getattr(request, kind + "s")
            bucket.append(obj)
            slots.append((kind, len(bucket) - 1))
            if kind == "model":
                place_model.append(place)
        request = self._ask_precision_convert(request)
        if not self.state.backend_spec.places_models:
            for i, model in enumerate(request.models):
                if place_model[i]:
                    model.to(self.device)
        for model in request.models:
            self._install_autocast(model)
        loader_placement = [p for p, s in zip(placement, slots) if s and s[0] == "dataloader"]
        request.dataloaders = [
            self._prepare_dataloader(dl, place)
            for dl, place in zip(request.dataloaders, loader_placement)
        ]
        request = self._ask_backend_wrap(request)
        # After wrapping: a backend may rebind optimizers to new (sharded) parameters.
        check_optimizer_parameters(
            request.optimizers, [*self._models, *request.models], self.num_processes > 1
        )
        self._compile_models(request.models)
        prepared = self._wrap_training_objects(request)
        results = [
            self._prepared_form(obj) if slot is None else getattr(prepared, slot[0] + "s")[slot[1]]
            for obj, slot in zip(args, slots)
        ]
        self._guards.prepared()
        return results[0] if len(results) == 1 else tuple(results)

    def _kind_of(self, obj: Any) -> str | None:
        """The kind of ``obj``, or None when it was prepared already; TypeError when unknown."""
        if isinstance(obj, (AcceleratedOptimizer, AcceleratedScheduler, DataLoaderShard)):
            return None
        if find_prepared(obj, self._models, self._optimizers, self.unwrap_model) is not None:
            return None  # prepared before: the same prepared object again, never wrapped twice
        if isinstance(obj, torch.nn.Module):
            return "model"
        declared: str | None = getattr(obj, "__accelerate_core_kind__", None)
        if declared in KINDS:
            return declared  # placeholder objects of a backend (say, an optimizer from a config)
        if isinstance(obj, torch.optim.Optimizer):
            return "optimizer"
        if isinstance(
            obj, (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        ):
            return "scheduler"
        if isinstance(obj, torch.utils.data.DataLoader):
            return "dataloader"
        raise TypeError(
            f"Accelerator.prepare() cannot handle an object of type {type(obj).__qualname__}; "
            f"it takes {ACCEPTED_TYPES}"
        )

    def _prepared_form(self, obj: Any) -> Any:
        found = find_prepared(obj, self._models, self._optimizers, self.unwrap_model)
        return obj if found is None else found

    def _checked(
        self, result: PrepareRequest | None, before: PrepareRequest, hook: str, owner: object
    ) -> PrepareRequest:
        if result is None:
            return before
        for kind in KINDS:
            if len(getattr(result, kind + "s")) != len(getattr(before, kind + "s")):
                raise PluginError(
                    f"{hook} of plugin {self._manager.distribution_of(owner)} returned "
                    f"{len(getattr(result, kind + 's'))} {kind}s for "
                    f"{len(getattr(before, kind + 's'))}; it must keep every position"
                )
        return result

    def _ask_precision_convert(self, request: PrepareRequest) -> PrepareRequest:
        owner = self.state.precision_owner
        result = self._manager.call_owner(
            "accelerate_core_convert", owner, request=request, context=self.plugin_context
        )
        return self._checked(result, request, "accelerate_core_convert", owner)

    def _ask_backend_wrap(self, request: PrepareRequest) -> PrepareRequest:
        owner = self.state.backend_owner
        with NamedOperation("prepare (the backend wraps the models)"):  # DDP broadcasts
            result = self._manager.call_owner(
                "accelerate_core_wrap", owner, request=request, context=self.plugin_context
            )
        return self._checked(result, request, "accelerate_core_wrap", owner)

    def _install_autocast(self, model: torch.nn.Module) -> None:
        """Run ``model``'s forward under the precision's autocast, outputs returned in fp32."""
        autocast = self._autocast
        if autocast is None or ORIGINAL_FORWARD in model.__dict__:
            return
        original = model.forward

        @functools.wraps(original)
        def forward(*args: Any, **kwargs: Any) -> Any:
            with autocast():
                outputs = original(*args, **kwargs)
            return convert_to_fp32(outputs)

        model.__dict__[ORIGINAL_FORWARD] = original
        model.forward = forward

    def _wrap_training_objects(self, request: PrepareRequest) -> PrepareRequest:
        state = self.gradient_state
        optimizers = [
            AcceleratedOptimizer(opt, state, self._optimizer_step, self.scaler)
            for opt in request.optimizers
        ]
        schedulers = []
        for scheduler in request.schedulers:
            inner = getattr(scheduler, "optimizer", None)
            linked = [o for o in optimizers + self._optimizers if o.optimizer is inner]
            schedulers.append(
                AcceleratedScheduler(
                    scheduler,
                    linked or optimizers + self._optimizers,
                    state,
                    self.step_scheduler_with_optimizer,
                    1 if self.split_batches else self.num_processes,
                )
            )
        self._models.extend(request.models)
        self.gradient_state.has_joinable_models = any(isinstance(m, Joinable) for m in self._models)
        self._optimizers.extend(optimizers)
        self._schedulers.extend(schedulers)
        self._dataloaders.extend(request.dataloaders)
        return PrepareRequest(request.models, optimizers, schedulers, request.dataloaders)

    def _prepare_dataloader(self, dataloader: Any, place: bool) -> DataLoaderShard:
        layout = self.parallel_layout  # ranks of one TP/CP group read the same batches
        return prepare_data_loader(
            dataloader,
            layout.dp_size,
            layout.dp_rank,
            self.gradient_state,
            self._place_batch if place else None,
            split_batches=self.split_batches,
            even_batches=self.even_batches,
            dispatch_batches=self.dispatch_batches,
            main_process=self.is_main_process if self.num_processes > 1 else None,
        )

    def prepare_model(self, model: torch.nn.Module, device_placement: bool | None = None) -> Any:
        return self.prepare(
            model, device_placement=None if device_placement is None else [device_placement]
        )

    def prepare_optimizer(self, optimizer: torch.optim.Optimizer) -> AcceleratedOptimizer:
        return cast(AcceleratedOptimizer, self.prepare(optimizer))

    def prepare_scheduler(self, scheduler: Any) -> AcceleratedScheduler:
        return cast(AcceleratedScheduler, self.prepare(scheduler))

    def prepare_data_loader(self, dataloader: Any, device_placement: bool | None = None) -> Any:
        return self.prepare(
            dataloader, device_placement=None if device_placement is None else [device_placement]
        )

    # ------------------------------------------------------------------ training step

    def backward(self, loss: torch.Tensor, **kwargs: Any) -> None:
        """``loss.backward()`` with accumulation scaling, loss scaling or the backend's engine."""
        self.gradient_state.backwards += 1  # a training step (preemption stops after one)
        with NamedOperation("backward (gradient reduction)"):  # a peer never came: say which
            self._backward(loss, **kwargs)

    def accumulate(self, *models: torch.nn.Module) -> AbstractContextManager[Any]:
        """One micro-step of gradient accumulation.

        Sets ``sync_gradients`` (True every ``gradient_accumulation_steps`` micro-steps and on the
        last batch of a prepared dataloader); on the others gradients are not synchronised and
        the prepared optimizer's ``step``/``zero_grad`` do nothing.
        """
        check_prepared(models, self._models, self.unwrap_model)
        if self.gradient_state.advance() or not models or self._sync_each_batch:
            return _NO_CONTEXT
        if len(models) == 1:
            return self._no_sync(models[0])
        stack = contextlib.ExitStack()
        for model in models:
            stack.enter_context(self._no_sync(model))
        return stack

    @contextlib.contextmanager
    def no_sync(self, model: torch.nn.Module) -> Iterator[None]:
        """Backward passes in this block do not synchronise ``model``'s gradients."""
        with self._no_sync(model):
            yield

    def unscale_gradients(self, optimizer: Any = None) -> None:
        """Divide fp16-scaled gradients by the loss scale (once per step), before clipping."""
        if self.scaler is None:
            return
        targets = self._optimizers if optimizer is None else [optimizer]
        for opt in targets:
            if isinstance(opt, AcceleratedOptimizer):
                if not opt.unscaled:
                    self.scaler.unscale_(opt.optimizer)
                    opt.unscaled = True
            else:
                self.scaler.unscale_(opt)

    def clip_grad_norm_(
        self,
        parameters: Iterable[torch.Tensor] | torch.Tensor,
        max_norm: float,
        norm_type: float = 2.0,
    ) -> torch.Tensor | None:
        """Clip the global gradient norm; returns it (``None`` on a non-syncing micro-step).

        On micro-steps that do not sync the gradients are incomplete and the optimizer does not
        step, so nothing is clipped: calling this on every batch is the same as calling it on the
        steps that update, and never unscales a partial fp16 gradient.
        """
        if not self.gradient_state.sync_gradients:
            return None
        self.unscale_gradients()
        with NamedOperation("clip_grad_norm_"):  # sharded backends all-reduce the norm
            return self._clip_norm(parameters, max_norm, norm_type=norm_type)

    def clip_grad_value_(
        self, parameters: Iterable[torch.Tensor] | torch.Tensor, clip_value: float
    ) -> None:
        """Clip every gradient to ``[-clip_value, clip_value]`` (on syncing steps, see above)."""
        if not self.gradient_state.sync_gradients:
            return
        self.unscale_gradients()
        self._clip_value(parameters, clip_value)

    def autocast(self) -> AbstractContextManager[Any]:
        """The precision's autocast for code outside the prepared model's forward (the loss)."""
        return contextlib.nullcontext() if self._autocast is None else self._autocast()

    @contextlib.contextmanager
    def join_uneven_inputs(self, joinables: Sequence[Any]) -> Iterator[None]:
        """Train on uneven per-process batch counts (``even_batches=False``) without hanging.

        Uses torch's ``Join``: a process that runs out of batches shadows the collectives of the
        others (for DDP, the gradient all-reduce) until every process is done. With one
        process, or models that do not synchronise, it does nothing.
        """
        joinable = [j for j in joinables if isinstance(j, Joinable)]
        if self.num_processes == 1 or not joinable:
            yield
            return
        self.gradient_state.joined = True
        try:
            with Join(joinable):
                yield
        finally:
            self.gradient_state.joined = False

    # ------------------------------------------------------------------ models

    def unwrap_model(
        self,
        model: torch.nn.Module,
        keep_fp32_wrapper: bool = True,
        keep_torch_compile: bool = True,
    ) -> Any:
        """The user's module inside a prepared one (backend wrapper and ``torch.compile`` removed).

        With ``keep_fp32_wrapper=False`` the mixed-precision forward wrapper is removed too.
        ``torch.compile`` wrappers are always removed, so the module's ``state_dict`` has the
        user's keys (``keep_torch_compile`` is accepted for HF's signature; models compiled by
        ``dynamo_backend`` are compiled in place and stay compiled).
        """
        inner = checkpoint.unwrap(model, self.plugin_context)
        if not keep_fp32_wrapper and ORIGINAL_FORWARD in inner.__dict__:
            inner.forward = inner.__dict__.pop(ORIGINAL_FORWARD)
        return inner

    def get_state_dict(self, model: torch.nn.Module, unwrap: bool = True) -> dict[str, Any]:
        """The full state dict of a prepared model, gathered by the backend when sharded."""
        if not unwrap:
            return model.state_dict()
        return checkpoint.full_state_dict(model, self.plugin_context)

    def save_model(
        self,
        model: torch.nn.Module,
        save_directory: str | os.PathLike[str],
        max_shard_size: int | str = "10GB",
        safe_serialization: bool = True,
    ) -> None:
        """Write the model's full weights once (main process), as loadable (sharded) files."""
        state = self.get_state_dict(model)
        if self.is_main_process:
            write_model(state, save_directory, max_shard_size, safe_serialization)
        self.wait_for_everyone()

    # ------------------------------------------------------------------ checkpoints

    @property
    def project_dir(self) -> str | None:
        return self.project_configuration.project_dir

    @property
    def logging_dir(self) -> str | None:
        return self.project_configuration.logging_dir

    def register_for_checkpointing(self, *objects: Any) -> None:
        """Save and restore these objects (anything with ``state_dict``/``load_state_dict``)."""
        for obj in objects:
            if not (
                callable(getattr(obj, "state_dict", None))
                and callable(getattr(obj, "load_state_dict", None))
            ):
                raise TypeError(
                    f"register_for_checkpointing() needs objects with state_dict() and "
                    f"load_state_dict(); {type(obj).__qualname__} has not both"
                )
        self._custom_objects.extend(objects)
        self._guards.prepared()

    def save_state(
        self,
        output_dir: str | os.PathLike[str] | None = None,
        safe_serialization: bool = True,
        *,
        async_save: bool = False,
    ) -> str:
        """Checkpoint everything needed to continue this run exactly; returns the directory.

        Without ``output_dir``: ``project_dir/checkpoints/checkpoint_<n>``, keeping at most
        ``ProjectConfiguration.total_limit`` of them. Written atomically (see ``checkpoint``).
        ``safe_serialization`` is HF's argument: weights are always safetensors here (loading a
        checkpoint never runs pickled code), so ``False`` is warned about and changes nothing.
        ``async_save=True`` returns once the state is copied to host memory and writes in the
        background (``async_checkpoint``); the next save, ``load_state`` and the exit wait for it.
        """
        if not safe_serialization:
            warn_unsafe_serialization_ignored()
        return str(save_checkpoint(self._training_objects(), output_dir, async_save))

    def load_state(self, input_dir: str | os.PathLike[str] | None = None) -> str:
        """Restore a checkpoint (default: the latest complete one under ``project_dir``).

        Prepare the same objects first. Prepared dataloaders then continue on their own from the
        next unseen batch of the saved epoch.
        """
        wait_for_pending_save()
        return str(checkpoint.load_state(self._training_objects(), input_dir))

    def _training_objects(self) -> checkpoint.TrainingObjects:
        """The objects a checkpoint holds, handed to ``checkpoint`` explicitly."""
        return checkpoint.TrainingObjects(
            state=self.state,
            context=self.plugin_context,
            gradient_state=self.gradient_state,
            project=self.project_configuration,
            models=self._models,
            optimizers=self._optimizers,
            schedulers=self._schedulers,
            dataloaders=self._dataloaders,
            custom_objects=self._custom_objects,
            scaler=self.scaler,
            save_hooks=list(self._save_state_hooks.values()),
            load_hooks=list(self._load_state_hooks.values()),
        )

    def skip_first_batches(self, dataloader: Any, num_batches: int = 0) -> Any:
        """Start the next pass over ``dataloader`` at batch ``num_batches`` of this epoch.

        For scripts that track their position themselves (the Hugging Face way). Prepared
        loaders already resume on their own after ``load_state``; skipping the same number of
        batches again is then the same position, not twice as far.
        """
        if not isinstance(dataloader, DataLoaderShard):
            dataloader = DataLoaderShard(dataloader, self.gradient_state, None)
        return dataloader.skip_batches(num_batches)

    def free_memory(self, *objects: Any) -> list[None]:
        """Forget every prepared object, collect garbage and empty the device cache.

        Pass your own references to have them dropped too: ``model, opt = acc.free_memory(model,
        opt)``.
        """
        self._models.clear()
        self._optimizers.clear()
        self._schedulers.clear()
        self._dataloaders.clear()
        self.gradient_state.step = 0
        return release_memory(*objects)

    def track_memory(
        self,
        run_dir: str | os.PathLike[str] | None = None,
        interval: float = DEFAULT_INTERVAL,
        **kwargs: Any,
    ) -> MemoryTracker:
        """Sample this rank's CPU and device memory into ``RUN_DIR/memory-rank{N}.json``.

        Default ``run_dir``: ``project_dir/memory``. Stopped by ``end_training()`` or
        ``accelerator.memory_tracker.stop()``; read it with ``accel memory plot|summary``.
        """
        if self.memory_tracker is not None and self.memory_tracker.running:
            raise ConfigurationError(
                "memory tracking is already running; call accelerator.memory_tracker.stop() first"
            )
        if run_dir is None:
            run_dir = os.path.join(self.project_dir or ".", "memory")
        self.memory_tracker = MemoryTracker(
            run_dir,
            interval,
            rank=self.process_index,
            world_size=self.num_processes,
            device=self.device,
            device_owner=self.state.device_owner,
            device_name=self.state.device_name,
            **kwargs,
        ).start()
        return self.memory_tracker

    def end_training(self) -> None:
        """Finish every tracker, stop memory tracking, wait for every process, then tear down
        the process group. Safe to call twice; a tracker that fails to finish raises after the
        others finished and every process arrived."""
        failure: Exception | None = None
        try:
            self._tracking.end_training()
        except Exception as exc:  # every process must still reach the barrier below
            failure = exc
        if self.memory_tracker is not None:
            self.memory_tracker.stop()
        self._guards.close()  # and waits for an asynchronous save under way
        self.wait_for_everyone()
        teardown_process_group()
        if failure is not None:
            raise failure

    def __repr__(self) -> str:
        return (
            f"Accelerator(backend={self.backend!r}, mixed_precision={self.mixed_precision!r}, "
            f"device={describe_device(self.state.device_name, self.device)}, "
            f"process {self.process_index} of {self.num_processes}, "
            f"gradient_accumulation_steps={self.gradient_accumulation_steps})"
        )


__all__ = ["Accelerator", "PartialState"]
