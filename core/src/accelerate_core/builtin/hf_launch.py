"""Hugging Face Accelerate's general launch flags and config keys (the backends map their own).

Each name is translated into ``accel launch`` settings or refused with what to use instead
(``launch_aliases``); ``tests/test_hf_launch_flags.py`` holds the table of every HF flag.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ConfigurationError
from ..hookspecs import hookimpl
from ..launch_aliases import accepts, sets
from ..specs import LaunchAlias

NO_TPU = "TPU (XLA) training is not available in accelerate-core"
NO_MEGATRON = (
    "Megatron-LM is not available in accelerate-core; shard with FSDP (--use_fsdp) and split "
    "layers with N-D parallelism (--parallelism-config-tp-size)"
)
NO_SAGEMAKER = "SageMaker launches are not available; run accel launch on the instances"
NO_DYNAMO = (
    "accel launch does not compile models; call torch.compile(model, backend=..., mode=...) in "
    "the script before accelerator.prepare"
)
# Megatron-LM's launch flags in HF Accelerate 1.15 (all refused).
MEGATRON_FLAGS = [
    "tp_degree",
    "use_custom_fsdp",
    "no_load_optim",
    "eod_mask_loss",
    "overlap_cpu_optimizer_d2h_h2d",
    "no_save_optim",
    "optimizer_cpu_offload",
    "use_precision_aware_optimizer",
    "decoder_last_pipeline_num_layers",
    "pp_degree",
    "num_micro_batches",
    "sequence_parallelism",
    "recompute_activations",
    "use_distributed_optimizer",
    "gradient_clipping",
    "recompute_granularity",
    "recompute_method",
    "recompute_num_layers",
    "attention_backend",
    "expert_model_parallel_size",
    "context_parallel_size",
    "attention_dropout",
    "hidden_dropout",
    "attention_softmax_in_fp32",
    "expert_tensor_parallel_size",
    "calculate_per_token_loss",
    "use_rotary_position_embeddings",
    "gradient_accumulation_fusion",
    "num_layers_per_virtual_pipeline_stage",
    "other_megatron_args",
]
# Sequence parallelism (DeepSpeed ALST/Ulysses) of HF's ParallelismConfig (all refused).
SEQUENCE_PARALLEL_FLAGS = (
    "sp_size",
    "sp_backend",
    "sp_seq_length",
    "sp_seq_length_is_variable",
    "sp_attn_implementation",
)


def _several(flag: str, cpu: bool = False) -> Any:
    """``--multi_gpu`` (and ``distributed_type: MULTI_*``): a multi-process launch."""

    def translate(value: bool, given: Mapping[str, Any]) -> dict[str, Any]:
        if not value:
            return {}
        processes = given.get("num_processes")
        if processes is not None and int(processes) < 2:
            raise ConfigurationError(
                f"{flag} needs at least 2 processes but num_processes is {processes}; pass "
                "--num_processes N (the total over all machines)"
            )
        return {"cpu": True} if cpu else {}

    return translate


def _flag(name: str, instead: str, **kwargs: Any) -> LaunchAlias:
    """A true/false name where only false is honoured (true is refused with ``instead``)."""
    return LaunchAlias(name, f"refused when set ({instead})", "flag",
                       accepts([False], instead), instead, **kwargs)  # fmt: skip


def _refused(name: str, instead: str, type: str = "str", **kwargs: Any) -> LaunchAlias:
    return LaunchAlias(name, f"refused: {instead}", type, None, instead, **kwargs)


def _empty_or_refused(name: str, instead: str, **kwargs: Any) -> LaunchAlias:
    """A value HF writes as empty by default; anything else is refused."""
    return LaunchAlias(name, f"refused when set ({instead})", "str",
                       accepts(["", [], ()], instead), instead, **kwargs)  # fmt: skip


def aliases() -> list[LaunchAlias]:
    """The general HF names, each with what it becomes."""
    found = [
        LaunchAlias("multi_gpu", "several processes (the default backend: ddp)", "flag",
                    _several("--multi_gpu")),
        LaunchAlias("multi_cpu", "several processes on the CPU", "flag",
                    _several("distributed_type: MULTI_CPU", cpu=True), command_line=False),
        LaunchAlias("use_cpu", "--cpu", "bool", sets("cpu"), command_line=False),
        LaunchAlias("distributed_type", "the flag it stands for (MULTI_GPU: --multi_gpu ...)",
                    "str", lambda value, given: {}, command_line=False),
        LaunchAlias("compute_environment", "LOCAL_MACHINE only", "str",
                    accepts(["LOCAL_MACHINE"], NO_SAGEMAKER), command_line=False),
        LaunchAlias("quiet", "accepted: failure reports always show only the failing rank's "
                    "traceback", "flag", lambda value, given: {}, short="-q"),
        LaunchAlias("debug", "accepted: collectives always check shapes and name a rank that "
                    "does not join", "flag", lambda value, given: {}),
        LaunchAlias("same_network", "accepted: machines always meet at --main_process_ip:"
                    "--main_process_port", "flag", lambda value, given: {}),
        LaunchAlias("rdzv_backend", "static only (torchrun's static rendezvous)", "str",
                    accepts(["static"], "accel launch uses torchrun's static rendezvous "
                            "(--main_process_ip/--main_process_port); for elastic rendezvous "
                            "run torchrun directly")),
        _empty_or_refused("rdzv_conf", "accel launch uses torchrun's static rendezvous; run "
                          "torchrun directly for --rdzv-conf"),
        LaunchAlias("role", "'default' only", "str", accepts(["default"], "worker roles are "
                    "not configurable in accel launch; run torchrun --role directly")),
        LaunchAlias("gpu_ids", "'all' only", "str", accepts(["all"], "choose devices with "
                    "CUDA_VISIBLE_DEVICES=0,1 (or your accelerator's visibility variable) in "
                    "the environment of accel launch")),
        _flag("enable_cpu_affinity", "pin processes with numactl or taskset in the command"),
        _flag("no_python", "accel launch runs Python scripts (or -m modules); start other "
              "programs with torchrun --no-python"),
        LaunchAlias("main_training_function", "'main' only (HF reads it for TPU launches)",
                    "str", accepts(["main"], "accel launch runs the script as __main__; "
                                   "call your function from there")),
        LaunchAlias("dynamo_backend", "'no' only", "str", accepts(["no"], NO_DYNAMO)),
        LaunchAlias("dynamo_mode", "'default' only", "str", accepts(["default"], NO_DYNAMO)),
        _flag("dynamo_use_fullgraph", NO_DYNAMO),
        _flag("dynamo_use_dynamic", NO_DYNAMO),
        _flag("dynamo_use_regional_compilation", NO_DYNAMO),
        _flag("tpu", NO_TPU),
        _flag("tpu_cluster", NO_TPU),
        _flag("tpu_use_cluster", NO_TPU, command_line=False),
        _flag("no_tpu_cluster", NO_TPU),
        _flag("tpu_use_sudo", NO_TPU),
        _flag("downcast_bf16", NO_TPU),
        _empty_or_refused("vm", NO_TPU),
        _empty_or_refused("env", NO_TPU),
        _empty_or_refused("tpu_name", NO_TPU, command_line=False),
        _empty_or_refused("tpu_zone", NO_TPU, command_line=False),
        _empty_or_refused("tpu_vm", NO_TPU, command_line=False),
        _empty_or_refused("tpu_env", NO_TPU, command_line=False),
        _empty_or_refused("command_file", NO_TPU, command_line=False),
        _empty_or_refused("commands", NO_TPU, command_line=False),
        _refused("aws_access_key_id", NO_SAGEMAKER),
        _refused("aws_secret_access_key", NO_SAGEMAKER),
        _refused("mpirun_hostfile", "accel launch starts processes with torchrun; run it on "
                 "every machine with --num_machines, --machine_rank and --main_process_ip"),
        _empty_or_refused("mpirun_ccl", "oneCCL through mpirun is not available",
                          command_line=False),
        _flag("ipex", "Intel Extension for PyTorch is not applied by accel launch",
              command_line=False),
        _flag("use_megatron_lm", NO_MEGATRON),
    ]  # fmt: skip
    found += [_refused(f"megatron_lm_{name}", NO_MEGATRON) for name in MEGATRON_FLAGS]
    found += [
        _refused(
            f"parallelism_config_{name}",
            "sequence parallelism (DeepSpeed ALST/Ulysses) is not available; split sequences "
            "with context parallelism (--parallelism-config-cp-size) under FSDP",
        )
        for name in SEQUENCE_PARALLEL_FLAGS
    ]
    return found


@hookimpl
def accelerate_core_launch_aliases() -> list[LaunchAlias]:
    return aliases()
