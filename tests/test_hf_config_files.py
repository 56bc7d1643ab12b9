"""Config files written for Hugging Face Accelerate give the launch HF's launcher gives.

HF's own launcher (``accelerate.commands.launch``, a test-only dependency) reads every template of
HF's ``examples/config_yaml_templates`` (copied to ``tests/data/hf_config_templates``) and a file
written by HF's real ``accelerate config default``; what it would hand its processes (world,
distributed type, precision, FSDP/DeepSpeed/fp8 variables) is compared with what ``accel
launch --config-file`` resolves from the same file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from accelerate_core import ConfigurationError
from accelerate_core.cli.main import main
from accelerate_core.config_files import load_config_file
from accelerate_core.launch_settings import LaunchConfig, resolve_launch_config
from accelerate_core.plugins import collect_launch_aliases, collect_launch_options

TEMPLATES = Path(__file__).parent / "data" / "hf_config_templates"


@pytest.fixture(autouse=True)
def private_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))


def hf_launch(path: Path) -> dict[str, Any]:
    """What HF's ``accelerate launch --config_file PATH script.py`` gives its processes."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import (
        prepare_deepspeed_cmd_env,
        prepare_multi_gpu_env,
        prepare_simple_launcher_cmd_env,
    )

    args = launch_command_parser().parse_args(["--config_file", str(path), "script.py"])
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        env = prepare_deepspeed_cmd_env(args)[1]
    elif args.use_fsdp or args.multi_gpu:
        env = prepare_multi_gpu_env(args)
    else:
        env = prepare_simple_launcher_cmd_env(args)[1]
    new = {k: v for k, v in env.items() if os.environ.get(k) != v}
    return {"args": args, "env": new}


def ours(path: Path) -> LaunchConfig:
    options = collect_launch_options()
    return resolve_launch_config({}, path, options, collect_launch_aliases())


def truth(text: str) -> bool:
    return text.strip().lower() in ("true", "1", "yes")


def expected_from_hf(hf: dict[str, Any]) -> dict[str, Any]:
    """HF's launch in our terms (the reference mapping, written from HF's launcher's variables)."""
    args, env = hf["args"], hf["env"]
    expected: dict[str, Any] = {
        "num_processes": int(args.num_processes),
        "num_machines": int(args.num_machines),
        "mixed_precision": env["ACCELERATE_MIXED_PRECISION"],
        "backend": None,
    }
    if env.get("ACCELERATE_USE_FSDP") == "true":
        expected["backend"] = "fsdp"
        expected["fsdp_cpu_offload"] = truth(env["FSDP_OFFLOAD_PARAMS"])
        expected["fsdp_reshard_after_forward"] = env["FSDP_SHARDING_STRATEGY"] == "FULL_SHARD"
        expected["fsdp_state_dict_type"] = {
            "SHARDED_STATE_DICT": "sharded",
            "FULL_STATE_DICT": "full",
        }[env["FSDP_STATE_DICT_TYPE"]]
        expected["fsdp_cpu_ram_efficient_loading"] = truth(env["FSDP_CPU_RAM_EFFICIENT_LOADING"])
        expected["fsdp_activation_checkpointing"] = truth(env["FSDP_ACTIVATION_CHECKPOINTING"])
        # TRANSFORMER_BASED_WRAP without class names: the model's _no_split_modules (our default)
        assert env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"
        expected["fsdp_wrap_classes"] = env.get("FSDP_TRANSFORMER_CLS_TO_WRAP")
    elif env.get("ACCELERATE_USE_DEEPSPEED") == "true":
        expected["backend"] = "deepspeed"
        expected["deepspeed_config"] = env["ACCELERATE_DEEPSPEED_CONFIG_FILE"]
        assert env["ACCELERATE_DEEPSPEED_ZERO3_INIT"] == "false"  # refused when true
    elif int(args.num_processes) > 1:
        expected["backend"] = None  # several processes: the default distributed backend (ddp)
    if env.get("ACCELERATE_USE_CPU") == "True":
        expected["cpu"] = True
    if expected["mixed_precision"] == "fp8":
        recipe = {
            "backend": {"TE": "te", "MSAMP": "msamp", "AO": "torchao"}[
                env["ACCELERATE_FP8_BACKEND"]
            ],
            "fp8_format": env["ACCELERATE_FP8_FORMAT"],
            "margin": int(env["ACCELERATE_FP8_MARGIN"]),
            "interval": int(env["ACCELERATE_FP8_INTERVAL"]),
            "amax_history_len": int(env["ACCELERATE_FP8_AMAX_HISTORY_LEN"]),
            "amax_compute_algo": env["ACCELERATE_FP8_AMAX_COMPUTE_ALGO"],
        }
        expected["fp8_recipe"] = recipe
    return expected


def compare(config: LaunchConfig, expected: dict[str, Any]) -> None:
    values = config.values()
    for key, value in expected.items():
        if key == "mixed_precision" and value == "no":  # not set here means full precision
            assert values.get(key) in (None, "no")
            continue
        assert values.get(key) == value, (key, values.get(key), value)


@pytest.mark.parametrize(
    "name", sorted(p.name for p in TEMPLATES.glob("*.yaml")), ids=lambda n: n.removesuffix(".yaml")
)
def test_each_hf_template_gives_the_launch_hf_gives(name):
    path = TEMPLATES / name
    expected = expected_from_hf(hf_launch(path))
    compare(ours(path), expected)


def test_the_multi_node_template_keeps_hf_machine_settings():
    config = ours(TEMPLATES / "multi_node.yaml")
    assert (config.machine_rank, config.main_process_ip, config.main_process_port) == (
        0,
        "1234",
        9999,
    )
    assert config.processes_per_machine == 4


def test_a_file_written_by_hf_accelerate_config_default(tmp_path):
    from accelerate.commands.config.default import write_basic_config

    path = tmp_path / "hf_default.json"
    write_basic_config(mixed_precision="bf16", save_location=str(path))
    written = json.loads(path.read_text())
    assert written["compute_environment"] == "LOCAL_MACHINE"  # HF's own format, every key
    compare(ours(path), expected_from_hf(hf_launch(path)))
    assert ours(path).cpu is True  # no accelerator on this machine: HF writes use_cpu


def test_hf_fsdp_config_with_every_key_hf_config_writes(tmp_path):
    """The keys ``accelerate config`` writes for FSDP2, with non-default values."""
    path = tmp_path / "fsdp2.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "compute_environment": "LOCAL_MACHINE",
                "debug": False,
                "distributed_type": "FSDP",
                "downcast_bf16": "no",
                "enable_cpu_affinity": False,
                "fsdp_config": {
                    "fsdp_activation_checkpointing": True,
                    "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                    "fsdp_cpu_ram_efficient_loading": False,
                    "fsdp_offload_params": True,
                    "fsdp_reshard_after_forward": False,
                    "fsdp_state_dict_type": "FULL_STATE_DICT",
                    "fsdp_transformer_layer_cls_to_wrap": "Block",
                    "fsdp_version": 2,
                },
                "machine_rank": 0,
                "main_training_function": "main",
                "mixed_precision": "bf16",
                "num_machines": 1,
                "num_processes": 2,
                "rdzv_backend": "static",
                "same_network": True,
                "tpu_env": [],
                "tpu_use_cluster": False,
                "tpu_use_sudo": False,
                "use_cpu": False,
            }
        )
    )
    hf = hf_launch(path)
    assert hf["env"]["FSDP_RESHARD_AFTER_FORWARD"] == "false"
    assert hf["env"]["FSDP_TRANSFORMER_CLS_TO_WRAP"] == "Block"
    compare(
        ours(path),
        {
            "backend": "fsdp",
            "num_processes": 2,
            "mixed_precision": "bf16",
            "fsdp_activation_checkpointing": True,
            "fsdp_cpu_offload": True,
            "fsdp_reshard_after_forward": False,
            "fsdp_state_dict_type": "full",
            "fsdp_wrap_classes": "Block",
            "fsdp_cpu_ram_efficient_loading": False,
        },
    )


def test_unknown_and_unsupported_hf_keys_are_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("distributed_type: MULTI_GPU\nnum_processes: 2\nfsdp_confg: {}\n")
    with pytest.raises(ConfigurationError, match=r"unknown key.s. fsdp_confg"):
        ours(path)
    path.write_text("distributed_type: XLA\n")
    with pytest.raises(ConfigurationError, match=r"tpu.*TPU \(XLA\) training is not available"):
        ours(path)
    path.write_text("distributed_type: FSDP\nnum_processes: 2\nbackend: ddp\n")
    with pytest.raises(ConfigurationError, match="use_fsdp means backend='fsdp' but"):
        ours(path)


def test_accel_config_import_writes_our_file_and_launch_reads_it(tmp_path, capsys):
    out = tmp_path / "ours.yaml"
    assert main(["config", "import", str(TEMPLATES / "fsdp.yaml"), "--config-file", str(out)]) == 0
    written = yaml.safe_load(out.read_text())
    assert written["backend"] == "fsdp" and written["fsdp_state_dict_type"] == "sharded"
    assert "distributed_type" not in written
    options = collect_launch_options()
    assert load_config_file(out, options) == load_config_file(
        TEMPLATES / "fsdp.yaml", options, collect_launch_aliases()
    )
    assert main(["config", "import", str(TEMPLATES / "fsdp.yaml"), "--config-file", str(out)]) == 1
    assert "exists; pass --force" in capsys.readouterr().err


def test_accel_config_reset_removes_only_a_launch_config(tmp_path, capsys):
    assert main(["config", "default"]) == 0
    assert main(["config", "reset"]) == 0
    assert "removed" in capsys.readouterr().out
    assert main(["config", "reset"]) == 0
    assert "nothing to reset" in capsys.readouterr().out
    other = tmp_path / "notes.yaml"
    other.write_text("shopping: [milk]\n")
    assert main(["config", "reset", "--config-file", str(other)]) == 1
    assert other.exists() and "is not a launch config" in capsys.readouterr().err
