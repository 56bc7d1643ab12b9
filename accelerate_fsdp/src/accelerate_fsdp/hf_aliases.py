"""Hugging Face Accelerate's FSDP launch flags and ``fsdp_config`` keys, mapped onto fsdp options.

HF's ``--use_fsdp --fsdp_*`` flags (and the same keys of an ``accelerate config`` file) become
``--backend fsdp`` and the ``--fsdp-*`` options; what FSDP2 cannot honour is refused naming what
to use instead. Plain Python: nothing of torch is imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from accelerate_core import ConfigurationError, LaunchAlias
from accelerate_core.launch_aliases import accepts, sets
from accelerate_core.launch_options import parse_bool

NAME = "fsdp"
HF_DEFAULT_MIN_NUM_PARAMS = 100_000_000  # HF's default; HF reads it only under SIZE_BASED_WRAP
HSDP = (
    "hybrid sharding is N-D parallelism here: pass --parallelism-config-dp-replicate-size and "
    "--parallelism-config-dp-shard-size"
)
RESHARD = {
    "FULL_SHARD": True,
    "1": True,
    "SHARD_GRAD_OP": False,
    "2": False,
    "NO_RESHARD": False,
}
REFUSED_STRATEGIES = {
    "NO_SHARD": "no sharding is DDP: use --multi_gpu (or --backend ddp)",
    "3": "no sharding is DDP: use --multi_gpu (or --backend ddp)",
    "HYBRID_SHARD": HSDP,
    "4": HSDP,
    "HYBRID_SHARD_ZERO2": HSDP,
    "5": HSDP,
}
STATE_DICT_TYPES = {
    "SHARDED_STATE_DICT": "sharded",
    "FULL_STATE_DICT": "full",
    "SHARDED": "sharded",  # this backend's own values, under the same name
    "FULL": "full",
}


def _use_fsdp(value: bool, given: Mapping[str, Any]) -> dict[str, Any]:
    return {"backend": NAME} if value else {}


def _strategy(value: Any) -> bool:
    text = str(value).strip().upper()
    if text in REFUSED_STRATEGIES:
        raise ConfigurationError(REFUSED_STRATEGIES[text])
    if text not in RESHARD:
        valid = ", ".join(k for k in [*RESHARD, *REFUSED_STRATEGIES] if not k.isdigit())
        raise ConfigurationError(f"unknown sharding strategy; valid: {valid}")
    return RESHARD[text]


def _sharding_strategy(value: Any, given: Mapping[str, Any]) -> dict[str, Any]:
    return {"fsdp_reshard_after_forward": _strategy(value)}


def _reshard_after_forward(value: Any, given: Mapping[str, Any]) -> dict[str, Any]:
    text = str(value).strip().upper()
    if text in RESHARD or text in REFUSED_STRATEGIES:
        return {"fsdp_reshard_after_forward": _strategy(text)}
    return {"fsdp_reshard_after_forward": parse_bool(value, "fsdp_reshard_after_forward")}


def _min_num_params_unused(given: Mapping[str, Any]) -> bool:
    value = given.get("fsdp_min_num_params")
    return value is None or int(value) in (0, HF_DEFAULT_MIN_NUM_PARAMS)


def _wrapping(value: Any, given: Mapping[str, Any]) -> dict[str, Any]:
    """The units from HF's three wrap names together (each of them gives the same answer)."""
    policy = given.get("fsdp_auto_wrap_policy")
    policy = str(policy).strip().upper() if policy is not None else None
    classes = given.get("fsdp_transformer_layer_cls_to_wrap")
    if policy is None and classes:
        policy = "TRANSFORMER_BASED_WRAP"
    if policy is None:  # fsdp_min_num_params alone: this backend's option (units by size too)
        minimum = given.get("fsdp_min_num_params")
        return {} if _min_num_params_unused(given) else {"fsdp_min_num_params": int(minimum)}
    if policy == "TRANSFORMER_BASED_WRAP":
        if not _min_num_params_unused(given):
            raise ConfigurationError(
                "fsdp_min_num_params applies with SIZE_BASED_WRAP, not TRANSFORMER_BASED_WRAP"
            )
        return {"fsdp_wrap_classes": str(classes)} if classes else {}
    if classes:
        raise ConfigurationError(
            f"fsdp_transformer_layer_cls_to_wrap needs fsdp_auto_wrap_policy "
            f"TRANSFORMER_BASED_WRAP, not {policy}"
        )
    if policy == "SIZE_BASED_WRAP":
        minimum = given.get("fsdp_min_num_params")
        minimum = HF_DEFAULT_MIN_NUM_PARAMS if minimum is None else int(minimum)
        return {"fsdp_wrap_classes": "", "fsdp_min_num_params": minimum}
    if policy == "NO_WRAP":
        if not _min_num_params_unused(given):
            raise ConfigurationError(
                "fsdp_min_num_params applies with SIZE_BASED_WRAP, not NO_WRAP"
            )
        return {"fsdp_wrap_classes": ""}
    raise ConfigurationError(
        "unknown fsdp_auto_wrap_policy; valid: TRANSFORMER_BASED_WRAP, SIZE_BASED_WRAP, NO_WRAP"
    )


def _state_dict_type(value: Any, given: Mapping[str, Any]) -> dict[str, Any]:
    text = str(value).strip().upper()
    if text not in STATE_DICT_TYPES:
        raise ConfigurationError(
            "accelerate-fsdp saves SHARDED_STATE_DICT (torch.distributed.checkpoint) or "
            "FULL_STATE_DICT; LOCAL_STATE_DICT is FSDP1's"
        )
    return {"fsdp_state_dict_type": STATE_DICT_TYPES[text]}


def _sync_module_states(value: bool, given: Mapping[str, Any]) -> dict[str, Any]:
    efficient = given.get("fsdp_cpu_ram_efficient_loading")
    if not value and efficient is not None and parse_bool(efficient, "efficient loading"):
        raise ConfigurationError(
            "fsdp_cpu_ram_efficient_loading loads weights on rank 0 and sends them to the others: "
            "it needs fsdp_sync_module_states true (as in Hugging Face Accelerate)"
        )
    return {}


def aliases() -> list[LaunchAlias]:
    """Every FSDP name of HF Accelerate 1.15 (flags and ``fsdp_config`` keys)."""
    wrap = "units: HF's auto wrap policy, class names and size threshold, read together"
    return [
        LaunchAlias("use_fsdp", "--backend fsdp", "flag", _use_fsdp),
        LaunchAlias("fsdp_version", "accepted: 1 or 2 both run FSDP2 (fully_shard)", "str",
                    accepts(["1", "2"], "fsdp_version is 1 or 2")),
        LaunchAlias("fsdp_offload_params", "--fsdp-cpu-offload", "bool", sets("fsdp_cpu_offload")),
        LaunchAlias("fsdp_min_num_params", wrap, "int", _wrapping),
        LaunchAlias("fsdp_auto_wrap_policy", wrap, "str", _wrapping),
        LaunchAlias("fsdp_transformer_layer_cls_to_wrap", wrap, "str", _wrapping),
        LaunchAlias("fsdp_sharding_strategy", "FULL_SHARD / SHARD_GRAD_OP: "
                    "--fsdp-reshard-after-forward true / false", "str", _sharding_strategy),
        LaunchAlias("fsdp_reshard_after_forward", "--fsdp-reshard-after-forward", "str",
                    _reshard_after_forward),
        LaunchAlias("fsdp_backward_prefetch", "BACKWARD_PRE only (what FSDP2 does)", "str",
                    accepts(["BACKWARD_PRE"], "FSDP2 always prefetches the next unit's "
                            "parameters in backward (BACKWARD_PRE); there is no other policy")),
        LaunchAlias("fsdp_state_dict_type", "--fsdp-state-dict-type sharded / full", "str",
                    _state_dict_type),
        LaunchAlias("fsdp_forward_prefetch", "false only", "bool",
                    accepts([False], "for explicit forward prefetching call "
                            "unit.set_modules_to_forward_prefetch([...]) in the script")),
        LaunchAlias("fsdp_use_orig_params", "true only (FSDP2 trains the original parameters)",
                    "bool", accepts([True], "FSDP2 always keeps the original parameters")),
        LaunchAlias("fsdp_cpu_ram_efficient_loading", "--fsdp-cpu-ram-efficient-loading", "bool",
                    sets("fsdp_cpu_ram_efficient_loading")),
        LaunchAlias("fsdp_sync_module_states", "accepted: weights come from rank 0 exactly when "
                    "--fsdp-cpu-ram-efficient-loading", "bool", _sync_module_states),
        LaunchAlias("fsdp_activation_checkpointing", "--fsdp-activation-checkpointing", "bool",
                    sets("fsdp_activation_checkpointing")),
        LaunchAlias("fsdp_activation_checkpointing_offload", "false only", "bool",
                    accepts([False], "recomputed activations are not offloaded to the CPU; use "
                            "--fsdp-activation-checkpointing alone")),
        LaunchAlias("fsdp_ignored_modules", "refused when set", "str",
                    accepts([""], "every module is sharded; keep a module out of the prepared "
                            "model instead"), command_line=False),
    ]  # fmt: skip
