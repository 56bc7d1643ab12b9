"""Every launch flag of Hugging Face Accelerate 1.15, and what ``accel launch`` makes of it.

``TABLE`` is the full list of HF's flags (checked against HF's own parser, installed as a
test-only dependency): each is either translated into settings (the resolved launch is compared
with the expected values) or refused with a message naming what to use instead. A flag missing
from the table, or a table row HF does not have, fails the first test.
"""

from __future__ import annotations

from typing import Any

import pytest

from accelerate_core import ConfigurationError
from accelerate_core.cli.launch import resolve
from accelerate_core.cli.main import build_parser, main, parse_arguments
from accelerate_core.launch_settings import LaunchConfig

TWO = ["--cpu", "--num_processes", "2"]  # a world every backend accepts on this machine
NO_TPU = "TPU (XLA) training is not available"
NO_MEGATRON = "Megatron-LM is not available"
NO_SP = "sequence parallelism (DeepSpeed ALST/Ulysses) is not available"
MULTINODE = "run it on every machine"
NO_DYNAMO = "torch.compile(model"

# HF flag -> (arguments given to accel launch, expected settings | refusal text)
TABLE: dict[str, tuple[list[str], dict[str, Any] | str]] = {
    "--config_file": ([], {}),  # read in test_hf_config_files.py
    "--quiet": (["--quiet"], {}),
    "-q": (["-q"], {}),
    "--cpu": (["--cpu", "--num_processes", "3"], {"cpu": True, "num_processes": 3}),
    "--multi_gpu": (["--multi_gpu", *TWO], {"num_processes": 2, "backend": None}),
    "--tpu": (["--tpu"], NO_TPU),
    "--mixed_precision": (["--mixed_precision", "bf16"], {"mixed_precision": "bf16"}),
    "--num_processes": (TWO, {"num_processes": 2}),
    "--num_machines": (
        [
            "--num_machines",
            "2",
            "--num_processes",
            "4",
            "--main_process_ip",
            "10.0.0.1",
            "--main_process_port",
            "29500",
        ],
        {"num_machines": 2, "num_processes": 4},
    ),
    "--num_cpu_threads_per_process": (
        ["--num_cpu_threads_per_process", "4"],
        {"num_cpu_threads_per_process": 4},
    ),
    "--enable_cpu_affinity": (["--enable_cpu_affinity"], "numactl or taskset"),
    "--dynamo_backend": (["--dynamo_backend", "inductor"], NO_DYNAMO),
    "--dynamo_mode": (["--dynamo_mode", "max-autotune"], NO_DYNAMO),
    "--dynamo_use_fullgraph": (["--dynamo_use_fullgraph"], NO_DYNAMO),
    "--dynamo_use_dynamic": (["--dynamo_use_dynamic"], NO_DYNAMO),
    "--dynamo_use_regional_compilation": (["--dynamo_use_regional_compilation"], NO_DYNAMO),
    "--use_deepspeed": (["--use_deepspeed", *TWO], {"backend": "deepspeed"}),
    "--use_fsdp": (["--use_fsdp", *TWO], {"backend": "fsdp"}),
    "--use_parallelism_config": (["--use_parallelism_config", *TWO], "nd"),
    "--use_megatron_lm": (["--use_megatron_lm"], NO_MEGATRON),
    "--gpu_ids": (["--gpu_ids", "0,1"], "CUDA_VISIBLE_DEVICES=0,1"),
    "--same_network": (["--same_network"], {}),
    "--machine_rank": (
        [
            "--machine_rank",
            "1",
            "--num_machines",
            "2",
            "--num_processes",
            "2",
            "--main_process_ip",
            "10.0.0.1",
            "--main_process_port",
            "29500",
        ],
        {"machine_rank": 1},
    ),
    "--main_process_ip": (
        ["--main_process_ip", "10.0.0.1", "--main_process_port", "29501"],
        {"main_process_ip": "10.0.0.1", "main_process_port": 29501},
    ),
    "--main_process_port": (["--main_process_port", "29502"], {"main_process_port": 29502}),
    "--tee": (["--tee", "3"], {"tee": "3"}),
    "-t": (["-t", "1"], {"tee": "1"}),
    "--log_dir": (["--log_dir", "logs"], {"log_dir": "logs"}),
    "--role": (["--role", "trainer"], "torchrun --role"),
    "--rdzv_backend": (["--rdzv_backend", "c10d"], "static rendezvous"),
    "--rdzv_conf": (["--rdzv_conf", "timeout=60"], "static rendezvous"),
    "--max_restarts": (["--max_restarts", "2"], {"max_restarts": 2}),
    "--monitor_interval": (["--monitor_interval", "0.5"], {"monitor_interval": 0.5}),
    "--module": ([], {}),  # -m: checked in test_module_flag
    "-m": ([], {}),
    "--no_python": (["--no_python"], "torchrun --no-python"),
    "--tpu_cluster": (["--tpu_cluster"], NO_TPU),
    "--no_tpu_cluster": (["--no_tpu_cluster"], NO_TPU),
    "--tpu_use_sudo": (["--tpu_use_sudo"], NO_TPU),
    "--vm": (["--vm", "node-1"], NO_TPU),
    "--env": (["--env", "A=1"], NO_TPU),
    "--main_training_function": (["--main_training_function", "train"], "as __main__"),
    "--downcast_bf16": (["--downcast_bf16"], NO_TPU),
    "--deepspeed_config_file": (
        ["--use_deepspeed", *TWO, "--deepspeed_config_file", "ds.json"],
        {"backend": "deepspeed", "deepspeed_config": "ds.json"},
    ),
    "--zero_stage": (["--use_deepspeed", *TWO, "--zero_stage", "3"], {"zero_stage": 3}),
    "--offload_optimizer_device": (
        ["--use_deepspeed", *TWO, "--offload_optimizer_device", "cpu"],
        {"deepspeed_offload_optimizer": "cpu"},
    ),
    "--offload_param_device": (
        ["--use_deepspeed", *TWO, "--offload_param_device", "cpu"],
        {"deepspeed_offload_param": "cpu"},
    ),
    "--offload_optimizer_nvme_path": (
        ["--use_deepspeed", *TWO, "--offload_optimizer_nvme_path", "/nvme"],
        {"deepspeed_offload_optimizer_nvme_path": "/nvme"},
    ),
    "--offload_param_nvme_path": (
        ["--use_deepspeed", *TWO, "--offload_param_nvme_path", "/nvme"],
        {"deepspeed_offload_param_nvme_path": "/nvme"},
    ),
    "--gradient_accumulation_steps": (
        ["--gradient_accumulation_steps", "4"],
        {"gradient_accumulation_steps": 4},
    ),
    "--gradient_clipping": (
        ["--use_deepspeed", *TWO, "--gradient_clipping", "1.0"],
        {"deepspeed_gradient_clipping": 1.0},
    ),
    "--zero3_init_flag": (["--use_deepspeed", *TWO, "--zero3_init_flag", "true"], "meta device"),
    "--zero3_save_16bit_model": (
        ["--use_deepspeed", *TWO, "--zero3_save_16bit_model", "true"],
        {"backend": "deepspeed"},
    ),
    "--deepspeed_hostfile": (["--deepspeed_hostfile", "hosts"], MULTINODE),
    "--deepspeed_exclusion_filter": (["--deepspeed_exclusion_filter", "h1"], MULTINODE),
    "--deepspeed_inclusion_filter": (["--deepspeed_inclusion_filter", "h1"], MULTINODE),
    "--deepspeed_multinode_launcher": (["--deepspeed_multinode_launcher", "pdsh"], MULTINODE),
    "--deepspeed_moe_layer_cls_names": (
        ["--deepspeed_moe_layer_cls_names", "MoE"],
        "set_z3_leaf_modules",
    ),
    "--fsdp_version": (["--use_fsdp", *TWO, "--fsdp_version", "2"], {"backend": "fsdp"}),
    "--fsdp_offload_params": (
        ["--use_fsdp", *TWO, "--fsdp_offload_params", "true"],
        {"fsdp_cpu_offload": True},
    ),
    "--fsdp_min_num_params": (
        [
            "--use_fsdp",
            *TWO,
            "--fsdp_auto_wrap_policy",
            "SIZE_BASED_WRAP",
            "--fsdp_min_num_params",
            "1000",
        ],
        {"fsdp_min_num_params": 1000, "fsdp_wrap_classes": ""},
    ),
    "--fsdp_sharding_strategy": (
        ["--use_fsdp", *TWO, "--fsdp_sharding_strategy", "SHARD_GRAD_OP"],
        {"fsdp_reshard_after_forward": False},
    ),
    "--fsdp_reshard_after_forward": (
        ["--use_fsdp", *TWO, "--fsdp_reshard_after_forward", "false"],
        {"fsdp_reshard_after_forward": False},
    ),
    "--fsdp_auto_wrap_policy": (
        ["--use_fsdp", *TWO, "--fsdp_auto_wrap_policy", "NO_WRAP"],
        {"fsdp_wrap_classes": "", "fsdp_min_num_params": None},
    ),
    "--fsdp_transformer_layer_cls_to_wrap": (
        [
            "--use_fsdp",
            *TWO,
            "--fsdp_auto_wrap_policy",
            "TRANSFORMER_BASED_WRAP",
            "--fsdp_transformer_layer_cls_to_wrap",
            "Block",
        ],
        {"fsdp_wrap_classes": "Block"},
    ),
    "--fsdp_backward_prefetch": (
        ["--use_fsdp", *TWO, "--fsdp_backward_prefetch", "NO_PREFETCH"],
        "FSDP2 always prefetches",
    ),
    "--fsdp_state_dict_type": (
        ["--use_fsdp", *TWO, "--fsdp_state_dict_type", "FULL_STATE_DICT"],
        {"fsdp_state_dict_type": "full"},
    ),
    "--fsdp_forward_prefetch": (
        ["--use_fsdp", *TWO, "--fsdp_forward_prefetch", "true"],
        "set_modules_to_forward_prefetch",
    ),
    "--fsdp_use_orig_params": (
        ["--use_fsdp", *TWO, "--fsdp_use_orig_params", "false"],
        "always keeps the original parameters",
    ),
    "--fsdp_cpu_ram_efficient_loading": (
        ["--use_fsdp", *TWO, "--fsdp_cpu_ram_efficient_loading", "true"],
        {"fsdp_cpu_ram_efficient_loading": True},
    ),
    "--fsdp_sync_module_states": (
        ["--use_fsdp", *TWO, "--fsdp_sync_module_states", "true"],
        {"backend": "fsdp"},
    ),
    "--fsdp_activation_checkpointing": (
        ["--use_fsdp", *TWO, "--fsdp_activation_checkpointing", "true"],
        {"fsdp_activation_checkpointing": True},
    ),
    "--fsdp_activation_checkpointing_offload": (
        ["--use_fsdp", *TWO, "--fsdp_activation_checkpointing_offload", "true"],
        "not offloaded",
    ),
    **{
        f"--megatron_lm_{name}": ([f"--megatron_lm_{name}", "1"], NO_MEGATRON)
        for name in [
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
        ]
    },
    "--fp8_backend": (
        ["--mixed_precision", "fp8", "--fp8_backend", "te"],
        {"fp8_recipe": {"backend": "te", "amax_compute_algo": "most_recent"}},
    ),
    "--fp8_use_autocast_during_eval": (
        ["--mixed_precision", "fp8", "--fp8_use_autocast_during_eval"],
        "same way in eval and training",
    ),
    "--fp8_margin": (
        ["--mixed_precision", "fp8", "--fp8_backend", "te", "--fp8_margin", "2"],
        {"fp8_recipe": {"backend": "te", "margin": 2, "amax_compute_algo": "most_recent"}},
    ),
    "--fp8_interval": (
        ["--mixed_precision", "fp8", "--fp8_backend", "te", "--fp8_interval", "1"],
        {"fp8_recipe": {"backend": "te", "interval": 1, "amax_compute_algo": "most_recent"}},
    ),
    "--fp8_format": (
        ["--mixed_precision", "fp8", "--fp8_format", "E4M3"],
        {"fp8_recipe": {"fp8_format": "E4M3"}},
    ),
    "--fp8_amax_history_len": (
        ["--mixed_precision", "fp8", "--fp8_backend", "te", "--fp8_amax_history_len", "16"],
        {
            "fp8_recipe": {
                "backend": "te",
                "amax_history_len": 16,
                "amax_compute_algo": "most_recent",
            }
        },
    ),
    "--fp8_amax_compute_algo": (
        ["--mixed_precision", "fp8", "--fp8_backend", "te", "--fp8_amax_compute_algo", "max"],
        {"fp8_recipe": {"backend": "te", "amax_compute_algo": "max"}},
    ),
    "--fp8_override_linear_precision": (
        ["--mixed_precision", "fp8", "--fp8_override_linear_precision", "true,false,false"],
        "exclude list",
    ),
    "--fp8_opt_level": (
        ["--mixed_precision", "fp8", "--fp8_backend", "msamp", "--fp8_opt_level", "O1"],
        {"fp8_recipe": {"backend": "msamp", "opt_level": "O1"}},
    ),
    "--fp8_enable_fsdp_float8_all_gather": (
        ["--mixed_precision", "fp8", "--fp8_enable_fsdp_float8_all_gather", "true"],
        {"fp8_recipe": {"fsdp_fp8_all_gather": True}},
    ),
    "--fp8_pad_inner_dim": (
        ["--mixed_precision", "fp8", "--fp8_pad_inner_dim", "true"],
        "multiples of 16 stay in high precision",
    ),
    "--aws_access_key_id": (["--aws_access_key_id", "x"], "SageMaker"),
    "--aws_secret_access_key": (["--aws_secret_access_key", "x"], "SageMaker"),
    "--debug": (["--debug"], {}),
    "--mpirun_hostfile": (["--mpirun_hostfile", "hosts"], "with torchrun"),
    "--parallelism_config_dp_replicate_size": (
        ["--parallelism_config_dp_replicate_size", "1", *TWO],
        "nd",
    ),
    "--parallelism_config_dp_shard_size": (["--parallelism_config_dp_shard_size", "2", *TWO], "nd"),
    "--parallelism_config_tp_size": (["--parallelism_config_tp_size", "2", *TWO], "nd"),
    "--parallelism_config_cp_size": (["--parallelism_config_cp_size", "2", *TWO], "nd"),
    "--parallelism_config_cp_backend": (["--parallelism_config_cp_backend", "torch"], "nd"),
    "--parallelism_config_cp_comm_strategy": (
        ["--parallelism_config_cp_comm_strategy", "alltoall"],
        "nd",
    ),
    "--parallelism_config_sp_size": (["--parallelism_config_sp_size", "2"], NO_SP),
    "--parallelism_config_sp_backend": (["--parallelism_config_sp_backend", "deepspeed"], NO_SP),
    "--parallelism_config_sp_seq_length": (["--parallelism_config_sp_seq_length", "8"], NO_SP),
    "--parallelism_config_sp_seq_length_is_variable": (
        ["--parallelism_config_sp_seq_length_is_variable", "true"],
        NO_SP,
    ),
    "--parallelism_config_sp_attn_implementation": (
        ["--parallelism_config_sp_attn_implementation", "sdpa"],
        NO_SP,
    ),
}


@pytest.fixture(autouse=True)
def private_home(tmp_path, monkeypatch):
    """No default config file: only the flags of each row count."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def hf_flags() -> set[str]:
    """Every option string of HF Accelerate's own ``accelerate launch`` parser, one per flag
    (the underscore spelling, plus the one-letter ones)."""
    from accelerate.commands.launch import launch_command_parser

    flags = set()
    for action in launch_command_parser()._actions:
        strings = [s for s in action.option_strings if s not in ("-h", "--help")]
        flags.update(s for s in strings if len(s) == 2 or "-" not in s[2:])
    return flags


def launch(argv: list[str]) -> LaunchConfig:
    """What ``accel launch ARGV script.py`` resolves (the parser main uses, nothing started)."""
    full = ["launch", *argv, "script.py"]
    return resolve(parse_arguments(build_parser(full), full))


def settings(config: LaunchConfig) -> dict[str, Any]:
    return config.values()


def test_the_table_lists_every_flag_of_hf_accelerate():
    assert set(TABLE) == hf_flags()


@pytest.mark.parametrize("flag", sorted(TABLE))
def test_each_hf_flag_is_translated_or_refused_naming_the_fix(flag):
    argv, expected = TABLE[flag]
    if expected == "nd":
        config = launch(argv)
        key = flag.lstrip("-")
        assert key in settings(config) or key == "use_parallelism_config"
        return
    if isinstance(expected, str):
        with pytest.raises(ConfigurationError) as info:
            launch(argv)
        assert flag.lstrip("-") in str(info.value) or flag in ("-q", "-t")
        assert expected in str(info.value)
        return
    got = settings(launch(argv))
    for key, value in expected.items():
        assert got.get(key) == value, (flag, key)


def test_module_flag(tmp_path, capsys):
    assert main(["launch", "--dry-run", "-m", "package.module", "--x"]) == 0
    assert "-m package.module --x" in capsys.readouterr().out


def test_default_values_of_hf_flags_are_accepted_as_hf_writes_them():
    config = launch(
        ["--gpu_ids", "all", "--rdzv_backend", "static", "--rdzv_conf", "", "--role", "default",
         "--main_training_function", "main", "--dynamo_backend", "no", "--dynamo_mode",
         "default", "--use_fsdp", *TWO, "--fsdp_version", "1", "--fsdp_backward_prefetch",
         "BACKWARD_PRE", "--fsdp_forward_prefetch", "false", "--fsdp_use_orig_params", "true",
         "--fsdp_sync_module_states", "true", "--fsdp_sharding_strategy", "FULL_SHARD",
         "--fsdp_reshard_after_forward", "true"]
    )  # fmt: skip
    assert config.backend == "fsdp"
    assert config.values()["fsdp_reshard_after_forward"] is True


def test_two_flags_that_contradict_each_other_name_both():
    with pytest.raises(ConfigurationError) as info:
        launch(["--use_fsdp", *TWO, "--fsdp_sharding_strategy", "SHARD_GRAD_OP",
                "--fsdp_reshard_after_forward", "true"])  # fmt: skip
    text = str(info.value)
    assert "--fsdp_sharding_strategy" in text and "--fsdp_reshard_after_forward" in text
    with pytest.raises(ConfigurationError, match="--use_fsdp means backend='fsdp' but --backend"):
        launch(["--use_fsdp", "--backend", "ddp", *TWO])
    with pytest.raises(ConfigurationError, match="--multi_gpu needs at least 2 processes"):
        launch(["--multi_gpu", "--num_processes", "1"])


def test_bool_values_after_yes_no_options_are_read_not_taken_for_the_script():
    config = launch(["--use_fsdp", *TWO, "--fsdp-cpu-offload", "false",
                     "--fsdp-activation-checkpointing=true"])  # fmt: skip
    assert config.values()["fsdp_cpu_offload"] is False
    assert config.values()["fsdp_activation_checkpointing"] is True


def test_the_environment_carries_the_translated_settings():
    config = launch(["--use_fsdp", *TWO, "--fsdp_offload_params", "true",
                     "--num_cpu_threads_per_process", "3"])  # fmt: skip
    env = config.environment()
    assert env["ACCELERATE_CORE_BACKEND"] == "fsdp"
    assert env["OMP_NUM_THREADS"] == "3"
    assert '"cpu_offload": true' in env["ACCELERATE_CORE_BACKEND_OPTIONS"]
