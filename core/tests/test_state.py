"""Process state and environment detection (single process, torchrun, SLURM)."""

from __future__ import annotations

import pytest
import torch

from accelerate_core import (
    Accelerator,
    AcceleratorState,
    ConfigurationError,
    EnvironmentDetectionError,
    PartialState,
    PluginNotInstalledError,
)
from accelerate_core.state import detect_environment, reset_state

TORCHRUN_2 = {
    "RANK": "1",
    "WORLD_SIZE": "2",
    "LOCAL_RANK": "1",
    "LOCAL_WORLD_SIZE": "2",
    "MASTER_ADDR": "127.0.0.1",
    "MASTER_PORT": "29500",
}
SRUN_4 = {
    "SLURM_PROCID": "3",
    "SLURM_NTASKS": "4",
    "SLURM_LOCALID": "1",
    "SLURM_STEP_ID": "0",
    "SLURM_TASKS_PER_NODE": "2(x2)",
    "SLURM_NODEID": "1",
}


def test_single_process_defaults():
    state = PartialState()
    assert (state.process_index, state.num_processes, state.local_process_index) == (0, 1, 0)
    assert state.environment.source == "single"
    assert state.backend == "none"
    assert state.is_main_process and state.is_local_main_process and state.is_last_process
    expected = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    assert state.device.type == (expected.type if expected else "cpu")


def test_state_is_created_once_and_shared():
    first = PartialState(cpu=True)
    first.marker = "shared"
    assert PartialState().marker == "shared"
    assert AcceleratorState().partial is not None
    reset_state()
    assert not hasattr(PartialState(), "marker")


def test_cpu_forces_cpu():
    assert Accelerator(cpu=True).device == torch.device("cpu")


def test_torchrun_environment_is_detected():
    info = detect_environment(TORCHRUN_2)
    assert (info.source, info.rank, info.world_size, info.local_rank) == ("torchrun", 1, 2, 1)
    assert (info.master_addr, info.master_port) == ("127.0.0.1", 29500)


def test_slurm_environment_is_detected_inside_srun():
    info = detect_environment(SRUN_4)
    assert (info.source, info.rank, info.world_size) == ("slurm", 3, 4)
    assert (info.local_rank, info.local_world_size) == (1, 2)


def test_slurm_batch_shell_without_srun_is_one_process():
    batch_shell = {k: v for k, v in SRUN_4.items() if k != "SLURM_STEP_ID"}
    batch_shell["SLURM_PROCID"] = "0"
    assert detect_environment(batch_shell).world_size == 1


def test_torchrun_inside_slurm_wins():
    info = detect_environment({**SRUN_4, **TORCHRUN_2})
    assert info.source == "torchrun"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"WORLD_SIZE": "2"}, "sets WORLD_SIZE=2 but not RANK, LOCAL_RANK"),
        (
            {"RANK": "0", "WORLD_SIZE": "two", "LOCAL_RANK": "0"},
            "WORLD_SIZE='two' is not an integer",
        ),
        ({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "rank 2 is not below world size 2"),
        ({"RANK": "0", "WORLD_SIZE": "0", "LOCAL_RANK": "0"}, "world size 0 < 1"),
    ],
)
def test_incomplete_launch_environment_is_an_error_not_one_process(environ, message):
    with pytest.raises(EnvironmentDetectionError, match=message):
        detect_environment(environ)


def test_several_processes_without_a_distributed_backend_never_fall_back(core_only, monkeypatch):
    for key, value in TORCHRUN_2.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(PluginNotInstalledError) as info:
        Accelerator(cpu=True)
    assert "torchrun) says this run has 2 processes" in str(info.value)
    assert "pip install accelerate-ddp" in str(info.value)
    with pytest.raises(ConfigurationError, match="backend 'none' runs a single process"):
        Accelerator(cpu=True, backend="none")


def test_backend_from_environment_variable(monkeypatch):
    from accelerate_core.plugins import PluginManager, set_plugin_manager

    set_plugin_manager(PluginManager(load_entry_points=False))  # as if accelerate-fsdp were absent
    monkeypatch.setenv("ACCELERATE_CORE_BACKEND", "fsdp")
    with pytest.raises(PluginNotInstalledError, match="pip install accelerate-fsdp"):
        PartialState()


def test_second_accelerator_cannot_change_precision_or_backend():
    Accelerator(mixed_precision="bf16", cpu=True)
    assert Accelerator(cpu=True).mixed_precision == "bf16"  # unspecified: the state's
    with pytest.raises(ConfigurationError, match="already uses mixed_precision='bf16'"):
        Accelerator(mixed_precision="fp16", cpu=True)
    with pytest.raises(ConfigurationError, match="already created with backend 'none'"):
        Accelerator(backend="other", cpu=True)


def test_mixed_precision_from_environment_and_case_insensitive(monkeypatch):
    monkeypatch.setenv("ACCELERATE_CORE_MIXED_PRECISION", "BF16")
    assert Accelerator(cpu=True).mixed_precision == "bf16"


def test_split_between_processes_shares():
    from accelerate_core.state import split_for_process

    items = list(range(7))
    shares = [split_for_process(items, i, 3) for i in range(3)]
    assert shares == [[0, 1, 2], [3, 4], [5, 6]]
    padded = [split_for_process(items, i, 3, apply_padding=True) for i in range(3)]
    assert padded == [[0, 1, 2], [3, 4, 4], [5, 6, 6]]
    tensor = torch.arange(5)
    assert torch.equal(split_for_process(tensor, 1, 2), torch.tensor([3, 4]))
    assert torch.equal(split_for_process(tensor, 1, 2, apply_padding=True), torch.tensor([3, 4, 4]))
    split = split_for_process({"a": [1, 2, 3, 4], "b": "wxyz"}, 1, 2)
    assert split == {"a": [3, 4], "b": "yz"}
    with pytest.raises(ConfigurationError, match="same length"):
        split_for_process({"a": [1], "b": [1, 2]}, 0, 2)
    with PartialState().split_between_processes(items) as mine:
        assert mine == items  # one process gets everything
