"""The fsdp plugin without launching: registration, light entry point, one-process refusal,
launch options and option parsing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from accelerate_fsdp.options import FSDPOptions

from accelerate_core import Accelerator, ConfigurationError
from accelerate_core.plugins import get_plugin_manager


def test_fsdp_is_registered_by_its_distribution():
    registered = get_plugin_manager().registry()["backend"]["fsdp"]
    assert registered.distribution == "accelerate-fsdp 0.1.0"
    spec = registered.spec
    assert (spec.min_processes, spec.distributed, spec.places_models) == (2, True, True)


def test_fsdp_entry_point_imports_no_fsdp_code():
    probe = (
        "import sys, accelerate_fsdp._plugin as p; "
        "print(sorted(m for m in sys.modules if m.startswith('torch.distributed.fsdp') "
        "or m.startswith('torch.distributed.checkpoint') or m.startswith('accelerate_fsdp.')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['accelerate_fsdp._plugin']"


def test_fsdp_with_one_process_is_refused_with_the_fix():
    with pytest.raises(ConfigurationError) as error:
        Accelerator(backend="fsdp", cpu=True)
    assert str(error.value) == (
        "backend 'fsdp' needs at least 2 processes but this run has 1; launch it with "
        "`accel launch --num-processes 2 ...`"
    )


def test_fsdp_launch_options_reach_backend_options(tmp_path):
    script = tmp_path / "train.py"
    script.write_text("")
    command = [
        sys.executable, "-m", "accelerate_core", "launch", "--dry-run", "--cpu",
        "--num-processes", "2", "--backend", "fsdp", "--no-fsdp-reshard-after-forward",
        "--fsdp-wrap-classes", "Block,Other", "--fsdp_state_dict_type", "full",
        "--fsdp-min-num-params", "1000", str(script),
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=tmp_path)
    line = next(x for x in out.stdout.splitlines() if "ACCELERATE_CORE_BACKEND_OPTIONS=" in x)
    options = json.loads(line.split("=", 1)[1])["fsdp"]
    assert options == {
        "reshard_after_forward": False,
        "wrap_classes": "Block,Other",
        "state_dict_type": "full",
        "min_num_params": 1000,
    }
    parsed = FSDPOptions.from_mapping(options)
    assert parsed.wrap_classes == ("Block", "Other") and parsed.reshard_after_forward is False
    bad = subprocess.run(
        [*command[:-1], "--fsdp-state-dict-type", "zip", str(script)],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert bad.returncode != 0 and "zip" in bad.stderr


def test_fsdp_options_derive_dtypes_from_mixed_precision_and_check_values():
    assert FSDPOptions().dtypes("bf16") == ("bfloat16", "float32")
    assert FSDPOptions().dtypes("no") == (None, None)
    explicit = FSDPOptions.from_mapping({"param_dtype": torch.bfloat16, "reduce_dtype": "bf16"})
    assert explicit.dtypes("no") == ("bfloat16", "bfloat16")
    for options, message in (
        ({"param_dtype": "int8"}, "param_dtype must be one of float32, bfloat16, float16"),
        ({"reshard_after_forward": 1}, "reshard_after_forward must be True, False or a number"),
        ({"min_num_params": 0}, "min_num_params must be a positive integer"),
        ({"cpu_offload": "yes"}, "cpu_offload must be True or False, got 'yes'"),
        ({"wrap_classes": [torch.nn.Linear]}, "wrap_classes must be class names"),
    ):
        with pytest.raises(ConfigurationError, match=message):
            FSDPOptions.from_mapping(options)
