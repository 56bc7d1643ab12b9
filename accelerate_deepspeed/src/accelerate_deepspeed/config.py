"""From the user's DeepSpeed config and options to the dict given to ``deepspeed.initialize``.

Pure Python (no DeepSpeed import), so it is tested without processes. Rules:

* ``"auto"`` (or a missing entry) is filled from what the library knows: the micro batch size
  from the prepared dataloaders, ``gradient_accumulation_steps`` from the ``Accelerator``,
  ``fp16``/``bf16`` from ``mixed_precision``, clipping from ``gradient_clipping`` (option) or the
  first ``clip_grad_norm_``, optimizer/scheduler hyper-parameters from ``DummyOptim`` /
  ``DummyScheduler``, ``train_batch_size`` from those.
* A value set in two places with different values is a ``ConfigurationError`` naming both.
* Communication bucket sizes left ``"auto"`` (and, when no config file is given, unset) are
  DeepSpeed's defaults capped at the model's parameter count; other tuning knobs left ``"auto"``
  (persistence thresholds, ...) are removed so DeepSpeed's defaults apply. Any other ``"auto"``
  left is an error naming the entry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from accelerate_core import ConfigurationError

from .options import DEFAULT_ZERO_STAGE, DeepSpeedOptions

AUTO = "auto"
_MISSING = object()
# Communication buckets: "auto" is DeepSpeed's default capped at the model's size, so a small
# model does not get a 1 GB bucket (ZeRO-3 allocates reduce_bucket_size elements up front).
BUCKET_KEYS = {
    "zero_optimization.reduce_bucket_size": 500_000_000,
    "zero_optimization.allgather_bucket_size": 500_000_000,
    "zero_optimization.stage3_prefetch_bucket_size": 50_000_000,
}
# "auto" here means "DeepSpeed's default": the entry is removed.
TUNING_KEYS = (
    "zero_optimization.stage3_param_persistence_threshold",
    "zero_optimization.stage3_max_live_parameters",
    "zero_optimization.stage3_max_reuse_distance",
    "zero_optimization.sub_group_size",
)
PRECISIONS = ("no", "fp16", "bf16")


@dataclass
class Knowledge:
    """What the library knows at ``prepare`` that a DeepSpeed config may leave ``"auto"``.

    Attributes:
        mixed_precision: the Accelerator's ``mixed_precision``.
        gradient_accumulation_steps: the Accelerator's.
        num_processes: the data-parallel world size.
        micro_batch_sizes: samples per process per batch of each prepared dataloader.
        client_optimizer_lr: learning rate of a torch optimizer passed to ``prepare``.
        has_client_optimizer / has_client_scheduler: a torch optimizer / scheduler was passed.
        dummy_optimizer / dummy_scheduler: the placeholders passed, if any.
        model_parameters: trainable parameters of the model (caps the communication buckets).
    """

    mixed_precision: str = "no"
    gradient_accumulation_steps: int = 1
    num_processes: int = 1
    micro_batch_sizes: list[int] = field(default_factory=list)
    client_optimizer_lr: float | None = None
    has_client_optimizer: bool = False
    has_client_scheduler: bool = False
    dummy_optimizer: Any = None
    dummy_scheduler: Any = None
    model_parameters: int = 0


@dataclass
class ResolvedConfig:
    """The config for ``deepspeed.initialize`` and facts the hooks need about it.

    Attributes:
        config: the resolved dict (no ``"auto"`` left).
        clipping_fixed: True when ``gradient_clipping`` came from the config or an option; then
            ``clip_grad_norm_`` must agree with it. Otherwise its first call sets it.
        name: how error messages call the user's config.
    """

    config: dict[str, Any]
    clipping_fixed: bool
    name: str

    @property
    def zero_stage(self) -> int:
        return int(_get(self.config, "zero_optimization.stage", 0) or 0)


def _get(config: dict[str, Any], path: str, default: Any = _MISSING) -> Any:
    node: Any = config
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


def _set(config: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = config
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[last] = value


def _delete(config: dict[str, Any], path: str) -> None:
    *parents, last = path.split(".")
    node = _get(config, ".".join(parents)) if parents else config
    if isinstance(node, dict):
        node.pop(last, None)


def _auto_paths(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        found = []
        for key, value in node.items():
            found += _auto_paths(value, f"{prefix}{key}.")
        return found
    return [prefix[:-1]] if node == AUTO else []


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


class _Resolver:
    def __init__(self, config: dict[str, Any], name: str) -> None:
        self.config = config
        self.name = name

    def is_open(self, path: str) -> bool:
        """True when the user left ``path`` to the library (missing or ``"auto"``)."""
        return _get(self.config, path) in (_MISSING, AUTO)

    def put(self, path: str, value: Any, source: str) -> None:
        """Fill ``path`` with ``value``; a different value already there is an error."""
        current = _get(self.config, path)
        if current is _MISSING or current == AUTO:
            _set(self.config, path, value)
        elif not _same(current, value):
            raise ConfigurationError(
                f"{path} is {json.dumps(current)} in the {self.name} but {json.dumps(value)} "
                f'from {source}; set it in one place (or write "auto" in the config to take '
                "the library's value)"
            )


def resolve_config(options: DeepSpeedOptions, knowledge: Knowledge) -> ResolvedConfig:
    """The DeepSpeed config for one engine (see the module docstring for the rules)."""
    user, name = options.load_config()
    config = json.loads(json.dumps(user))  # never modify the user's dict
    r = _Resolver(config, name)
    _zero_options(r, options, has_user_config=options.config is not None)
    r.put(
        "gradient_accumulation_steps",
        knowledge.gradient_accumulation_steps,
        f"Accelerator(gradient_accumulation_steps={knowledge.gradient_accumulation_steps})",
    )
    _precision(r, knowledge.mixed_precision)
    _batch_sizes(r, knowledge)
    if options.gradient_clipping is not None:
        source = "backend_options['gradient_clipping'] (--deepspeed-gradient-clipping)"
        r.put("gradient_clipping", float(options.gradient_clipping), source)
    clipping_fixed = not r.is_open("gradient_clipping")
    if not clipping_fixed:
        _set(config, "gradient_clipping", 0.0)  # clip_grad_norm_ sets it on its first call
    _optimizer(r, knowledge)
    _scheduler(r, knowledge)
    if knowledge.has_client_optimizer:
        config.setdefault("zero_allow_untested_optimizer", True)
    _buckets(r, knowledge.model_parameters, has_user_config=options.config is not None)
    for path in TUNING_KEYS:
        if _get(config, path) == AUTO:
            _delete(config, path)
    left = _auto_paths(config)
    if left:
        raise ConfigurationError(
            f'{", ".join(left)} {"is" if len(left) == 1 else "are"} "auto" in the {name} but '
            "accelerate-deepspeed knows no value for it; write the value into the config"
        )
    resolved = ResolvedConfig(config, clipping_fixed, name)
    _check_offload(resolved)
    return resolved


def _zero_options(r: _Resolver, options: DeepSpeedOptions, has_user_config: bool) -> None:
    source = "backend_options['{key}'] (accel launch --{flag})"
    if options.zero_stage is not None:
        named = source.format(key="zero_stage", flag="zero-stage")
        r.put("zero_optimization.stage", options.zero_stage, named)
    elif not has_user_config:
        _set(r.config, "zero_optimization.stage", DEFAULT_ZERO_STAGE)
    for what in ("optimizer", "param"):
        device = getattr(options, f"offload_{what}_device")
        path = getattr(options, f"offload_{what}_nvme_path")
        flag = f"deepspeed-offload-{what}"
        prefix = f"zero_optimization.offload_{what}"
        if device is not None:
            named = source.format(key=f"offload_{what}_device", flag=flag)
            r.put(f"{prefix}.device", device, named)
        if path is not None:
            named = source.format(key=f"offload_{what}_nvme_path", flag=f"{flag}-nvme-path")
            r.put(f"{prefix}.nvme_path", str(path), named)


def _buckets(r: _Resolver, model_parameters: int, has_user_config: bool) -> None:
    """Bucket sizes left "auto" (or not set, when the library writes the whole config)."""
    stage = int(_get(r.config, "zero_optimization.stage", 0) or 0)
    for path, default in BUCKET_KEYS.items():
        current = _get(r.config, path)
        wanted = current == AUTO or (current is _MISSING and not has_user_config and stage > 0)
        if not wanted or (path.endswith("stage3_prefetch_bucket_size") and stage != 3):
            if current == AUTO:
                _delete(r.config, path)
            continue
        if model_parameters > 0:  # a multiple of 512: DeepSpeed aligns buckets for NCCL
            _set(r.config, path, min(default, -(-model_parameters // 512) * 512))
        else:
            _delete(r.config, path)


def _precision(r: _Resolver, mixed_precision: str) -> None:
    # fp8 (accelerate-fp8) converts Linear layers before the engine is built; the engine then
    # runs in fp32 around those fp8 matmuls (no bf16/fp16 section of its own).
    if mixed_precision not in (*PRECISIONS, "fp8"):
        raise ConfigurationError(
            f"backend 'deepspeed' runs the precision itself and supports mixed_precision "
            f"{', '.join(PRECISIONS)} and fp8, not {mixed_precision!r}; pick one of those"
        )
    source = f"Accelerator(mixed_precision={mixed_precision!r})"
    r.put("fp16.enabled", mixed_precision == "fp16", source)
    r.put("bf16.enabled", mixed_precision == "bf16", source)


def _batch_sizes(r: _Resolver, knowledge: Knowledge) -> None:
    sizes = sorted(set(knowledge.micro_batch_sizes))
    path = "train_micro_batch_size_per_gpu"
    if r.is_open(path):
        if not sizes:
            raise ConfigurationError(
                f"{path} is not set in the {r.name} and no prepared dataloader tells it; pass "
                "the training DataLoader to the same prepare() call as the model (or prepare it "
                f"first), or set {path} in the DeepSpeed config"
            )
        r.put(path, sizes[0], "the prepared dataloader")
    elif len(sizes) == 1:
        r.put(path, sizes[0], f"the prepared dataloader ({sizes[0]} samples per process)")
    micro = _get(r.config, path)
    steps = _get(r.config, "gradient_accumulation_steps")
    r.put(
        "train_batch_size",
        micro * steps * knowledge.num_processes,
        f"{path} x gradient_accumulation_steps x {knowledge.num_processes} processes",
    )


def _optimizer(r: _Resolver, knowledge: Knowledge) -> None:
    section = _get(r.config, "optimizer", None)
    dummy = knowledge.dummy_optimizer
    if section is not None and knowledge.has_client_optimizer:
        raise ConfigurationError(
            f"the {r.name} defines an optimizer ({section.get('type')}) and prepare() got a "
            "torch optimizer too; pass accelerate_deepspeed.DummyOptim(model.parameters()) "
            'to use the config\'s, or remove its "optimizer" section'
        )
    if dummy is not None and section is None:
        raise ConfigurationError(
            f"DummyOptim stands for the optimizer of the DeepSpeed config, but the {r.name} "
            'has no "optimizer" section; add one or pass a torch optimizer'
        )
    if dummy is not None:
        for key, value in dummy.hyperparameters().items():
            r.put(f"optimizer.params.{key}", value, f"DummyOptim({key}={value!r})")
        for path in _auto_paths(section, "optimizer."):
            raise ConfigurationError(
                f'{path} is "auto" in the {r.name}; give it to DummyOptim '
                f"(DummyOptim(params, {path.rsplit('.', 1)[-1]}=...)) or write it in the config"
            )


def _scheduler(r: _Resolver, knowledge: Knowledge) -> None:
    section = _get(r.config, "scheduler", None)
    dummy = knowledge.dummy_scheduler
    if section is not None and knowledge.has_client_scheduler:
        raise ConfigurationError(
            f"the {r.name} defines a scheduler ({section.get('type')}) and prepare() got a "
            "torch scheduler too; pass accelerate_deepspeed.DummyScheduler(optimizer) to use "
            'the config\'s, or remove its "scheduler" section'
        )
    if dummy is not None and section is None and dummy.lr_scheduler_callable is None:
        raise ConfigurationError(
            f"DummyScheduler stands for the scheduler of the DeepSpeed config, but the {r.name} "
            'has no "scheduler" section; add one, give DummyScheduler an '
            "lr_scheduler_callable, or pass a torch scheduler"
        )
    if section is None:
        return
    if dummy is not None:
        for key, value in dummy.hyperparameters().items():
            r.put(f"scheduler.params.{key}", value, f"DummyScheduler({key}={value!r})")
    lr = _get(r.config, "optimizer.params.lr", None)
    lr = knowledge.client_optimizer_lr if lr is None else lr
    for key in ("warmup_max_lr", "max_lr", "cycle_max_lr"):
        if _get(r.config, f"scheduler.params.{key}") == AUTO and lr not in (None, AUTO):
            _set(r.config, f"scheduler.params.{key}", lr)
    if _get(r.config, "scheduler.params.warmup_min_lr") == AUTO:
        _set(r.config, "scheduler.params.warmup_min_lr", 0.0)
    for path in _auto_paths(_get(r.config, "scheduler"), "scheduler."):
        raise ConfigurationError(
            f'{path} is "auto" in the {r.name}; give it to DummyScheduler '
            f"(DummyScheduler(optimizer, {path.rsplit('.', 1)[-1]}=...)) or write it in the config"
        )


def _check_offload(resolved: ResolvedConfig) -> None:
    config = resolved.config
    stage = resolved.zero_stage
    param = _get(config, "zero_optimization.offload_param.device", "none")
    optim = _get(config, "zero_optimization.offload_optimizer.device", "none")
    if param not in (None, "none") and stage != 3:
        raise ConfigurationError(
            f"parameter offload ({param}) needs ZeRO stage 3, the {resolved.name} resolves to "
            f"stage {stage}; use --zero-stage 3 or drop the parameter offload"
        )
    if optim not in (None, "none") and stage == 0:
        raise ConfigurationError(
            f"optimizer offload ({optim}) needs ZeRO stage 1, 2 or 3; the {resolved.name} "
            "resolves to stage 0"
        )


def format_config(config: dict[str, Any] | ResolvedConfig) -> str:
    """The resolved config as indented JSON (what ``print_config`` prints)."""
    if isinstance(config, ResolvedConfig):
        config = config.config
    return json.dumps(config, indent=2, sort_keys=True, default=str)
