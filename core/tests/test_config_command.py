"""``accel config``: the questionnaire, ``default`` and ``show``, always in a temporary home."""

from __future__ import annotations

import io

import pytest
import yaml

from accelerate_core.cli.main import main
from accelerate_core.config_files import default_config_path
from accelerate_core.launch_options import CONFIG_FILE_ENV


@pytest.fixture(autouse=True)
def private_home(tmp_path, monkeypatch):
    """Never read or write the real ~/.cache: the default config lives in the test's tmp dir."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def answer(monkeypatch, *lines: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(f"{line}\n" for line in lines)))


def test_questionnaire_writes_a_yaml_that_launch_reads(tmp_path, monkeypatch, capsys):
    path = tmp_path / "cfg.yaml"
    answer(
        monkeypatch,
        "2",  # machines
        "1",  # machine rank
        "10.0.0.5",  # main ip
        "",  # port: default 29500
        "yes",  # cpu
        "three",  # not an int: asked again
        "4",  # processes
        "ddp",  # backend
        "bf16",  # precision
        "2",  # accumulation
        "",  # restarts
        "y",  # ddp find unused parameters
        *[""] * 6,  # the other ddp options: not set
    )
    assert main(["config", "--config-file", str(path)]) == 0
    assert "expected a int value, got 'three'; try again" in capsys.readouterr().out
    written = yaml.safe_load(path.read_text())
    assert written == {
        "num_machines": 2,
        "machine_rank": 1,
        "main_process_ip": "10.0.0.5",
        "main_process_port": 29500,
        "cpu": True,
        "num_processes": 4,
        "backend": "ddp",
        "mixed_precision": "bf16",
        "gradient_accumulation_steps": 2,
        "max_restarts": 0,
        "ddp_find_unused_parameters": True,
    }
    assert main(["launch", "--dry-run", "--config-file", str(path), "x.py"]) == 0
    out = capsys.readouterr().out
    assert "--nnodes=2" in out and "--node-rank=1" in out and "--master-addr=10.0.0.5" in out
    assert '{"ddp": {"find_unused_parameters": true}}' in out


def test_questionnaire_with_closed_stdin_writes_nothing(tmp_path, monkeypatch, capsys):
    answer(monkeypatch, "1")
    assert main(["config"]) == 1
    assert "standard input closed" in capsys.readouterr().err
    assert not default_config_path().exists()


def test_default_then_show_then_launch_uses_it(tmp_path, monkeypatch, capsys):
    assert main(["config", "default"]) == 0
    path = default_config_path()
    assert path == tmp_path / "cache" / "accelerate_core" / "default_config.yaml"
    assert yaml.safe_load(path.read_text())["mixed_precision"] == "no"
    assert main(["config", "default"]) == 1
    assert "exists; pass --force" in capsys.readouterr().err
    assert main(["config", "default", "--force"]) == 0
    capsys.readouterr()
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# {path}\n") and "accel launch would use:" in out
    assert main(["launch", "--dry-run", "x.py"]) == 0  # the default file is read
    assert f"config file: {path}" in capsys.readouterr().out


def test_show_reports_bad_keys_and_env_var_location(tmp_path, monkeypatch, capsys):
    path = tmp_path / "elsewhere.yaml"
    path.write_text("num_processes: 2\ngpus: 2\n")
    monkeypatch.setenv(CONFIG_FILE_ENV, str(path))
    assert main(["config", "show"]) == 1
    err = capsys.readouterr().err
    assert "unknown key(s) gpus" in err and "valid keys:" in err
    assert main(["launch", "x.py"]) == 2  # launch refuses it too
    assert "unknown key(s) gpus" in capsys.readouterr().err
    assert main(["config", "show", "--config-file", str(tmp_path / "none.yaml")]) == 1
    assert "no config file at" in capsys.readouterr().err
