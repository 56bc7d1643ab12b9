"""Hugging Face's ``Accelerator`` arguments, translated once into this core's settings.

``dataloader_config``, ``gradient_accumulation_plugin``, ``kwargs_handlers``, ``fsdp_plugin``,
``deepspeed_plugin(s)``, ``dynamo_backend``/``dynamo_plugin`` and ``rng_types`` are resolved here,
at ``Accelerator`` creation, into plain values: the backend to select, the process-group timeout,
backend and precision options, dataloader and accumulation settings. Backend options from HF
objects are checked by the owning plugin like any other option (``accelerate_core_validate_
options``); objects meant for a backend that was not selected are ignored, as HF ignores them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from .errors import ConfigurationError
from .kwargs_handlers import KwargsHandler
from .utils.dataclasses import (
    DataLoaderConfiguration,
    DistributedDataParallelKwargs,
    GradientAccumulationPlugin,
    InitProcessGroupKwargs,
    ProfileKwargs,
    RNGType,
    TorchDynamoPlugin,
)

BACKEND_ATTRIBUTE = "__accelerate_core_backend__"


@dataclass
class HFArguments:
    """The resolved settings (see the module docstring)."""

    backend: str | None = None
    timeout: timedelta | None = None
    gradient_accumulation_steps: int | None = None
    accumulation: GradientAccumulationPlugin = field(default_factory=GradientAccumulationPlugin)
    dataloader: DataLoaderConfiguration = field(default_factory=DataLoaderConfiguration)
    backend_objects: list[Any] = field(default_factory=list)
    precision_handlers: list[KwargsHandler] = field(default_factory=list)
    profile: ProfileKwargs | None = None
    dynamo: TorchDynamoPlugin = field(default_factory=TorchDynamoPlugin)
    rng_types: list[str] = field(default_factory=lambda: ["generator"])
    deepspeed_plugin: Any = None

    def backend_options(self, backend: str, explicit: Mapping[str, Any] | None) -> dict[str, Any]:
        """Options from the HF objects meant for ``backend``, under the explicit ones."""
        options: dict[str, Any] = {}
        for obj in self.backend_objects:
            if _target(obj) == backend:
                options.update(obj.backend_options())
        options.update(explicit or {})
        return options

    def precision_options(self, explicit: Mapping[str, Any] | None) -> dict[str, Any]:
        """``precision_options`` with the GradScalerKwargs/AutocastKwargs fields merged in."""
        options = dict(explicit or {})
        for handler in self.precision_handlers:
            key = handler.option_key
            options[key] = {**options.get(key, {}), **handler.to_kwargs()}
        return options


def _target(obj: Any) -> str | None:
    return getattr(obj, BACKEND_ATTRIBUTE, None) or getattr(obj, "target_backend", None)


def _choose_backend(backend: str | None, wanted: str, argument: str) -> str:
    if backend is not None and backend != wanted:
        raise ConfigurationError(
            f"{argument} selects the '{wanted}' backend but backend={backend!r} was given; "
            "pass only one of them"
        )
    return wanted


def _backend_object(obj: Any, wanted: str, argument: str, class_name: str) -> Any:
    if _target(obj) != wanted or not callable(getattr(obj, "backend_options", None)):
        raise TypeError(f"`{argument}` must be a {class_name} object, got {type(obj).__name__}")
    return obj


def _deepspeed(deepspeed_plugin: Any, deepspeed_plugins: Any) -> Any:
    if deepspeed_plugin is not None and deepspeed_plugins is not None:
        raise ConfigurationError(
            "You cannot pass in both `deepspeed_plugins` and `deepspeed_plugin`."
        )
    plugin = deepspeed_plugin if deepspeed_plugin is not None else deepspeed_plugins
    if isinstance(plugin, Mapping):
        if len(plugin) != 1:
            raise ConfigurationError(
                f"several DeepSpeed plugins ({', '.join(map(str, plugin))}) are not supported: "
                "one Accelerator drives one DeepSpeed configuration; pass one DeepSpeedPlugin"
            )
        plugin = next(iter(plugin.values()))
    if plugin is None:
        return None
    return _backend_object(plugin, "deepspeed", "deepspeed_plugin", "DeepSpeedPlugin")


def _handlers(handlers: Sequence[Any] | None, resolved: HFArguments) -> None:
    seen: set[type] = set()
    for handler in handlers or ():
        if not isinstance(handler, KwargsHandler):
            raise ConfigurationError(
                f"kwargs_handlers takes KwargsHandler objects (GradScalerKwargs, AutocastKwargs, "
                f"DistributedDataParallelKwargs, InitProcessGroupKwargs, ProfileKwargs), got "
                f"{handler!r}"
            )
        if type(handler) in seen:
            raise ConfigurationError(f"You can only pass one {type(handler)} in `kwargs_handlers`.")
        seen.add(type(handler))
        if isinstance(handler, InitProcessGroupKwargs):
            _process_group(handler, resolved)
        elif isinstance(handler, ProfileKwargs):
            resolved.profile = handler
        elif isinstance(handler, DistributedDataParallelKwargs) or _target(handler):
            resolved.backend_objects.append(handler)
        elif handler.option_key:
            resolved.precision_handlers.append(handler)
        else:
            raise ConfigurationError(
                f"{type(handler).__name__} is not supported in kwargs_handlers here; see the "
                "compatibility table (docs/compatibility.md)"
            )


def _process_group(handler: InitProcessGroupKwargs, resolved: HFArguments) -> None:
    given = handler.to_kwargs()
    if "init_method" in given:
        raise ConfigurationError(
            "InitProcessGroupKwargs(init_method=...) is not supported: processes rendezvous "
            "where the launcher says (MASTER_ADDR/MASTER_PORT from accel launch or torchrun)"
        )
    if "backend" in given:
        raise ConfigurationError(
            f"InitProcessGroupKwargs(backend={handler.backend!r}) is not supported: the "
            "process-group backend is the device's (gloo on CPU, nccl on CUDA); remove it"
        )
    if handler.timeout is not None:
        if resolved.timeout is not None and resolved.timeout != handler.timeout:
            raise ConfigurationError(
                f"Accelerator(timeout={resolved.timeout}) and InitProcessGroupKwargs(timeout="
                f"{handler.timeout}) disagree; pass one of them"
            )
        resolved.timeout = handler.timeout


def _dataloader(
    config: DataLoaderConfiguration | None,
    split_batches: bool,
    even_batches: bool,
    dispatch_batches: bool | None,
) -> DataLoaderConfiguration:
    if config is None:
        return DataLoaderConfiguration(split_batches, dispatch_batches, even_batches)
    if not isinstance(config, DataLoaderConfiguration):
        raise TypeError(f"dataloader_config must be a DataLoaderConfiguration, got {config!r}")
    defaults = DataLoaderConfiguration()
    for name, value in (("split_batches", split_batches), ("even_batches", even_batches),
                        ("dispatch_batches", dispatch_batches)):  # fmt: skip
        if value != getattr(defaults, name) and value != getattr(config, name):
            raise ConfigurationError(
                f"Accelerator({name}={value!r}) contradicts dataloader_config.{name}="
                f"{getattr(config, name)!r}; set it in one place"
            )
    return config


def _accumulation(
    steps: int | None, plugin: GradientAccumulationPlugin | None, deepspeed: Any
) -> tuple[int | None, GradientAccumulationPlugin]:
    if plugin is not None:
        if not isinstance(plugin, GradientAccumulationPlugin):
            raise TypeError(
                f"gradient_accumulation_plugin must be a GradientAccumulationPlugin, got {plugin!r}"
            )
        if steps not in (None, 1):
            raise ConfigurationError(
                "You can only pass one of `gradient_accumulation_steps` and "
                "`gradient_accumulation_plugin`. Please only pass in the created "
                "`GradientAccumulationPlugin` object."
            )
        return plugin.num_steps, plugin
    if steps is None and deepspeed is not None:
        steps = deepspeed.accumulation_steps()
    return steps, GradientAccumulationPlugin(num_steps=steps)


def _dynamo(backend: Any, plugin: TorchDynamoPlugin | None) -> TorchDynamoPlugin:
    if plugin is not None and backend is not None:
        raise ConfigurationError(
            "You cannot pass in both `dynamo_plugin` and `dynamo_backend`, please only pass in one."
        )
    if backend is not None:
        return TorchDynamoPlugin(backend=backend)
    if plugin is not None and not isinstance(plugin, TorchDynamoPlugin):
        raise TypeError(f"dynamo_plugin must be a TorchDynamoPlugin, got {plugin!r}")
    return plugin or TorchDynamoPlugin()


def _rng_types(rng_types: Sequence[Any] | None) -> list[str]:
    names = []
    for value in rng_types if rng_types is not None else ["generator"]:
        name = value.value if isinstance(value, RNGType) else str(value)
        if name not in RNGType:
            raise ConfigurationError(
                f"unknown rng_types entry {value!r}; valid: {', '.join(RNGType.list())}"
            )
        names.append(name)
    return names


def resolve_arguments(
    *,
    backend: str | None,
    timeout: timedelta | None,
    gradient_accumulation_steps: int | None,
    split_batches: bool,
    even_batches: bool,
    dispatch_batches: bool | None,
    dataloader_config: DataLoaderConfiguration | None = None,
    gradient_accumulation_plugin: GradientAccumulationPlugin | None = None,
    kwargs_handlers: Sequence[Any] | None = None,
    fsdp_plugin: Any = None,
    deepspeed_plugin: Any = None,
    deepspeed_plugins: Any = None,
    dynamo_backend: Any = None,
    dynamo_plugin: TorchDynamoPlugin | None = None,
    rng_types: Sequence[Any] | None = None,
) -> HFArguments:
    """Everything HF-shaped about the ``Accelerator``'s arguments, resolved (see above)."""
    resolved = HFArguments(backend=backend, timeout=timeout)
    _handlers(kwargs_handlers, resolved)
    if fsdp_plugin is not None:
        _backend_object(fsdp_plugin, "fsdp", "fsdp_plugin", "FullyShardedDataParallelPlugin")
        resolved.backend = _choose_backend(resolved.backend, "fsdp", "fsdp_plugin")
        resolved.backend_objects.append(fsdp_plugin)
    deepspeed = _deepspeed(deepspeed_plugin, deepspeed_plugins)
    if deepspeed is not None:
        if fsdp_plugin is not None:
            raise ConfigurationError("pass either fsdp_plugin or deepspeed_plugin, not both")
        resolved.backend = _choose_backend(resolved.backend, "deepspeed", "deepspeed_plugin")
        resolved.backend_objects.append(deepspeed)
        resolved.deepspeed_plugin = deepspeed
    steps, resolved.accumulation = _accumulation(
        gradient_accumulation_steps, gradient_accumulation_plugin, deepspeed
    )
    resolved.gradient_accumulation_steps = steps
    resolved.dataloader = _dataloader(dataloader_config, split_batches, even_batches,
                                      dispatch_batches)  # fmt: skip
    resolved.dynamo = _dynamo(dynamo_backend, dynamo_plugin)
    resolved.rng_types = _rng_types(rng_types)
    return resolved
