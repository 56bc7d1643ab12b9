"""Hugging Face Accelerate's DeepSpeed launch flags and ``deepspeed_config`` keys, mapped.

HF's ``--use_deepspeed --zero_stage N --offload_optimizer_device cpu ...`` (and the same keys of
an ``accelerate config`` file) become ``--backend deepspeed`` and the ``--deepspeed-*`` options;
``--zero_stage`` is already an option of this backend. What cannot be honoured is refused naming
what to use instead. Plain Python: DeepSpeed is not imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from accelerate_core import LaunchAlias
from accelerate_core.launch_aliases import accepts, sets

NAME = "deepspeed"
MULTINODE = (
    "accel launch starts the processes of each machine with torchrun: run it on every machine "
    "with --num_machines, --machine_rank, --main_process_ip and --main_process_port"
)


def _use_deepspeed(value: bool, given: Mapping[str, Any]) -> dict[str, Any]:
    return {"backend": NAME} if value else {}


def _config_file(value: str, given: Mapping[str, Any]) -> dict[str, Any]:
    return {} if value.lower() in ("", "none") else {"deepspeed_config": value}


def _offload(key: str) -> Any:
    def translate(value: str, given: Mapping[str, Any]) -> dict[str, Any]:
        return {key: value.lower()}

    return translate


def _nvme_path(key: str) -> Any:
    def translate(value: str, given: Mapping[str, Any]) -> dict[str, Any]:
        return {} if value.lower() in ("", "none") else {key: value}

    return translate


def aliases() -> list[LaunchAlias]:
    """Every DeepSpeed name of HF Accelerate 1.15 (flags and ``deepspeed_config`` keys)."""
    return [
        LaunchAlias("use_deepspeed", "--backend deepspeed", "flag", _use_deepspeed),
        LaunchAlias("deepspeed_config_file", "--deepspeed-config", "str", _config_file),
        LaunchAlias("offload_optimizer_device", "--deepspeed-offload-optimizer", "str",
                    _offload("deepspeed_offload_optimizer")),
        LaunchAlias("offload_param_device", "--deepspeed-offload-param", "str",
                    _offload("deepspeed_offload_param")),
        LaunchAlias("offload_optimizer_nvme_path", "--deepspeed-offload-optimizer-nvme-path",
                    "str", _nvme_path("deepspeed_offload_optimizer_nvme_path")),
        LaunchAlias("offload_param_nvme_path", "--deepspeed-offload-param-nvme-path", "str",
                    _nvme_path("deepspeed_offload_param_nvme_path")),
        LaunchAlias("gradient_clipping", "--deepspeed-gradient-clipping", "float",
                    sets("deepspeed_gradient_clipping")),
        LaunchAlias("zero3_init_flag", "false only", "bool",
                    accepts([False], "models are not built under deepspeed.zero.Init; build "
                            "a large model on the meta device (the engine places it)")),
        LaunchAlias("zero3_save_16bit_model", "accepted: under ZeRO-3 save_model always "
                    "gathers the full 16-bit weights (accel merge-weights gives fp32)", "bool",
                    lambda value, given: {}),
        LaunchAlias("deepspeed_hostfile", f"refused: {MULTINODE}", "str", None, MULTINODE),
        LaunchAlias("deepspeed_exclusion_filter", f"refused: {MULTINODE}", "str", None,
                    MULTINODE),
        LaunchAlias("deepspeed_inclusion_filter", f"refused: {MULTINODE}", "str", None,
                    MULTINODE),
        LaunchAlias("deepspeed_multinode_launcher", "'standard' only (torchrun on each "
                    "machine)", "str", accepts(["standard"], MULTINODE)),
        LaunchAlias("deepspeed_moe_layer_cls_names", "refused", "str", None,
                    "mark MoE blocks as ZeRO-3 leaves in the script: "
                    "deepspeed.utils.set_z3_leaf_modules(model, [BlockClass])"),
    ]  # fmt: skip
