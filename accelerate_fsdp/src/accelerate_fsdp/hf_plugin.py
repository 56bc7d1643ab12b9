"""Hugging Face's ``FullyShardedDataParallelPlugin``, mapped onto this backend's options.

``Accelerator(fsdp_plugin=FullyShardedDataParallelPlugin(...))`` selects ``fsdp`` and passes
``backend_options()`` on, where ``FSDPOptions`` checks them like any other option. Only FSDP2
(``fully_shard``) exists here: ``fsdp_version=1`` runs FSDP2 as well (same sharding and numbers).
FSDP1 tuning knobs without an FSDP2 counterpart (``backward_prefetch``, ``forward_prefetch``,
``limit_all_gathers``, ``use_orig_params``, ``sync_module_states``) are accepted and have no
effect; choices FSDP2 cannot honour are errors naming the alternative.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from accelerate_core import ConfigurationError

NAME = "fsdp"
_RESHARD = {"FULL_SHARD": True, "SHARD_GRAD_OP": False}
_STATE_DICT = {"FULL_STATE_DICT": "full", "SHARDED_STATE_DICT": "sharded"}
_WRAP_POLICIES = ("transformer_based_wrap", "size_based_wrap", "no_wrap")


def _name(value: Any) -> str:
    """An enum member (torch's ShardingStrategy...), its int value or a string -> upper name."""
    name = getattr(value, "name", value)
    if isinstance(name, int) and not isinstance(name, bool):
        return ("FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD")[name - 1]
    return str(name).upper()


@dataclass
class FullyShardedDataParallelPlugin:
    """HF's FSDP configuration (its field names and defaults; ``FSDP_*`` variables too)."""

    fsdp_version: int | None = None
    sharding_strategy: Any = None
    reshard_after_forward: Any = None
    backward_prefetch: Any = None
    mixed_precision_policy: Any = None
    auto_wrap_policy: Callable | str | None = None
    cpu_offload: Any = None
    ignored_modules: Iterable[Any] | str | None = None
    state_dict_type: Any = None
    state_dict_config: Any = None
    optim_state_dict_config: Any = None
    limit_all_gathers: bool = True
    use_orig_params: bool | None = None
    param_init_fn: Callable | None = None
    sync_module_states: bool | None = None
    forward_prefetch: bool | None = None
    activation_checkpointing: bool | None = None
    cpu_ram_efficient_loading: bool | None = None
    transformer_cls_names_to_wrap: list[str] | None = None
    min_num_params: int | None = None

    __accelerate_core_backend__ = NAME

    def __post_init__(self) -> None:
        env = os.environ
        if self.fsdp_version is None:
            self.fsdp_version = int(env.get("FSDP_VERSION", "1"))
        if self.reshard_after_forward is None and self.sharding_strategy is None:
            self.reshard_after_forward = env.get("FSDP_RESHARD_AFTER_FORWARD") or None
        if self.state_dict_type is None:
            self.state_dict_type = env.get("FSDP_STATE_DICT_TYPE") or None
        if self.auto_wrap_policy is None:
            self.auto_wrap_policy = env.get("FSDP_AUTO_WRAP_POLICY") or None
        if self.transformer_cls_names_to_wrap is None and env.get("FSDP_TRANSFORMER_CLS_TO_WRAP"):
            self.transformer_cls_names_to_wrap = env["FSDP_TRANSFORMER_CLS_TO_WRAP"].split(",")
        if self.min_num_params is None and env.get("FSDP_MIN_NUM_PARAMS"):
            self.min_num_params = int(env["FSDP_MIN_NUM_PARAMS"])
        for field_name, variable in (
            ("activation_checkpointing", "FSDP_ACTIVATION_CHECKPOINTING"),
            ("cpu_ram_efficient_loading", "FSDP_CPU_RAM_EFFICIENT_LOADING"),
        ):
            if getattr(self, field_name) is None and variable in env:
                setattr(self, field_name, env[variable].lower() in {"1", "true", "yes"})
        if self.fsdp_version not in (1, 2):
            raise ConfigurationError(f"fsdp_version must be 1 or 2, got {self.fsdp_version!r}")

    def backend_options(self) -> dict[str, Any]:
        """These settings as ``fsdp`` backend options (checked by ``FSDPOptions``)."""
        options: dict[str, Any] = {}
        reshard = self._reshard_after_forward()
        if reshard is not None:
            options["reshard_after_forward"] = reshard
        options.update(self._wrapping())
        if self.cpu_offload:
            offload = getattr(self.cpu_offload, "offload_params", True)
            if offload:
                options["cpu_offload"] = True
        if self.activation_checkpointing:
            options["activation_checkpointing"] = True
        if self.cpu_ram_efficient_loading:
            options["cpu_ram_efficient_loading"] = True
        options.update(self._dtypes())
        if self.state_dict_type is not None:
            name = _name(self.state_dict_type)
            if name not in _STATE_DICT:
                raise ConfigurationError(
                    f"FullyShardedDataParallelPlugin(state_dict_type={self.state_dict_type!r}) "
                    f"is not supported by FSDP2; use FULL_STATE_DICT or SHARDED_STATE_DICT"
                )
            options["state_dict_type"] = _STATE_DICT[name]
        if self.ignored_modules:
            raise ConfigurationError(
                "FullyShardedDataParallelPlugin(ignored_modules=...) is not supported; freeze "
                "those parameters (requires_grad=False) or keep them out of the prepared model"
            )
        if self.param_init_fn is not None:
            raise ConfigurationError(
                "FullyShardedDataParallelPlugin(param_init_fn=...) is not supported; use "
                "cpu_ram_efficient_loading=True to build the model on the meta device on every "
                "rank but the first"
            )
        return options

    def _reshard_after_forward(self) -> bool | int | None:
        value = self.reshard_after_forward
        if value is None and self.sharding_strategy is not None:
            value = self.sharding_strategy
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        name = _name(value)
        if name in _RESHARD:
            return _RESHARD[name]
        if name == "NO_SHARD":
            raise ConfigurationError(
                "FullyShardedDataParallelPlugin(sharding_strategy='NO_SHARD') replicates the "
                "model: use the ddp backend (Accelerator(backend='ddp'))"
            )
        raise ConfigurationError(
            f"FullyShardedDataParallelPlugin sharding {name!r} is not supported; hybrid "
            "sharding is Accelerator(parallelism_config=ParallelismConfig(dp_replicate_size=..., "
            "dp_shard_size=...))"
        )

    def _wrapping(self) -> dict[str, Any]:
        policy = self.auto_wrap_policy
        if policy is None:
            return {}
        if callable(policy):
            raise ConfigurationError(
                "FullyShardedDataParallelPlugin(auto_wrap_policy=<callable>) is not supported; "
                "pass auto_wrap_policy='transformer_based_wrap' with "
                "transformer_cls_names_to_wrap=[...] or 'size_based_wrap' with min_num_params"
            )
        policy = str(policy).lower()
        if policy not in _WRAP_POLICIES:
            raise ConfigurationError(
                f"unknown auto_wrap_policy {self.auto_wrap_policy!r}; valid: "
                f"{', '.join(_WRAP_POLICIES)}"
            )
        if policy == "transformer_based_wrap" and self.transformer_cls_names_to_wrap:
            return {"wrap_classes": list(self.transformer_cls_names_to_wrap)}
        if policy == "size_based_wrap" and self.min_num_params:
            return {"min_num_params": int(self.min_num_params)}
        return {}  # transformer_based_wrap without names: the model's _no_split_modules

    def _dtypes(self) -> dict[str, Any]:
        policy = self.mixed_precision_policy
        if policy is None:
            return {}
        if isinstance(policy, str):
            return {"param_dtype": policy, "reduce_dtype": policy}
        values = policy if isinstance(policy, dict) else vars(policy)
        return {
            key: str(values[key]).removeprefix("torch.")
            for key in ("param_dtype", "reduce_dtype")
            if values.get(key) is not None
        }
