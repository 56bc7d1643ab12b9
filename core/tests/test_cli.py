"""The ``accel`` command: console script, ``python -m accelerate_core`` and ``accel env``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from accelerate_core import __version__
from accelerate_core.cli.main import main


def test_module_and_console_script_print_the_version():
    out = subprocess.run(
        [sys.executable, "-m", "accelerate_core", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == f"accelerate-core {__version__}"
    accel = shutil.which("accel", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert accel is not None, "the accel console script is not installed"
    assert subprocess.run([accel, "--version"], capture_output=True, text=True).stdout.strip() == (
        f"accelerate-core {__version__}"
    )


def test_env_json_lists_builtins_and_installed_plugins(make_distribution, capsys):
    make_distribution(
        "accelerate-broken",
        {"broken_env_plugin": "raise ImportError('gone')"},
        {"broken": "broken_env_plugin"},
    )
    with pytest.warns(UserWarning, match="failed to load"):
        assert main(["env", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["accelerate-core"] == __version__
    assert info["backends"]["none"] == "accelerate-core (built-in)"
    assert {"no", "fp16", "bf16"} <= set(info["precisions"])
    assert {"name": "broken", "distribution": "accelerate-broken", "version": "1.0"} in info[
        "entry_points"
    ]
    broken = next(p for p in info["plugins"] if p["name"] == "broken")
    assert (broken["status"], broken["error"]) == ("failed", "ImportError: gone")


def test_env_text_is_readable(core_only, capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert "- torch: " in out and "- backends: none (accelerate-core (built-in))" in out
    assert "- plugins:" in out and "- precisions: bf16 (accelerate-core (built-in))" in out
