"""The DeepSpeed engine behind ``prepare``/``backward``/``step``/``clip_grad_norm_``.

One ``DeepSpeedRuntime`` per ``Accelerator`` (found from its ``PluginContext``) holds the engine.
The per-step callables handed to the core are plain closures over it:

* ``backward(loss)``: tells the engine whether this micro-step ends an accumulation cycle
  (``gradient_state.sync_gradients``, set by ``accumulate()``), then ``engine.backward(loss)``,
  which divides the loss by ``gradient_accumulation_steps`` and applies fp16 loss scaling. The
  core's own division and scaler are not used under this backend (``owns_precision=True``).
* ``step(optimizer)``: ``engine.step()`` (the core calls it only on syncing steps). The engine
  clips, steps its optimizer, steps its LR scheduler (unless fp16 skipped the step) and zeroes the
  gradients; the prepared scheduler's ``step()`` and optimizer's ``zero_grad()`` therefore do
  nothing more.
* ``clip(parameters, max_norm)``: sets the engine's ``gradient_clipping`` (or checks it against
  the config) and returns the global norm, which the engine computes inside the step.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import weakref
from collections.abc import Callable
from types import ModuleType
from typing import Any

import torch

from accelerate_core import ConfigurationError, PluginNotInstalledError

from .build_locks import clear_stale_build_locks
from .config import Knowledge, ResolvedConfig, format_config, resolve_config
from .options import DeepSpeedOptions
from .placeholders import DummyOptim, DummyScheduler

INSTALL_HINT = "pip install deepspeed (pip install accelerate-deepspeed installs it too)"
DS_ACCELERATOR = "DS_ACCELERATOR"
# Device types DeepSpeed has an accelerator of the same name for.
DEEPSPEED_ACCELERATORS = ("cpu", "cuda", "xpu", "npu", "mps", "hpu", "mlu")
CONFIG_ATTRIBUTE = "_accelerate_deepspeed_config"


# --------------------------------------------------------------------------- import


def import_deepspeed(device: torch.device) -> ModuleType:
    """Import DeepSpeed for ``device`` (its accelerator must be the device's type).

    DeepSpeed picks its accelerator once per process, from ``DS_ACCELERATOR`` or by probing
    CUDA; a run on the CPU of a GPU machine would otherwise get the CUDA one. Unless the user set
    ``DS_ACCELERATOR``, it is set here to the training device's type before the first import.
    Build locks left by killed op builds are removed first (``build_locks``).
    """
    if device.type in DEEPSPEED_ACCELERATORS and "deepspeed" not in sys.modules:
        os.environ.setdefault(DS_ACCELERATOR, device.type)
    # Before DeepSpeed builds an op: a lock left by a killed build would make it wait forever.
    clear_stale_build_locks()
    try:
        import deepspeed
        from deepspeed.accelerator import get_accelerator
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] != "deepspeed":
            raise PluginNotInstalledError(
                f"backend 'deepspeed' could not import DeepSpeed: {exc}; install what it "
                f"needs, or reinstall it: {INSTALL_HINT}"
            ) from exc
        raise PluginNotInstalledError(
            f"backend 'deepspeed' needs the DeepSpeed library, which is not installed; "
            f"{INSTALL_HINT}"
        ) from exc
    except Exception as exc:  # a broken installation: say so, and how to repair it
        raise PluginNotInstalledError(
            f"backend 'deepspeed' could not import DeepSpeed ({type(exc).__name__}: {exc}); "
            f"reinstall it: pip install --force-reinstall deepspeed ({INSTALL_HINT})"
        ) from exc
    name = get_accelerator().device_name()
    if name != device.type:
        raise ConfigurationError(
            f"DeepSpeed chose its '{name}' accelerator but this process trains on {device}; "
            f"set {DS_ACCELERATOR}={device.type} in the environment of every process (it is "
            f"now {os.environ.get(DS_ACCELERATOR)!r}), or import deepspeed only after creating "
            "the Accelerator"
        )
    return deepspeed


def is_engine(obj: Any) -> bool:
    """True for a DeepSpeed engine (never imports DeepSpeed to answer)."""
    deepspeed = sys.modules.get("deepspeed")
    return deepspeed is not None and isinstance(obj, deepspeed.DeepSpeedEngine)


# --------------------------------------------------------------------------- prepared objects


class DeepSpeedOptimizer:
    """What ``prepare`` returns (inside ``AcceleratedOptimizer``) for the engine's optimizer.

    ``step`` is the engine's step; ``zero_grad`` does nothing because the engine zeroes the
    gradients in its step. ``param_groups`` and ``state`` are those of the engine's optimizer.
    """

    def __init__(self, engine: Any, runtime: DeepSpeedRuntime) -> None:
        self.engine = engine
        self.runtime = runtime

    @property
    def optimizer(self) -> Any:
        return self.engine.optimizer

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.engine.optimizer.param_groups

    @property
    def state(self) -> Any:
        return getattr(self.engine.optimizer, "state", {})

    @property
    def defaults(self) -> dict[str, Any]:
        return getattr(self.engine.optimizer, "defaults", {})

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Nothing: the engine zeroes its (possibly partitioned) gradients after each step."""

    def step(self, closure: Any = None) -> bool:
        return self.runtime.step(self)

    def state_dict(self) -> dict[str, Any]:
        """This rank's (partitioned) optimizer state, as DeepSpeed's optimizer returns it."""
        return self.engine.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.engine.optimizer.load_state_dict(state_dict)

    def __repr__(self) -> str:
        return f"DeepSpeedOptimizer({type(self.engine.optimizer).__name__})"


class DeepSpeedScheduler:
    """What ``prepare`` returns (inside ``AcceleratedScheduler``) for the engine's scheduler.

    The engine steps its scheduler inside ``engine.step()`` (skipping steps that fp16 skipped), so
    ``step()`` here does nothing; everything else is the engine's scheduler's.
    """

    def __init__(self, engine: Any, optimizer: DeepSpeedOptimizer) -> None:
        self.engine = engine
        self.optimizer = optimizer  # links the prepared scheduler to the prepared optimizer

    @property
    def scheduler(self) -> Any:
        return self.engine.lr_scheduler

    def step(self, *args: Any, **kwargs: Any) -> None:
        """Nothing: ``engine.step()`` already stepped the scheduler with the optimizer."""

    def get_last_lr(self) -> list[float]:
        return self.engine.lr_scheduler.get_last_lr()

    def state_dict(self) -> dict[str, Any]:
        return self.engine.lr_scheduler.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.engine.lr_scheduler.load_state_dict(state_dict)

    def __getattr__(self, name: str) -> Any:
        if name in ("engine", "optimizer"):
            raise AttributeError(name)
        return getattr(self.engine.lr_scheduler, name)

    def __repr__(self) -> str:
        return f"DeepSpeedScheduler({type(self.engine.lr_scheduler).__name__})"


class DeepSpeedGradNorm:
    """The global gradient norm returned by ``clip_grad_norm_`` under DeepSpeed.

    The engine computes the norm (over every rank's gradient partitions) inside
    ``optimizer.step()``, so the value exists once the step has run: read it after
    ``optimizer.step()`` with ``float(norm)`` or ``norm.item()``. Reading it earlier is an error
    rather than a wrong number.
    """

    __slots__ = ("_value",)

    def __init__(self) -> None:
        self._value: float | None = None

    def _set(self, value: Any) -> None:
        self._value = float(value)

    @property
    def ready(self) -> bool:
        return self._value is not None

    def item(self) -> float:
        if self._value is None:
            raise RuntimeError(
                "under DeepSpeed the gradient norm is computed by the engine inside "
                "optimizer.step(); read the value returned by clip_grad_norm_ after "
                "optimizer.step()"
            )
        return self._value

    def __float__(self) -> float:
        return self.item()

    def __format__(self, spec: str) -> str:
        return format(self.item(), spec)

    def __eq__(self, other: object) -> bool:
        return self.item() == float(other)  # type: ignore[arg-type]

    def __lt__(self, other: Any) -> bool:
        return self.item() < float(other)

    def __le__(self, other: Any) -> bool:
        return self.item() <= float(other)

    def __gt__(self, other: Any) -> bool:
        return self.item() > float(other)

    def __ge__(self, other: Any) -> bool:
        return self.item() >= float(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        if self._value is None:
            return "DeepSpeedGradNorm(available after optimizer.step())"
        return f"DeepSpeedGradNorm({self._value})"


# --------------------------------------------------------------------------- the runtime


class DeepSpeedRuntime:
    """Everything the ``deepspeed`` backend keeps for one ``Accelerator``."""

    def __init__(self, context: Any) -> None:
        # The context's parts, not the context: the registry entry must not keep it alive.
        self.state = context.state
        self.gradient_state = context.gradient_state
        self.mixed_precision = context.mixed_precision
        self.gradient_accumulation_steps = context.gradient_accumulation_steps
        self.options = DeepSpeedOptions.from_mapping(dict(context.backend_options))
        self.deepspeed = import_deepspeed(context.device)
        self.engine: Any = None
        self.resolved: ResolvedConfig | None = None
        self.micro_batch_sizes: list[int] = []
        self.clipping_source: str | None = None
        self._pending_norms: list[DeepSpeedGradNorm] = []

    # ------------------------------------------------------------------ prepare

    def require_engine(self, what: str) -> Any:
        if self.engine is None:
            raise ConfigurationError(
                f"{what} under DeepSpeed needs the engine: prepare the model and its optimizer "
                "first (accelerator.prepare(model, optimizer, dataloader, ...))"
            )
        return self.engine

    def wrap(self, request: Any) -> Any:
        """Build one engine from the model, optimizer and scheduler of one ``prepare`` call."""
        state = self.state
        sizes = [micro_batch_size(dl, state.num_processes) for dl in request.dataloaders]
        self.micro_batch_sizes += [size for size in sizes if size is not None]
        if not request.optimizers and not request.schedulers:
            # Models without an optimizer (evaluation, frozen teachers) are not DeepSpeed's.
            request.models = [m.to(state.device) for m in request.models]
            return request
        if len(request.optimizers) != 1 or len(request.schedulers) > 1:
            raise ConfigurationError(
                "DeepSpeed builds one engine from one model, one optimizer and at most one "
                f"scheduler; this prepare() call got {len(request.optimizers)} optimizers and "
                f"{len(request.schedulers)} schedulers. Prepare one model with its optimizer "
                "(and scheduler) per call"
            )
        if self.engine is not None:
            raise ConfigurationError(
                "this Accelerator already has a DeepSpeed engine; backend 'deepspeed' trains one "
                "model (with one optimizer) per Accelerator"
            )
        optimizer = request.optimizers[0]
        scheduler = request.schedulers[0] if request.schedulers else None
        index = _model_of(optimizer, request.models)
        model = request.models[index]
        knowledge = self._knowledge(model, optimizer, scheduler)
        self.resolved = resolve_config(self.options, knowledge)
        if self.options.print_config and state.is_main_process:
            print("accelerate-deepspeed: resolved DeepSpeed config")
            print(format_config(self.resolved))
        ensure_process_group(state)
        engine = self._initialize(model, optimizer, scheduler, self.resolved.config)
        setattr(engine, CONFIG_ATTRIBUTE, self.resolved.config)
        if self.options.cast_inputs and (engine.bfloat16_enabled() or engine.fp16_enabled()):
            cast_at_the_boundary(engine.module, engine.bfloat16_enabled())
        self.engine = engine
        prepared_optimizer = DeepSpeedOptimizer(engine, self)
        request.models = [
            engine if i == index else m.to(state.device) for i, m in enumerate(request.models)
        ]
        request.optimizers = [prepared_optimizer]
        if scheduler is not None:
            if engine.lr_scheduler is None:
                raise ConfigurationError(
                    "DeepSpeed built no LR scheduler for the DummyScheduler passed to prepare(); "
                    'add a "scheduler" section to the DeepSpeed config'
                )
            request.schedulers = [DeepSpeedScheduler(engine, prepared_optimizer)]
        return request

    def _knowledge(self, model: torch.nn.Module, optimizer: Any, scheduler: Any) -> Knowledge:
        dummy_opt = optimizer if isinstance(optimizer, DummyOptim) else None
        dummy_sched = scheduler if isinstance(scheduler, DummyScheduler) else None
        lr = None
        if dummy_opt is None:
            groups = getattr(optimizer, "param_groups", None) or [{}]
            lr = groups[0].get("lr")
        return Knowledge(
            mixed_precision=self.mixed_precision,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            num_processes=self.state.num_processes,
            micro_batch_sizes=list(self.micro_batch_sizes),
            client_optimizer_lr=lr,
            has_client_optimizer=dummy_opt is None,
            has_client_scheduler=scheduler is not None and dummy_sched is None,
            dummy_optimizer=dummy_opt,
            dummy_scheduler=dummy_sched,
            model_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        )

    def _initialize(
        self, model: torch.nn.Module, optimizer: Any, scheduler: Any, config: dict[str, Any]
    ) -> Any:
        kwargs: dict[str, Any] = {"model": model, "config": config}
        if isinstance(optimizer, DummyOptim):
            kwargs["model_parameters"] = optimizer.params
        else:
            kwargs["optimizer"] = optimizer
        if isinstance(scheduler, DummyScheduler):
            if "scheduler" not in config:
                kwargs["lr_scheduler"] = scheduler.lr_scheduler_callable
            else:
                kwargs.update(self._torch_scheduler(config))
        elif scheduler is not None:
            kwargs["lr_scheduler"] = scheduler
        engine, *_ = self.deepspeed.initialize(**kwargs)
        return engine

    def _torch_scheduler(self, config: dict[str, Any]) -> dict[str, Any]:
        """A config scheduler that is torch's (``StepLR``...) is built on the torch optimizer.

        DeepSpeed would hand torch's scheduler its ZeRO wrapper, which torch refuses (not an
        ``Optimizer``); its own schedulers (``WarmupLR``...) are left to DeepSpeed.
        """
        from deepspeed.runtime import lr_schedules

        section = config["scheduler"]
        name = section.get("type")
        if hasattr(lr_schedules, name) or not hasattr(torch.optim.lr_scheduler, name):
            return {}
        cls = getattr(torch.optim.lr_scheduler, name)
        params = dict(section.get("params", {}))
        without = {k: v for k, v in config.items() if k != "scheduler"}
        return {"config": without, "lr_scheduler": lambda optimizer: cls(optimizer, **params)}

    # ------------------------------------------------------------------ per step

    def backward_function(self) -> Callable[..., None]:
        gradient_state = self.gradient_state

        def backward(loss: torch.Tensor, **kwargs: Any) -> None:
            engine = self.engine
            if engine is None:
                self.require_engine("accelerator.backward()")
            sync = True if gradient_state is None else gradient_state.sync_gradients
            engine.set_gradient_accumulation_boundary(sync)
            engine.backward(loss, **kwargs)

        return backward

    def step(self, optimizer: Any) -> bool:
        """One update by the engine; returns True when fp16 loss scaling skipped it."""
        engine = getattr(optimizer, "engine", None)
        if engine is None:
            raise ConfigurationError(
                f"optimizer {optimizer!r} was not prepared by the deepspeed backend; pass it to "
                "accelerator.prepare together with its model"
            )
        pending = self._pending_norms
        before = self._norm_before_step(engine) if pending else None
        engine.step()
        if pending:
            value = before if before is not None else engine.get_global_grad_norm()
            if value is not None:
                for norm in pending:
                    norm._set(value)
            pending.clear()
        return not engine.was_step_applied()

    def _norm_before_step(self, engine: Any) -> float | None:
        """Stage 0 in fp32 clips ``p.grad`` without recording the norm: compute it here."""
        if engine.zero_optimization() or engine.fp16_enabled() or engine.bfloat16_enabled():
            return None
        grads = [p.grad for p in engine.module.parameters() if p.grad is not None]
        if not grads:
            return 0.0
        return float(torch.nn.utils.get_total_norm(grads, 2.0))

    def clip_function(self) -> Callable[..., DeepSpeedGradNorm]:
        def clip(parameters: Any, max_norm: float, norm_type: float = 2.0) -> DeepSpeedGradNorm:
            engine = self.require_engine("accelerator.clip_grad_norm_()")
            if float(norm_type) != 2.0:
                raise ConfigurationError(
                    f"DeepSpeed clips the L2 norm of the gradients only, not norm_type="
                    f"{norm_type}; call clip_grad_norm_(parameters, max_norm) with norm_type=2"
                )
            self.set_clipping(engine, float(max_norm))
            norm = DeepSpeedGradNorm()
            self._pending_norms.append(norm)
            return norm

        return clip

    def set_clipping(self, engine: Any, max_norm: float) -> None:
        """The engine clips in its step: make its ``gradient_clipping`` ``max_norm``.

        A value from the config or ``backend_options`` (or an earlier call) must agree: a
        different one would be silently ignored by the engine otherwise.
        """
        current = float(engine.gradient_clipping())
        if math.isclose(current, max_norm, rel_tol=1e-12, abs_tol=0.0):
            return
        fixed_by = self.clipping_source
        if fixed_by is None and self.resolved is not None and self.resolved.clipping_fixed:
            fixed_by = f"the {self.resolved.name} (gradient_clipping) or backend_options"
        if fixed_by is not None:
            raise ConfigurationError(
                f"clip_grad_norm_(max_norm={max_norm}) contradicts gradient_clipping={current} "
                f"set by {fixed_by}; DeepSpeed clips once per step with one value: use the same "
                'max_norm, or leave gradient_clipping "auto" in the config'
            )
        engine._config.gradient_clipping = max_norm
        inner = engine.optimizer
        if hasattr(inner, "clip_grad"):
            inner.clip_grad = max_norm
        self.clipping_source = f"an earlier clip_grad_norm_(max_norm={max_norm}) call"


def cast_at_the_boundary(module: torch.nn.Module, bf16: bool) -> None:
    """Floating inputs to the module's 16-bit dtype, floating outputs back to fp32.

    DeepSpeed runs the module itself in fp16/bf16 (not under autocast), so fp32 inputs would
    fail in the first layer; with these hooks a script written for fp32 runs unchanged, and its
    loss sees fp32 outputs as under the core's autocast.
    """
    from accelerate_core.ops import apply_to_tensors, convert_to_fp32

    dtype = torch.bfloat16 if bf16 else torch.float16

    def cast(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(dtype) if tensor.is_floating_point() else tensor

    def before(_: torch.nn.Module, args: Any, kwargs: Any) -> tuple[Any, Any]:
        return apply_to_tensors(cast, args), apply_to_tensors(cast, kwargs)

    def after(_: torch.nn.Module, args: Any, output: Any) -> Any:
        return convert_to_fp32(output)

    module.register_forward_pre_hook(before, with_kwargs=True)
    module.register_forward_hook(after)


def clip_by_value(parameters: Any, clip_value: float) -> None:
    """The ``clip_grad_value_`` of this backend: DeepSpeed has none, so say what to use."""
    raise ConfigurationError(
        "DeepSpeed cannot clip gradients by value (the engine owns the possibly partitioned "
        "gradients and clips by global norm only); use accelerator.clip_grad_norm_(params, "
        "max_norm) or gradient_clipping in the DeepSpeed config"
    )


def no_sync(model: torch.nn.Module) -> contextlib.AbstractContextManager:
    """Nothing to do: ``backward`` tells the engine when a micro-step ends a cycle."""
    return contextlib.nullcontext()


def _model_of(optimizer: Any, models: list[torch.nn.Module]) -> int:
    """Index of the model whose parameters ``optimizer`` updates."""
    if not models:
        raise ConfigurationError(
            "DeepSpeed builds one engine from a model and its optimizer: pass the model to the "
            "same prepare() call as the optimizer"
        )
    if len(models) == 1:
        return 0
    if isinstance(optimizer, DummyOptim):
        entries = optimizer.params
    else:
        entries = list(getattr(optimizer, "param_groups", []))
    owned: set[int] = set()
    for entry in entries:
        params = entry["params"] if isinstance(entry, dict) else [entry]
        owned.update(id(p) for p in params)
    matches = [i for i, m in enumerate(models) if any(id(p) in owned for p in m.parameters())]
    if len(matches) != 1:
        raise ConfigurationError(
            f"cannot tell which of the {len(models)} models of this prepare() call the optimizer "
            "trains; prepare the trained model with its optimizer, and the others separately"
        )
    return matches[0]


def micro_batch_size(loader: Any, num_processes: int) -> int | None:
    """Samples one process gets per batch from a prepared dataloader (None when unknown)."""
    base = getattr(loader, "base_dataloader", loader)
    size = getattr(base, "batch_size", None)
    sampler = getattr(base, "batch_sampler", None)
    split = bool(getattr(loader, "split_batches", False))
    if size is None and sampler is not None:
        size = getattr(sampler, "batch_size", None)
        split = split or bool(getattr(sampler, "split_batches", False))
    if not isinstance(size, int):
        return None
    return size // num_processes if split else size


def ensure_process_group(state: Any) -> None:
    """DeepSpeed needs a process group even on one process: start a one-rank group then."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if state.num_processes > 1:
        raise ConfigurationError(
            "the process group of this multi-process run is not initialised; create the "
            "Accelerator before prepare()"
        )
    # An in-process store: nothing to rendezvous with, and no port that a launcher's agent
    # store (torchrun sets TORCHELASTIC_USE_AGENT_STORE) would be asked for instead.
    dist.init_process_group(
        backend=state.device_spec.dist_backend, store=dist.HashStore(), rank=0, world_size=1
    )


# --------------------------------------------------------------------------- per Accelerator

_RUNTIMES: dict[int, DeepSpeedRuntime] = {}


def runtime_for(context: Any) -> DeepSpeedRuntime:
    """The runtime of the Accelerator that owns ``context`` (created on first use)."""
    key = id(context)
    runtime = _RUNTIMES.get(key)
    if runtime is None:
        runtime = _RUNTIMES[key] = DeepSpeedRuntime(context)
        weakref.finalize(context, _RUNTIMES.pop, key, None)
    return runtime


def resolved_config(model: Any) -> dict[str, Any]:
    """The DeepSpeed config a prepared model's engine was built with (``"auto"`` resolved)."""
    config = getattr(model, CONFIG_ATTRIBUTE, None)
    if config is None:
        raise ConfigurationError(
            f"{type(model).__name__} was not prepared by the deepspeed backend; pass the model "
            "returned by accelerator.prepare"
        )
    return config
