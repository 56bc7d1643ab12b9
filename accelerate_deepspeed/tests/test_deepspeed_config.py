"""One process, no DeepSpeed engine: config resolution, options, launch flags, plugin hygiene,
and the errors of a missing or broken DeepSpeed."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap

import pytest
import torch

from accelerate_core import Accelerator, ConfigurationError, PluginNotInstalledError
from accelerate_core.cli.main import main
from accelerate_core.process_settings import launch_plugin_options
from accelerate_deepspeed import (
    DeepSpeedOptions,
    DummyOptim,
    DummyScheduler,
    Knowledge,
    format_config,
    resolve_config,
)


def knowledge(**kwargs) -> Knowledge:
    defaults = {
        "mixed_precision": "no", "gradient_accumulation_steps": 4, "num_processes": 2,
        "micro_batch_sizes": [8], "client_optimizer_lr": 1e-3, "has_client_optimizer": True,
    }  # fmt: skip
    return Knowledge(**{**defaults, **kwargs})


def resolve(config=None, knowledge_kwargs=None, **options) -> dict:
    options = DeepSpeedOptions.from_mapping({"config": config, **options})
    return resolve_config(options, knowledge(**(knowledge_kwargs or {}))).config


def test_auto_values_are_filled_from_what_the_library_knows(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({
        "train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto", "loss_scale": 0},
        "zero_optimization": {"stage": 3, "reduce_bucket_size": "auto",
                              "stage3_prefetch_bucket_size": "auto",
                              "stage3_param_persistence_threshold": "auto"},
        "optimizer": {"type": "AdamW", "params": {"lr": "auto", "weight_decay": "auto"}},
        "scheduler": {"type": "WarmupDecayLR", "params": {
            "warmup_min_lr": "auto", "warmup_max_lr": "auto", "warmup_num_steps": "auto",
            "total_num_steps": "auto"}},
    }))  # fmt: skip
    dummy = DummyOptim([torch.nn.Parameter(torch.zeros(1))], lr=3e-4, weight_decay=0.1)
    config = resolve_config(
        DeepSpeedOptions.from_mapping({"config": str(path), "gradient_clipping": 1.0}),
        knowledge(mixed_precision="bf16", has_client_optimizer=False, dummy_optimizer=dummy,
                  dummy_scheduler=DummyScheduler(dummy, 100, 10), model_parameters=1000),
    )  # fmt: skip
    resolved = config.config
    assert resolved["train_micro_batch_size_per_gpu"] == 8
    assert resolved["gradient_accumulation_steps"] == 4
    assert resolved["train_batch_size"] == 8 * 4 * 2
    assert resolved["gradient_clipping"] == 1.0 and config.clipping_fixed
    assert resolved["bf16"] == {"enabled": True}
    assert resolved["fp16"] == {"enabled": False, "loss_scale": 0}
    # buckets: DeepSpeed's defaults capped at the model's size; other "auto" knobs: its defaults
    assert resolved["zero_optimization"] == {
        "stage": 3, "reduce_bucket_size": 1024, "stage3_prefetch_bucket_size": 1024
    }  # fmt: skip
    assert resolved["optimizer"]["params"] == {"lr": 3e-4, "weight_decay": 0.1}
    assert resolved["scheduler"]["params"] == {
        "warmup_min_lr": 0.0, "warmup_max_lr": 3e-4, "warmup_num_steps": 10,
        "total_num_steps": 100,
    }  # fmt: skip
    assert "zero_allow_untested_optimizer" not in resolved  # the config's own optimizer
    assert json.loads(format_config(config)) == resolved
    assert json.loads(path.read_text())["train_batch_size"] == "auto"  # the file is untouched


def test_without_a_config_the_options_build_one():
    resolved = resolve(None, {"mixed_precision": "fp16"}, offload_optimizer_device="cpu")
    assert resolved == {
        "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}},
        "gradient_accumulation_steps": 4,
        "fp16": {"enabled": True},
        "bf16": {"enabled": False},
        "train_micro_batch_size_per_gpu": 8,
        "train_batch_size": 64,
        "gradient_clipping": 0.0,  # set by the first clip_grad_norm_
        "zero_allow_untested_optimizer": True,
    }
    assert resolve({"zero_optimization": {}})["zero_optimization"] == {}  # DeepSpeed's stage 0
    assert resolve(None, {"model_parameters": 10**9}, zero_stage=3)["zero_optimization"] == {
        "stage": 3, "reduce_bucket_size": 500_000_000, "allgather_bucket_size": 500_000_000,
        "stage3_prefetch_bucket_size": 50_000_000,
    }  # fmt: skip
    assert resolve({"zero_optimization": {"stage": 1}}, {"model_parameters": 10})[
        "zero_optimization"
    ] == {"stage": 1}  # a user's config without bucket sizes keeps DeepSpeed's
    nvme = resolve(zero_stage=3, offload_param_device="nvme", offload_param_nvme_path="/nvme")
    assert nvme["zero_optimization"]["offload_param"] == {"device": "nvme", "nvme_path": "/nvme"}


@pytest.mark.parametrize(
    ("config", "knowledge_kwargs", "options", "message"),
    [
        ({"zero_optimization": {"stage": 3}}, {}, {"zero_stage": 2},
         "zero_optimization.stage is 3 in the backend_options['config'] but 2 from "
         "backend_options['zero_stage'] (accel launch --zero-stage)"),
        ({"gradient_accumulation_steps": 8}, {}, {},
         "gradient_accumulation_steps is 8 in the backend_options['config'] but 4 from "
         "Accelerator(gradient_accumulation_steps=4)"),
        ({"bf16": {"enabled": True}}, {}, {},
         "bf16.enabled is true in the backend_options['config'] but false from "
         "Accelerator(mixed_precision='no')"),
        ({"gradient_clipping": 1.0}, {}, {"gradient_clipping": 0.5},
         "gradient_clipping is 1.0 in the backend_options['config'] but 0.5 from "
         "backend_options['gradient_clipping']"),
        ({"train_micro_batch_size_per_gpu": 16}, {}, {},
         "train_micro_batch_size_per_gpu is 16 in the backend_options['config'] but 8 from the "
         "prepared dataloader"),
        ({"train_batch_size": 100}, {}, {},
         "train_batch_size is 100 in the backend_options['config'] but 64 from"),
        ({}, {"micro_batch_sizes": []}, {},
         "train_micro_batch_size_per_gpu is not set in the backend_options['config'] and no "
         "prepared dataloader tells it; pass the training DataLoader to the same prepare()"),
        ({"optimizer": {"type": "AdamW"}}, {}, {},
         "defines an optimizer (AdamW) and prepare() got a torch optimizer too; pass "
         "accelerate_deepspeed.DummyOptim(model.parameters())"),
        ({}, {"has_client_optimizer": False, "dummy_optimizer": DummyOptim([])}, {},
         "DummyOptim stands for the optimizer of the DeepSpeed config, but the "
         "backend_options['config'] has no \"optimizer\" section"),
        ({"optimizer": {"type": "AdamW", "params": {"lr": 1e-4}}},
         {"has_client_optimizer": False, "dummy_optimizer": DummyOptim([], lr=1e-3)}, {},
         "optimizer.params.lr is 0.0001 in the backend_options['config'] but 0.001 from "
         "DummyOptim(lr=0.001)"),
        ({"optimizer": {"type": "AdamW", "params": {"betas": "auto"}}},
         {"has_client_optimizer": False, "dummy_optimizer": DummyOptim([])}, {},
         "optimizer.params.betas is \"auto\" in the backend_options['config']; give it to "
         "DummyOptim"),
        ({"scheduler": {"type": "WarmupLR"}}, {"has_client_scheduler": True}, {},
         "defines a scheduler (WarmupLR) and prepare() got a torch scheduler too"),
        ({"scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": "auto"}}}, {}, {},
         "scheduler.params.warmup_num_steps is \"auto\" in the backend_options['config']; give "
         "it to DummyScheduler"),
        ({"steps_per_print": "auto"}, {}, {},
         "steps_per_print is \"auto\" in the backend_options['config'] but accelerate-deepspeed "
         "knows no value for it"),
        ({}, {"mixed_precision": "fp4"}, {},
         "backend 'deepspeed' runs the precision itself and supports mixed_precision no, fp16, "
         "bf16 and fp8, not 'fp4'"),
        ({"zero_optimization": {"stage": 2}}, {}, {"offload_param_device": "cpu"},
         "parameter offload (cpu) needs ZeRO stage 3"),
    ],
)  # fmt: skip
def test_contradictions_and_unknowns_are_errors_naming_both(
    config, knowledge_kwargs, options, message
):
    with pytest.raises(ConfigurationError) as err:
        resolve(config, knowledge_kwargs, **options)
    assert message in str(err.value)


def test_dummy_scheduler_without_a_scheduler_section_needs_a_callable():
    with pytest.raises(ConfigurationError, match='has no "scheduler" section'):
        resolve({}, {"dummy_scheduler": DummyScheduler(None)})
    resolve({}, {"dummy_scheduler": DummyScheduler(None, lr_scheduler_callable=lambda o: o)})


def test_options_are_checked(tmp_path):
    with pytest.raises(ConfigurationError, match=r"unknown deepspeed option\(s\) zero; valid: "):
        DeepSpeedOptions.from_mapping({"zero": 2})
    with pytest.raises(ConfigurationError, match="zero_stage must be one of 0, 1, 2, 3"):
        DeepSpeedOptions.from_mapping({"zero_stage": 4})
    with pytest.raises(ConfigurationError, match="needs offload_optimizer_nvme_path"):
        DeepSpeedOptions.from_mapping({"offload_optimizer_device": "nvme"})
    with pytest.raises(ConfigurationError, match="cannot read the DeepSpeed config"):
        DeepSpeedOptions.from_mapping({"config": str(tmp_path / "missing.json")}).load_config()
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigurationError, match="is not valid JSON"):
        DeepSpeedOptions.from_mapping({"config": str(tmp_path / "bad.json")}).load_config()
    # a bad option fails at Accelerator creation, before DeepSpeed is imported
    with pytest.raises(ConfigurationError, match="unknown deepspeed option"):
        Accelerator(backend="deepspeed", cpu=True, backend_options={"stage": 2})


def test_accel_launch_flags_reach_backend_options(tmp_path, capsys, monkeypatch):
    code = main(
        ["launch", "--dry-run", "--cpu", "--num-processes", "2", "--backend", "deepspeed",
         "--zero-stage", "3", "--deepspeed-config", "ds.json", "--deepspeed-offload-param", "cpu",
         "--deepspeed-gradient-clipping", "1.0", "train.py"]
    )  # fmt: skip
    assert code == 0
    command = capsys.readouterr().out.split("command:\n", 1)[1]
    env = dict(w.split("=", 1) for w in shlex.split(command) if w.startswith("ACCELERATE_"))
    assert env["ACCELERATE_CORE_BACKEND"] == "deepspeed"
    options = json.loads(env["ACCELERATE_CORE_BACKEND_OPTIONS"])["deepspeed"]
    assert options == {
        "zero_stage": 3, "config": "ds.json", "offload_param_device": "cpu",
        "gradient_clipping": 1.0,
    }  # fmt: skip
    DeepSpeedOptions.from_mapping(options)  # valid as they arrive
    monkeypatch.setenv("ACCELERATE_CORE_BACKEND_OPTIONS", env["ACCELERATE_CORE_BACKEND_OPTIONS"])
    assert launch_plugin_options("backend", "deepspeed", None)["zero_stage"] == 3
    with pytest.raises(SystemExit):
        main(["launch", "--dry-run", "--zero-stage", "5", "train.py"])
    assert "--zero-stage/--zero_stage: invalid choice: 5" in capsys.readouterr().err


PYTHON_CHECK = """
import sys, warnings
warnings.simplefilter("error")
from accelerate_core.plugins import collect_launch_options
from accelerate_core.plugins import get_plugin_manager
manager = get_plugin_manager()
record = manager.select("backend", "deepspeed")
assert record.spec.owns_precision and record.spec.places_models, record
assert any(o.name == "zero-stage" for o in collect_launch_options(manager))
import accelerate_deepspeed
assert "deepspeed" not in sys.modules, "the plugin imported deepspeed"
print("ok", record.distribution)
"""


def test_plugin_loads_without_importing_deepspeed():
    done = subprocess.run(
        [sys.executable, "-c", PYTHON_CHECK], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok accelerate-deepspeed")


def test_missing_deepspeed_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # import deepspeed -> ModuleNotFoundError
    with pytest.raises(PluginNotInstalledError) as err:
        Accelerator(backend="deepspeed", cpu=True)
    message = str(err.value)
    assert "backend 'deepspeed' needs the DeepSpeed library, which is not installed" in message
    assert "pip install deepspeed" in message and "pip install accelerate-deepspeed" in message


def test_broken_deepspeed_installation_is_named(tmp_path):
    fake = tmp_path / "deepspeed"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise RuntimeError('simulated broken build')\n")
    script = textwrap.dedent("""
        from accelerate_core import Accelerator, PluginNotInstalledError
        try:
            Accelerator(backend="deepspeed", cpu=True)
        except PluginNotInstalledError as exc:
            print(exc)
    """)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env = {k: v for k, v in env.items() if not k.startswith("ACCELERATE_CORE_")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    assert "could not import DeepSpeed (RuntimeError: simulated broken build)" in done.stdout
    assert "pip install --force-reinstall deepspeed" in done.stdout
