"""ParallelismConfig in one process: HF's import paths, fields, names and validation, the launch
options that set it, and what an Accelerator does with it on one process. (Meshes of several
processes: tests/test_nd_parallel.py.)"""

from __future__ import annotations

import shlex
import warnings

import pytest

from accelerate_core import Accelerator, BackendSpec, ConfigurationError
from accelerate_core.cli.main import main
from accelerate_core.launch_settings import resolve_launch_config
from accelerate_core.parallelism import _check_fits
from accelerate_core.parallelism_config import (
    ParallelismConfig,
    TorchContextParallelConfig,
    TorchTensorParallelConfig,
)
from accelerate_core.plugins import collect_launch_options


@pytest.fixture(autouse=True)
def private_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_importable_from_hugging_faces_paths():
    import accelerate_core
    import accelerate_core.utils as utils

    assert accelerate_core.ParallelismConfig is ParallelismConfig
    assert utils.ParallelismConfig is ParallelismConfig
    assert utils.TorchTensorParallelConfig is TorchTensorParallelConfig
    assert utils.TorchContextParallelConfig is TorchContextParallelConfig


def test_defaults_names_and_sizes_follow_hugging_face():
    plain = ParallelismConfig()
    assert [plain.dp_replicate_size, plain.dp_shard_size, plain.tp_size, plain.cp_size] == [1] * 4
    assert (plain.cp_backend, plain.sp_backend, plain.tp_handler, plain.cp_handler) == (
        "torch", "deepspeed", None, None,
    )  # fmt: skip
    assert plain._get_mesh() == () and plain.total_size == 1
    full = ParallelismConfig(dp_replicate_size=2, dp_shard_size=3, tp_size=5, cp_size=7)
    # HF's canonical order: dp_replicate, dp_shard, cp, tp (tp innermost).
    assert full._get_mesh() == (("dp_replicate", "dp_shard", "cp", "tp"), (2, 3, 7, 5))
    assert full.dp_dim_names == ["dp_replicate", "dp_shard"]
    assert full.non_dp_dim_names == ["tp", "cp"]
    assert full.dp_shard_cp_dim_names == ["dp_shard", "cp"]
    assert full.dp_cp_dim_names == ["dp_replicate", "dp_shard", "cp"]
    assert full.fsdp_dim_names == ["dp_replicate", "dp_shard_cp"]
    assert full.active_mesh_dims == ["dp_replicate", "dp_shard", "tp", "cp"]
    assert (full.total_size, full.data_parallel_size, full.non_data_parallel_size) == (210, 6, 35)
    assert isinstance(full.tp_handler, TorchTensorParallelConfig)
    assert full.cp_handler.cp_comm_strategy == "allgather"
    tp_only = ParallelismConfig(tp_size=4)
    assert tp_only._get_mesh() == (("tp",), (4,)) and tp_only.fsdp_dim_names == ["dp_shard_cp"]
    assert tp_only.dp_dim_names == [] and tp_only.dp_shard_cp_dim_names == []
    assert ParallelismConfig(dp_shard_size=2, tp_size=2).to_json()["tp_handler"] == {
        "enable_async_tp": False
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tp_size": 0}, "ParallelismConfig tp_size must be an integer >= 1, got 0"),
        (
            {"dp_shard_size": "2"},
            "ParallelismConfig dp_shard_size must be an integer >= 1, got '2'",
        ),
        ({"cp_size": True}, "ParallelismConfig cp_size must be an integer >= 1, got True"),
        ({"cp_backend": "ring"}, "cp_backend must be one of torch, got 'ring'"),
        ({"tp_size": 2, "dp_replicate_size": 2}, "cannot be combined with pure replication"),
        ({"cp_size": 2, "sp_size": 2}, "exclude each other; set one of them to 1"),
        ({"cp_size": 2, "cp_handler": TorchTensorParallelConfig()}, "needs a TorchContextPara"),
    ],
)
def test_bad_values_are_clear_errors(kwargs, message):
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(")):
        ParallelismConfig(**kwargs)


def test_handlers():
    with pytest.raises(ConfigurationError, match="cp_comm_strategy must be one of allgather"):
        TorchContextParallelConfig(cp_comm_strategy="ring")
    assert TorchContextParallelConfig("alltoall").cp_comm_strategy == "alltoall"
    with pytest.warns(UserWarning, match="async tensor parallelism is not supported"):
        TorchTensorParallelConfig(enable_async_tp=True)


# --------------------------------------------------------------------------- layouts and backends


FSDP_LIKE = BackendSpec("fsdp", parallelism=frozenset({"dp_replicate", "dp_shard", "tp", "cp"}))
DDP_LIKE = BackendSpec("ddp")


def test_every_size_one_gives_the_world_to_the_backends_data_parallel_dim():
    sharded, replicated = ParallelismConfig(), ParallelismConfig()
    _check_fits(sharded, 4, FSDP_LIKE)
    _check_fits(replicated, 4, DDP_LIKE)  # HF would use dp_replicate for both
    assert (sharded.dp_shard_size, sharded.dp_replicate_size) == (4, 1)
    assert (replicated.dp_shard_size, replicated.dp_replicate_size) == (1, 4)


def test_a_backend_must_apply_every_enabled_dimension():
    _check_fits(ParallelismConfig(dp_replicate_size=4), 4, DDP_LIKE)  # plain data parallelism
    with pytest.raises(ConfigurationError) as err:
        _check_fits(ParallelismConfig(dp_shard_size=2, tp_size=2), 4, DDP_LIKE)
    assert str(err.value) == (
        "dp_shard_size=2, tp_size=2 needs a backend that applies sharded data parallelism and "
        "tensor parallelism, but backend 'ddp' applies none of them; select backend 'fsdp' "
        "(Accelerator(backend='fsdp') or accel launch --backend fsdp; pip install "
        "accelerate-fsdp)"
    )
    with pytest.raises(ConfigurationError, match="= 8 processes, but this run has 4"):
        _check_fits(ParallelismConfig(dp_shard_size=4, tp_size=2), 4, FSDP_LIKE)


# --------------------------------------------------------------------------- one process


def test_one_process_has_no_mesh_and_hf_rank_properties(monkeypatch):
    from accelerate_core import context_parallel

    monkeypatch.setattr(context_parallel, "_warned_inactive", False)
    accelerator = Accelerator(cpu=True, parallelism_config=ParallelismConfig())
    assert accelerator.torch_device_mesh is None
    assert accelerator.parallelism_config.total_size == 1
    assert (accelerator.tensor_parallel_rank, accelerator.data_parallel_rank) == (0, 0)
    assert (accelerator.data_parallel_shard_rank, accelerator.context_parallel_rank) == (0, 0)
    with pytest.warns(UserWarning, match="context parallelism is not enabled"):
        context = accelerator.maybe_context_parallel(buffers=[], buffer_seq_dims=[])
    with context:  # a no-op
        pass


def test_rank_properties_without_a_config_raise_like_hf():
    accelerator = Accelerator(cpu=True)
    assert accelerator.parallelism_config is None and accelerator.torch_device_mesh is None
    with pytest.raises(RuntimeError, match="pass parallelism_config"):
        accelerator.tensor_parallel_rank  # noqa: B018


def test_sizes_for_more_processes_than_the_run_has_are_refused():
    with pytest.raises(ConfigurationError) as err:
        Accelerator(cpu=True, backend="none", parallelism_config=ParallelismConfig(tp_size=2))
    assert "tp_size=2 x cp_size=1 = 2 processes, but this run has 1" in str(err.value)


# --------------------------------------------------------------------------- launch


def launched(monkeypatch, command_line):
    config = resolve_launch_config(command_line, None, collect_launch_options())
    for name, value in config.environment().items():
        monkeypatch.setenv(name, value)
    return config


def test_launch_options_set_the_config_with_hugging_faces_variables(monkeypatch):
    env = launched(
        monkeypatch,
        {"num_processes": 4, "parallelism_config_dp_shard_size": 2,
         "parallelism_config_tp_size": 2, "parallelism_config_cp_comm_strategy": "alltoall"},
    ).environment()  # fmt: skip
    assert env["ACCELERATE_USE_PARALLELISM_CONFIG"] == "true"
    assert env["PARALLELISM_CONFIG_DP_SHARD_SIZE"] == "2"
    assert env["PARALLELISM_CONFIG_TP_SIZE"] == "2"
    config = ParallelismConfig()  # reads them, as HF's does
    assert (config.dp_shard_size, config.tp_size, config.cp_size) == (2, 2, 1)
    assert TorchContextParallelConfig().cp_comm_strategy == "alltoall"
    with pytest.raises(ConfigurationError) as err:
        ParallelismConfig(tp_size=4)
    assert str(err.value) == (
        "ParallelismConfig(tp_size=4) contradicts `accel launch --parallelism-config-tp-size "
        "2`; remove the argument from the script or the option from the launch"
    )
    assert ParallelismConfig(tp_size=2).tp_size == 2


def test_use_parallelism_config_alone_makes_the_accelerator_build_one(monkeypatch):
    launched(monkeypatch, {"num_processes": 1, "use_parallelism_config": True, "cpu": True})
    monkeypatch.delenv("ACCELERATE_CORE_NUM_PROCESSES")
    accelerator = Accelerator()
    assert isinstance(accelerator.parallelism_config, ParallelismConfig)


def test_launch_refuses_sizes_that_do_not_multiply_to_the_processes(capsys):
    argv = ["launch", "--dry-run", "--cpu", "--num-processes", "4",
            "--parallelism-config-dp-shard-size", "2",
            "--parallelism_config_tp_size", "4", "x.py"]  # fmt: skip
    assert main(argv) == 2
    assert (
        "--parallelism-config-dp-shard-size=2 x --parallelism-config-tp-size=4 = 8 processes "
        "but --num-processes is 4; the parallelism sizes must multiply to the number of "
        "processes" in capsys.readouterr().err
    )
    argv[argv.index("4", 6)] = "2"
    assert main(argv) == 0
    command = shlex.split(capsys.readouterr().out.split("command:\n", 1)[1])
    assert "PARALLELISM_CONFIG_TP_SIZE=2" in command
    assert "ACCELERATE_USE_PARALLELISM_CONFIG=true" in command


def test_config_file_keys(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("num_processes: 4\nparallelism_config_dp_replicate_size: 2\n"
                    "parallelism-config-dp-shard-size: 2\n")  # fmt: skip
    config = resolve_launch_config({}, path, collect_launch_options())
    env = config.environment()
    assert env["PARALLELISM_CONFIG_DP_REPLICATE_SIZE"] == "2"
    assert env["PARALLELISM_CONFIG_DP_SHARD_SIZE"] == "2"


def test_context_parallel_buffers_are_checked_before_torch_sees_them():
    from accelerate_core.context_parallel import _check_buffers

    ids = __import__("torch").zeros(1, 6)
    with pytest.raises(ConfigurationError, match="got 1 buffers and 2 buffer_seq_dims"):
        _check_buffers([ids], [1, 1], None, 4)
    with pytest.raises(ConfigurationError, match="sequence length 6, which the 4 context"):
        _check_buffers([ids], [1], None, 4)
    with pytest.raises(ConfigurationError, match="buffer_seq_dims\\[0\\]=2 is not one of them"):
        _check_buffers([ids], [2], None, 2)
    with pytest.raises(ConfigurationError, match="must be a subset of buffers"):
        _check_buffers([ids], [1], {ids.clone()}, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _check_buffers([ids], [1], {ids}, 2)


def test_hugging_face_config_files_parallelism_section(tmp_path, capsys):
    """What `accelerate config` writes for N-D parallelism launches the same way."""
    path = tmp_path / "hf.yaml"
    path.write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: FSDP\nnum_processes: 4\n"
        "use_cpu: true\nparallelism_config:\n  parallelism_config_dp_shard_size: 2\n"
        "  parallelism_config_tp_size: 2\n"
    )
    assert main(["launch", "--dry-run", "--config-file", str(path), "x.py"]) == 0
    command = shlex.split(capsys.readouterr().out.split("command:\n", 1)[1])
    assert "PARALLELISM_CONFIG_DP_SHARD_SIZE=2" in command
    assert "PARALLELISM_CONFIG_TP_SIZE=2" in command
    assert "ACCELERATE_CORE_BACKEND=fsdp" in command
