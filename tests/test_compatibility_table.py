"""``docs/compatibility.md`` lists every public name of HF Accelerate, and it is current.

The table is generated from HF Accelerate (a test dependency) and this core by
``scripts/compatibility_table.py``: after a name is added or changes status, run it again.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("accelerate", reason="HF Accelerate is a test dependency (core[test])")

ROOT = Path(__file__).resolve().parents[1]


def generator():
    spec = importlib.util.spec_from_file_location(
        "compatibility_table", ROOT / "scripts" / "compatibility_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_compatibility_table_is_current():
    table = generator()
    assert table.OUTPUT.read_text() == table.render(), (
        "docs/compatibility.md is out of date: run `python scripts/compatibility_table.py`"
    )


def test_the_names_hf_scripts_use_most_are_supported():
    """The names issue 14 lists (HF's examples and docs) are all supported, some differently."""
    table = generator()
    wanted = {
        "accelerate": "Accelerator DistributedType DataLoaderConfiguration PartialState "
        "find_executable_batch_size notebook_launcher FullyShardedDataParallelPlugin "
        "DeepSpeedPlugin DistributedDataParallelKwargs DDPCommunicationHookType ProfileKwargs "
        "InitProcessGroupKwargs GradScalerKwargs AutocastKwargs skip_first_batches",
        "accelerate.utils": "set_seed gather gather_object broadcast broadcast_object_list reduce "
        "pad_across_processes send_to_device wait_for_everyone ProjectConfiguration "
        "DataLoaderConfiguration GradientAccumulationPlugin InitProcessGroupKwargs "
        "DistributedDataParallelKwargs DDPCommunicationHookType GradScalerKwargs AutocastKwargs "
        "ProfileKwargs TorchDynamoPlugin FullyShardedDataParallelPlugin DeepSpeedPlugin "
        "DummyOptim DummyScheduler DistributedType PrecisionType is_deepspeed_available "
        "extract_model_from_parallel write_basic_config find_executable_batch_size",
        "accelerate.Accelerator()": "dataloader_config gradient_accumulation_plugin fsdp_plugin "
        "deepspeed_plugin deepspeed_plugins kwargs_handlers dynamo_backend dynamo_plugin rng_types",
        "accelerate.Accelerator": "distributed_type use_distributed save "
        "register_save_state_pre_hook register_load_state_pre_hook set_trigger check_trigger "
        "profile gradient_accumulation_steps trigger_sync_in_backward split_between_processes "
        "reduce free_memory clear unwrap_model",
        "accelerate.logging": "get_logger",
        "accelerate.local_sgd": "LocalSGD",
    }
    unsupported = [
        f"{section} {name}: {table.status(section, name)}"
        for section, names in wanted.items()
        for name in names.split()
        if table.status(section, name)[0] == "not supported"
    ]
    assert unsupported == []
