"""Contract tests for the trackers whose libraries are not installed here.

Comet (needs an account), Aim (installs 37 packages, ~280 MB, and its reader did not return
the runs it wrote in our try), ClearML (a server), DVCLive and SwanLab: a stand-in module
records the calls each tracker makes, and the test checks them against the library API that
Hugging Face Accelerate 1.15's tracker uses. These are contract tests: they prove our side of
the contract, not the library's.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from accelerate_core import Accelerator

pytestmark = pytest.mark.contract


class Calls:
    """Any attribute is a callable that records ``(path, args, kwargs)`` and returns a Calls."""

    def __init__(self, log: list, path: str) -> None:
        self._log, self._path = log, path

    def __getattr__(self, name: str) -> Calls:
        return Calls(self._log, f"{self._path}.{name}")

    def __call__(self, *args: Any, **kwargs: Any) -> Calls:
        self._log.append((self._path, args, kwargs))
        return Calls(self._log, f"{self._path}()")

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            self._log.append((f"{self._path}.{name}=", (value,), {}))

    def __setitem__(self, key: str, value: Any) -> None:
        self._log.append((f"{self._path}[{key}]=", (value,), {}))

    def __bool__(self) -> bool:
        return True


@pytest.fixture
def library(monkeypatch):
    """``library("name", "sub.module", ...)``: stand-in modules recording into one list."""
    log: list = []

    def install(*names: str) -> list:
        for name in names:
            module = types.ModuleType(name)
            module.__getattr__ = lambda attr, n=name: Calls(log, f"{n}.{attr}")
            module.__spec__ = types.SimpleNamespace(name=name, loader=None)
            monkeypatch.setitem(sys.modules, name, module)
        return log

    return install


def run(log_with: str, tmp_path, **init_kwargs: Any) -> None:
    accelerator = Accelerator(cpu=True, log_with=log_with, project_dir=str(tmp_path))
    accelerator.init_trackers("proj", {"lr": 0.1}, init_kwargs={log_with: init_kwargs})
    accelerator.log({"loss": 0.5, "note": "hi", "group": {"a": 1.0}}, step=3)
    accelerator.end_training()


def paths(log: list) -> list[str]:
    return [entry[0] for entry in log]


def test_comet_ml_contract(library, tmp_path):
    log = library("comet_ml")
    run("comet_ml", tmp_path, workspace="w")
    assert log[0] == ("comet_ml.start", (), {"project_name": "proj", "workspace": "w"})
    assert paths(log)[1:] == ["comet_ml.start().log_parameters", "comet_ml.start().set_step",
                              "comet_ml.start().log_metric", "comet_ml.start().log_other",
                              "comet_ml.start().log_metrics", "comet_ml.start().end"]  # fmt: skip
    assert log[3][1:] == (("loss", 0.5), {"step": 3})


def test_aim_contract(library, tmp_path):
    log = library("aim")
    run("aim", tmp_path)
    assert log[0] == ("aim.Run", (), {"repo": str(tmp_path)})
    assert log[1] == ("aim.Run().name=", ("proj",), {})
    assert log[2] == ("aim.Run()[hparams]=", ({"lr": 0.1},), {})
    assert log[3] == ("aim.Run().track", (0.5,), {"name": "loss", "step": 3})
    assert paths(log)[-1] == "aim.Run().close"


def test_clearml_contract(library, tmp_path):
    log = library("clearml")
    sys.modules["clearml"].Task = types.SimpleNamespace(
        current_task=lambda: None, init=Calls(log, "clearml.Task.init")
    )
    with pytest.warns(UserWarning, match="'note' .* is not a number"):
        run("clearml", tmp_path)
    assert log[0] == ("clearml.Task.init", (), {"project_name": "proj", "task_name": "proj"})
    scalars = [e for e in log if e[0].endswith("report_scalar")]
    assert scalars == [(scalars[0][0], (), {"title": "loss", "series": "train", "value": 0.5,
                                            "iteration": 3})]  # fmt: skip


def test_dvclive_contract(library, tmp_path):
    log = library("dvclive", "dvclive.plots")
    sys.modules["dvclive.plots"].Metric = types.SimpleNamespace(
        could_log=lambda v: isinstance(v, (int, float))
    )
    with pytest.warns(UserWarning, match="'(note|group)' .* is not a metric"):
        run("dvclive", tmp_path, dir=str(tmp_path / "dvc"))
    assert log[0] == ("dvclive.Live", (), {"dir": str(tmp_path / "dvc")})
    assert paths(log)[1:] == ["dvclive.Live().log_params", "dvclive.Live().step=",
                              "dvclive.Live().log_metric", "dvclive.Live().next_step",
                              "dvclive.Live().end"]  # fmt: skip


def test_swanlab_contract(library, tmp_path):
    log = library("swanlab")
    run("swanlab", tmp_path, mode="offline")
    assert log[0] == ("swanlab.init", (), {"project": "proj", "mode": "offline"})
    assert log[1] == ("swanlab.config.update", ({"lr": 0.1},), {"allow_val_change": True})
    assert log[2][0] == "swanlab.init().log" and log[2][2] == {"step": 3}
    assert paths(log)[-1] == "swanlab.init().finish"
