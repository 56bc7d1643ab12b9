"""Launch settings in one process: config files, precedence, contradictions, spellings, dry run.

Everything here runs in the test process (no workers): the launch's environment is produced by
``LaunchConfig.environment()`` exactly as ``accel launch`` gives it to its processes.
"""

from __future__ import annotations

import json
import shlex

import pytest

from accelerate_core import (
    Accelerator,
    ConfigurationError,
    EnvironmentDetectionError,
    LaunchOption,
    PartialState,
    PluginConflictError,
    hookimpl,
    plugins,
)
from accelerate_core.builtin.environments import first_slurm_host
from accelerate_core.cli.main import main
from accelerate_core.config_files import (
    config_file_to_read,
    default_config_path,
    load_config_file,
    write_config_file,
)
from accelerate_core.launch_options import CONFIG_FILE_ENV, LAUNCH_SOURCES_ENV, NUM_PROCESSES_ENV
from accelerate_core.launch_settings import resolve_launch_config
from accelerate_core.plugins import collect_launch_options
from accelerate_core.process_settings import launch_plugin_options
from accelerate_core.state import detect_environment


@pytest.fixture(autouse=True)
def private_home(tmp_path, monkeypatch):
    """Never read or write the real ~/.cache: the default config lives in the test's tmp dir."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def launched(monkeypatch, command_line=None, config_file=None):
    """Put the environment a launch with these settings gives its processes into os.environ."""
    config = resolve_launch_config(command_line or {}, config_file, collect_launch_options())
    for name, value in config.environment().items():
        monkeypatch.setenv(name, value)
    return config


# --------------------------------------------------------------------------- config files


def test_config_file_round_trip(tmp_path):
    options = collect_launch_options()
    values = {
        "num_processes": 4,
        "num_machines": 2,
        "machine_rank": 1,
        "main_process_ip": "10.0.0.1",
        "main_process_port": 29555,
        "cpu": True,
        "mixed_precision": "bf16",
        "backend": "ddp",
        "gradient_accumulation_steps": 8,
        "device": "cpu",
        "max_restarts": 1,
        "ddp_find_unused_parameters": True,
        "ddp_bucket_cap_mb": 12.5,
        "ddp_comm_hook_options": {"matrix_approximation_rank": 2},
    }
    path = write_config_file(tmp_path / "sub" / "cfg.yaml", values)
    assert load_config_file(path, options) == values
    config = resolve_launch_config({}, path, options)
    unset = ("num_cpu_threads_per_process", "monitor_interval", "log_dir", "tee")
    assert config.values() == {**values, **dict.fromkeys(unset)}
    assert config.sources["num_processes"] == f"config file {path}"
    assert config.plugin_options("backend") == {
        "ddp": {
            "find_unused_parameters": True,
            "bucket_cap_mb": 12.5,
            "comm_hook_options": {"matrix_approximation_rank": 2},
        }
    }


def test_config_file_unknown_keys_list_the_valid_ones(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("num_processes: 2\nnum_gpus: 2\nmixed_precission: bf16\n")
    with pytest.raises(ConfigurationError) as err:
        load_config_file(path, collect_launch_options())
    message = str(err.value)
    assert "unknown key(s) mixed_precission, num_gpus" in message
    assert "valid keys:" in message and "num_processes" in message
    assert "ddp_find_unused_parameters" in message  # plugins' keys are valid keys too


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("num_processes: two\n", "num_processes: expected a int value"),
        ("cpu: maybe\n", "cpu: expected a bool value, got 'maybe'"),
        ("ddp_comm_hook: gzip\n", "'gzip' is not one of fp16, bf16, powersgd"),
        ("- 1\n- 2\n", "must be a mapping"),
        ("num_processes: [1\n", "not valid YAML"),
    ],
)
def test_config_file_bad_values(tmp_path, text, match):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=match):
        load_config_file(path, collect_launch_options())


def test_config_file_location(tmp_path, monkeypatch):
    assert default_config_path() == tmp_path / "cache" / "accelerate_core" / "default_config.yaml"
    assert config_file_to_read(None) is None  # no default file: defaults apply
    monkeypatch.setenv(CONFIG_FILE_ENV, str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigurationError, match="names no file"):
        config_file_to_read(None)
    with pytest.raises(ConfigurationError, match="does not exist; write one with `accel config"):
        config_file_to_read(tmp_path / "nope.yaml")


# --------------------------------------------------------------------------- precedence


def test_command_line_beats_config_file_beats_defaults(tmp_path):
    path = write_config_file(
        tmp_path / "cfg.yaml", {"num_processes": 4, "mixed_precision": "fp16", "cpu": True}
    )
    config = resolve_launch_config({"mixed_precision": "bf16"}, path, collect_launch_options())
    assert (config.num_processes, config.mixed_precision, config.cpu) == (4, "bf16", True)
    assert config.sources["mixed_precision"] == "command line"
    assert config.sources["num_processes"].startswith("config file")
    assert (config.num_machines, config.sources["num_machines"]) == (1, "default")


def test_launch_values_reach_accelerator(monkeypatch):
    launched(
        monkeypatch, {"mixed_precision": "BF16", "gradient_accumulation_steps": 4, "cpu": True}
    )
    accelerator = Accelerator()
    assert accelerator.mixed_precision == "bf16"
    assert accelerator.gradient_accumulation_steps == 4
    assert accelerator.device.type == "cpu"


@pytest.mark.parametrize(
    ("launch", "explicit", "named"),
    [
        (
            {"mixed_precision": "bf16"},
            {"mixed_precision": "no"},
            ["'no'", "--mixed-precision bf16"],
        ),
        (
            {"gradient_accumulation_steps": 4},
            {"gradient_accumulation_steps": 2},
            ["gradient_accumulation_steps=2", "--gradient-accumulation-steps 4"],
        ),
        ({"cpu": True}, {"cpu": False}, ["cpu=False", "`accel launch --cpu`"]),
        ({"backend": "none"}, {"backend": "ddp"}, ["backend='ddp'", "--backend none"]),
    ],
)
def test_explicit_argument_contradicting_the_command_line_is_an_error(
    monkeypatch, launch, explicit, named
):
    launched(monkeypatch, {"cpu": True, **launch})
    with pytest.raises(ConfigurationError, match="contradicts") as err:
        Accelerator(**explicit)
    for text in named:
        assert text in str(err.value)


def test_explicit_argument_beats_the_config_file(tmp_path, monkeypatch):
    path = write_config_file(
        tmp_path / "cfg.yaml",
        {"mixed_precision": "bf16", "gradient_accumulation_steps": 4, "cpu": True},
    )
    launched(monkeypatch, config_file=path)
    accelerator = Accelerator(mixed_precision="no", gradient_accumulation_steps=2)
    assert (accelerator.mixed_precision, accelerator.gradient_accumulation_steps) == ("no", 2)


def test_same_value_explicitly_and_on_the_command_line_is_fine(monkeypatch):
    launched(monkeypatch, {"mixed_precision": "bf16", "cpu": True})
    assert Accelerator(mixed_precision="bf16", cpu=True).mixed_precision == "bf16"


def test_backend_options_from_the_launch_merge_under_explicit_ones(tmp_path, monkeypatch):
    launched(monkeypatch, {"ddp_find_unused_parameters": True, "ddp_bucket_cap_mb": 5.0})
    assert launch_plugin_options("backend", "ddp", {"static_graph": True}) == {
        "find_unused_parameters": True,
        "bucket_cap_mb": 5.0,
        "static_graph": True,
    }
    assert launch_plugin_options("backend", "none", None) == {}  # options of another backend
    with pytest.raises(ConfigurationError) as err:
        launch_plugin_options("backend", "ddp", {"find_unused_parameters": False})
    assert "--ddp-find-unused-parameters true" in str(err.value)
    path = write_config_file(tmp_path / "c.yaml", {"ddp_find_unused_parameters": True})
    launched(monkeypatch, config_file=path)
    merged = launch_plugin_options("backend", "ddp", {"find_unused_parameters": False})
    assert merged == {"find_unused_parameters": False}  # the config file is only a default


def test_plugin_option_for_another_backend_is_refused():
    with pytest.raises(ConfigurationError, match="applies to backend 'ddp' but --backend"):
        resolve_launch_config(
            {"backend": "none", "ddp_static_graph": True}, None, collect_launch_options()
        )


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"num_processes": 3, "num_machines": 2}, "must be a multiple of"),
        ({"num_machines": 2, "num_processes": 2}, "need the address of machine 0"),
        ({"num_machines": 2, "machine_rank": 2, "num_processes": 2}, "must be below"),
        ({"num_processes": 0}, "--num-processes must be >= 1"),
        ({"main_process_port": 70000}, "is not a TCP port"),
    ],
)
def test_impossible_launches_are_refused(values, match):
    with pytest.raises(ConfigurationError, match=match):
        resolve_launch_config(values, None, collect_launch_options())


def test_every_rank_checks_the_world_it_joined(monkeypatch):
    monkeypatch.setenv(NUM_PROCESSES_ENV, "2")
    with pytest.raises(EnvironmentDetectionError) as err:
        PartialState(cpu=True)
    assert "asked for 2 processes" in str(err.value) and "world of 1" in str(err.value)


# --------------------------------------------------------------------------- command line


def test_dry_run_prints_configuration_environment_and_command(tmp_path, capsys):
    path = write_config_file(tmp_path / "cfg.yaml", {"gradient_accumulation_steps": 2})
    code = main(
        ["launch", "--dry-run", "--config-file", str(path), "--cpu", "--num-processes", "2",
         "--mixed-precision", "bf16", "--ddp-comm-hook", "fp16", "train.py", "--lr", "0.1"]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "nothing is started" in out
    assert "num_processes:" in out and "# command line" in out
    assert f"# config file {path}" in out
    command = out.split("command:\n", 1)[1].strip()
    words = shlex.split(command)
    assert words[0] == "env"
    env = dict(w.split("=", 1) for w in words[1:] if "=" in w and w.startswith("ACCELERATE_"))
    assert env["ACCELERATE_CORE_NUM_PROCESSES"] == "2"
    assert env["ACCELERATE_CORE_MIXED_PRECISION"] == "bf16"
    assert env["ACCELERATE_CORE_GRADIENT_ACCUMULATION_STEPS"] == "2"
    assert json.loads(env["ACCELERATE_CORE_BACKEND_OPTIONS"]) == {"ddp": {"comm_hook": "fp16"}}
    sources = json.loads(env[LAUNCH_SOURCES_ENV])
    assert sources["mixed_precision"] == "command line"
    assert sources["gradient_accumulation_steps"] == f"config file {path}"
    torchrun = words[words.index("torch.distributed.run") + 1 :]
    assert "--nproc-per-node=2" in torchrun and "--standalone" in torchrun
    assert torchrun[-3:] == ["train.py", "--lr", "0.1"]


def test_dry_run_one_process_is_the_plain_script(capsys):
    assert main(["launch", "--dry-run", "--cpu", "-m", "pkg.train", "--epochs", "1"]) == 0
    command = shlex.split(capsys.readouterr().out.split("command:\n", 1)[1])
    assert command[-4:] == ["-m", "pkg.train", "--epochs", "1"]
    assert "torch.distributed.run" not in command


def test_dash_and_underscore_spellings_are_the_same_option(tmp_path, capsys):
    dashed = [
        "--num-processes", "2", "--mixed-precision", "bf16", "--gradient-accumulation-steps",
        "3", "--ddp-find-unused-parameters", "--max-restarts", "1",
    ]  # fmt: skip
    underscored = ["--" + a[2:].replace("-", "_") if a.startswith("--") else a for a in dashed]
    outputs = []
    for spelling in (dashed, underscored):
        assert main(["launch", "--dry_run", "--cpu", *spelling, "x.py"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    assert "ACCELERATE_CORE_GRADIENT_ACCUMULATION_STEPS=3" in outputs[0]
    path = tmp_path / "cfg.yaml"
    path.write_text("num-processes: 2\ngradient_accumulation-steps: 3\n")
    config = resolve_launch_config({}, path, collect_launch_options())
    assert (config.num_processes, config.gradient_accumulation_steps) == (2, 3)


def test_launch_errors_name_the_fix(monkeypatch, capsys):
    monkeypatch.setitem(plugins.KNOWN_DISTRIBUTIONS, "nevermind", "accelerate-nevermind")
    assert main(["launch", "--backend", "nevermind", "x.py"]) == 2
    message = "backend 'nevermind' is not installed; pip install accelerate-nevermind"
    assert message in capsys.readouterr().err
    assert main(["launch", "--mixed-precision", "fp12", "x.py"]) == 2
    assert "unknown mixed_precision 'fp12'; valid values:" in capsys.readouterr().err


def test_plugin_launch_options_come_from_the_hook(make_distribution, capsys):
    make_distribution(
        "accelerate-toy",
        {
            "toy_launch_plugin": """
            from accelerate_core import BackendSpec, LaunchOption, hookimpl

            @hookimpl
            def accelerate_core_backends():
                return [BackendSpec("toy")]

            @hookimpl
            def accelerate_core_launch_options():
                return [LaunchOption("toy-shards", "how many shards", "int", backend="toy")]
            """
        },
        {"toy": "toy_launch_plugin"},
    )
    options = {o.name: o for o in collect_launch_options()}
    assert options["toy-shards"].option_key == "shards"
    assert main(["launch", "--dry-run", "--toy_shards", "3", "--backend", "toy", "x.py"]) == 0
    assert '{"toy": {"shards": 3}}' in capsys.readouterr().out


def test_a_launch_option_offered_twice_names_both_distributions(make_distribution):
    make_distribution(
        "accelerate-clash",
        {
            "clash_launch_plugin": """
            from accelerate_core import LaunchOption, hookimpl

            @hookimpl
            def accelerate_core_launch_options():
                return [LaunchOption("ddp-static-graph", type="bool", backend="ddp")]
            """
        },
        {"clash": "clash_launch_plugin"},
    )
    with pytest.raises(PluginConflictError) as err:
        collect_launch_options()
    assert "accelerate-ddp" in str(err.value) and "accelerate-clash" in str(err.value)


def test_the_hook_is_documented_and_plugins_must_target_something():
    from accelerate_core import hookspecs

    assert "backend_options" in hookspecs.accelerate_core_launch_options.__doc__
    assert hookimpl  # plugins implement it with the public marker
    option = LaunchOption("ddp-find-unused-parameters", type="bool", backend="ddp")
    assert (option.dest, option.option_key) == (
        "ddp_find_unused_parameters",
        "find_unused_parameters",
    )


# --------------------------------------------------------------------------- SLURM


def test_slurm_srun_tasks_find_the_rendezvous_without_exports():
    environ = {
        "SLURM_PROCID": "3",
        "SLURM_NTASKS": "4",
        "SLURM_LOCALID": "1",
        "SLURM_STEP_ID": "0",
        "SLURM_TASKS_PER_NODE": "2(x2)",
        "SLURM_NODEID": "1",
        "SLURM_JOB_ID": "123456",
        "SLURM_JOB_NODELIST": "gpu[07-08]",
    }
    info = detect_environment(environ)
    assert (info.source, info.rank, info.world_size, info.local_rank) == ("slurm", 3, 4, 1)
    assert (info.master_addr, info.master_port) == ("gpu07", 15000 + 123456 % 20000)
    exported = detect_environment({**environ, "MASTER_ADDR": "10.1.1.1", "MASTER_PORT": "29400"})
    assert (exported.master_addr, exported.master_port) == ("10.1.1.1", 29400)
    assert first_slurm_host("node-a[3,5-6],node-b1") == "node-a3"
