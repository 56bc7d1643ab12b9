"""``log_with`` / ``init_trackers`` / ``log`` / ``get_tracker`` / ``end_training`` semantics.

A recording ``GeneralTracker`` (a real user-written tracker, not a mock of a library) shows what
the core calls and with what; selection errors are asserted by message. The libraries themselves
are exercised in ``test_tracking_libraries.py``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from accelerate_core import (
    Accelerator,
    ConfigurationError,
    PluginNotInstalledError,
    ProjectConfiguration,
    TrackerError,
)
from accelerate_core.testing import run_distributed
from accelerate_core.tracker_set import REGISTERED_CLASSES
from accelerate_core.tracking import (
    GeneralTracker,
    LoggerType,
    NoOpTracker,
    TensorBoardTracker,
    get_available_trackers,
    register_tracker_class,
)
from accelerate_core.utils import LoggerType as UtilsLoggerType


class Recorder(GeneralTracker):
    """Records every call; ``fail_in`` names a method that raises."""

    name = "recorder"
    requires_logging_directory = False

    def __init__(self, run_name: str = "instance", fail_in: str | None = None, **kwargs):
        super().__init__()
        self.run_name, self.kwargs, self.fail_in = run_name, kwargs, fail_in
        self.calls: list[tuple] = []

    @property
    def tracker(self):
        return ("run", self.run_name)

    def _record(self, *call):
        self.calls.append(call)
        if self.fail_in == call[0]:
            raise OSError(f"disk full in {call[0]}")

    def start(self):
        self._record("start")

    def store_init_configuration(self, values):
        self._record("config", values)

    def log(self, values, step=None, **kwargs):
        self._record("log", values, step, kwargs)

    def log_images(self, values, step=None, **kwargs):
        self._record("images", values, step)

    def finish(self):
        self._record("finish")


class EveryProcess(Recorder):
    name = "every-process"
    main_process_only = False


@pytest.fixture
def registered():
    yield
    REGISTERED_CLASSES.clear()


def test_a_custom_tracker_sees_config_numbers_and_one_finish():
    tracker = Recorder()
    accelerator = Accelerator(cpu=True, log_with=[tracker, tracker])  # the same one once
    assert accelerator.log_with == [tracker]
    accelerator.init_trackers("proj", config={"lr": 0.5})
    accelerator.log({"loss": torch.tensor(0.25), "acc": torch.tensor([3]), "n": 2,
                     "grouped": {"a": torch.tensor(1.5)}}, step=7,
                    log_kwargs={"recorder": {"commit": True}, "other": {"x": 1}})  # fmt: skip
    accelerator.end_training()
    accelerator.end_training()
    assert tracker.calls == [
        ("start",),
        ("config", {"lr": 0.5}),
        ("log", {"loss": 0.25, "acc": 3, "n": 2, "grouped": {"a": 1.5}}, 7, {"commit": True}),
        ("finish",),
    ]
    logged = tracker.calls[2][1]
    assert type(logged["loss"]) is float and type(logged["acc"]) is int


def test_a_multi_element_tensor_reaches_the_tracker_unchanged():
    tracker = Recorder()
    accelerator = Accelerator(cpu=True, log_with=tracker)
    accelerator.init_trackers("proj")
    histogram = torch.arange(3.0)
    accelerator.log({"weights": histogram})
    assert tracker.calls[-1][1]["weights"] is histogram


def test_log_before_init_and_without_trackers_does_nothing():
    tracker = Recorder()
    Accelerator(cpu=True, log_with=tracker).log({"loss": 1.0})
    assert tracker.calls == []
    Accelerator(cpu=True).log({"loss": 1.0})


def test_a_tracker_without_its_attributes_is_refused_by_name():
    class Incomplete(GeneralTracker):
        pass

    with pytest.raises(NotImplementedError, match=r"`name`, `requires_logging_directory`, "
                       r"`tracker`"):  # fmt: skip
        Incomplete()


def test_an_unknown_name_lists_the_known_trackers():
    with pytest.raises(PluginNotInstalledError) as caught:
        Accelerator(cpu=True, log_with=["tensorboard", "tensorbord"], project_dir=".")
    message = str(caught.value)
    assert message.startswith("log_with: unknown tracker 'tensorbord'; known trackers: aim, "
                              "clearml, comet_ml, dvclive, mlflow, swanlab, tensorboard, "
                              "trackio, wandb (installed: ")  # fmt: skip


@pytest.mark.skipif(importlib.util.find_spec("comet_ml") is not None, reason="comet_ml installed")
def test_a_tracker_whose_library_is_missing_names_the_pip_install():
    expected = "log_with selects tracker 'comet_ml' but its library (comet_ml) is not installed; "
    with pytest.raises(PluginNotInstalledError, match=re.escape(expected + "pip install comet-ml")):
        Accelerator(cpu=True, log_with=LoggerType.COMETML)


def test_a_tracker_that_writes_files_needs_a_logging_directory():
    with pytest.raises(ConfigurationError, match=r"pass Accelerator\(project_dir=\.\.\.\)"):
        Accelerator(cpu=True, log_with="tensorboard")
    accelerator = Accelerator(
        cpu=True, log_with="tensorboard", project_config=ProjectConfiguration(logging_dir="logs")
    )
    assert accelerator.logging_dir == "logs" and accelerator.project_dir is None


def test_project_dir_sets_the_logging_directory_unless_one_is_given():
    assert Accelerator(cpu=True, project_dir="runs").logging_dir == "runs"
    config = ProjectConfiguration(project_dir="runs", logging_dir="tb")
    assert Accelerator(cpu=True, project_config=config).logging_dir == "tb"


def test_all_selects_every_tracker_whose_library_is_installed(tmp_path):
    tracker = Recorder()
    accelerator = Accelerator(cpu=True, log_with=["all", tracker], project_dir=str(tmp_path))
    installed = [n for n in ("mlflow", "tensorboard", "trackio", "wandb")
                 if importlib.util.find_spec(n) is not None]  # fmt: skip
    assert [str(e) for e in accelerator.log_with[1:]] == installed
    assert accelerator.log_with[0] is tracker
    assert [str(t) for t in get_available_trackers()] == installed
    with pytest.raises(ConfigurationError, match="log_with='all' selects tracker 'tensorboard'"):
        Accelerator(cpu=True, log_with="all")


def test_a_class_instead_of_an_instance_says_what_to_pass():
    with pytest.raises(ConfigurationError, match=r"pass an instance \(Recorder\(...\)\)"):
        Accelerator(cpu=True, log_with=Recorder)


def test_a_crash_in_log_names_the_tracker_and_end_training_still_finishes_the_others():
    broken, healthy = Recorder(fail_in="log"), EveryProcess()
    accelerator = Accelerator(cpu=True, log_with=[broken, healthy])
    accelerator.init_trackers("proj")
    with pytest.raises(TrackerError, match=r"^tracker 'recorder' failed in log\(\): OSError: "
                       r"disk full in log$") as caught:  # fmt: skip
        accelerator.log({"loss": 1.0})
    assert isinstance(caught.value.__cause__, OSError)
    broken.fail_in = "finish"
    with pytest.raises(TrackerError, match=r"tracker 'recorder' failed in finish\(\)"):
        accelerator.end_training()
    assert healthy.calls[-1] == ("finish",)
    accelerator.end_training()  # nothing left to finish
    assert broken.calls.count(("finish",)) == 1


def test_a_crash_in_start_names_the_tracker():
    accelerator = Accelerator(cpu=True, log_with=Recorder(fail_in="start"))
    with pytest.raises(TrackerError, match=r"tracker 'recorder' failed in start\(\)"):
        accelerator.init_trackers("proj")


def test_init_trackers_twice_is_refused_until_end_training():
    accelerator = Accelerator(cpu=True, log_with=Recorder())
    accelerator.init_trackers("one")
    with pytest.raises(ConfigurationError, match="already called"):
        accelerator.init_trackers("two")
    accelerator.end_training()
    accelerator.init_trackers("two")


def test_get_tracker_returns_the_tracker_or_its_run(tmp_path):
    accelerator = Accelerator(cpu=True, log_with=[Recorder("r")])
    assert isinstance(accelerator.get_tracker("recorder"), NoOpTracker)  # before init_trackers
    accelerator.init_trackers("proj")
    assert accelerator.get_tracker("recorder") is accelerator.trackers[0]
    assert accelerator.get_tracker("recorder", unwrap=True) == ("run", "r")
    with pytest.raises(ConfigurationError, match="'wandb' is not a tracker of this Accelerator; "
                       "its trackers: recorder"):  # fmt: skip
        accelerator.get_tracker("wandb")


def test_registered_classes_are_selected_by_name_with_init_kwargs(registered):
    register_tracker_class(Recorder)
    accelerator = Accelerator(cpu=True, log_with="recorder")
    accelerator.init_trackers("proj", init_kwargs={"recorder": {"tags": ["a"]}})
    (tracker,) = accelerator.trackers
    assert (tracker.run_name, tracker.kwargs) == ("proj", {"tags": ["a"]})
    with pytest.warns(UserWarning, match="tracker 'tensorboard' is already registered"):
        register_tracker_class(type("Shadow", (Recorder,), {"name": "tensorboard"}))
    with pytest.raises(ValueError, match="subclass of GeneralTracker"):
        register_tracker_class(dict)


def test_logger_type_is_hugging_faces_enum():
    assert UtilsLoggerType is LoggerType
    assert str(LoggerType.WANDB) == "wandb" and "wandb" in LoggerType and "x" not in LoggerType
    assert LoggerType.list()[:3] == ["all", "aim", "tensorboard"]


def test_builtin_classes_import_no_library():
    code = ("import sys, accelerate_core.tracking; "
            "print(sorted(m for m in ('wandb', 'mlflow', 'tensorboard', 'trackio', 'aim') "
            "if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert TensorBoardTracker("run", "dir").writer is None


# --------------------------------------------------------------------------- system metrics


def test_step_time_and_memory_are_logged_when_asked(tmp_path):
    tracker = Recorder()
    accelerator = Accelerator(cpu=True, log_with=tracker, track_memory=str(tmp_path),
                              log_system_metrics=True)  # fmt: skip
    accelerator.init_trackers("proj")
    accelerator.log({"loss": 1.0}, step=0)
    accelerator.log({"loss": 0.5}, step=4)
    accelerator.end_training()
    first, second = tracker.calls[1][1], tracker.calls[2][1]
    assert "system/step_time_s" not in first and second["system/step_time_s"] > 0
    assert second["system/cpu_rss_mib"] > 10
    assert set(second) == {"loss", "system/step_time_s", "system/cpu_rss_mib"}


def test_memory_metrics_need_the_memory_tracker():
    with pytest.raises(ConfigurationError, match="pass track_memory=True"):
        Accelerator(cpu=True, log_system_metrics=["memory"])
    with pytest.raises(ConfigurationError, match="unknown 'gpu'"):
        Accelerator(cpu=True, log_system_metrics="gpu")


# --------------------------------------------------------------------------- processes


def two_process_tracking() -> dict:
    main_only, everywhere = Recorder(), EveryProcess()
    accelerator = Accelerator(cpu=True, log_with=[main_only, everywhere])
    accelerator.init_trackers("proj", {"lr": 1})
    accelerator.log({"loss": torch.tensor(float(accelerator.process_index))}, step=1)
    tracker = accelerator.get_tracker("recorder")
    tracker.log_images({"x": []}, step=1)  # harmless where the tracker does not run
    accelerator.end_training()
    return {"main_only": main_only.calls, "everywhere": everywhere.calls,
            "get_tracker": type(tracker).__name__}  # fmt: skip


@pytest.mark.multiprocess
def test_trackers_run_on_the_main_process_unless_they_opt_out():
    rank0, rank1 = run_distributed(two_process_tracking, nprocs=2)
    expected = [("start",), ("config", {"lr": 1}), ("log", {"loss": 0.0}, 1, {}), ("finish",)]
    assert rank0["main_only"] == [*expected[:3], ("images", {"x": []}, 1), ("finish",)]
    assert rank0["get_tracker"] == "Recorder"
    assert rank1["main_only"] == [] and rank1["get_tracker"] == "NoOpTracker"
    assert rank0["everywhere"] == expected
    assert rank1["everywhere"] == [*expected[:2], ("log", {"loss": 1.0}, 1, {}), ("finish",)]


def unknown_tracker_on_every_rank() -> str:
    try:
        Accelerator(cpu=True, log_with="nope")
    except PluginNotInstalledError as exc:
        return str(exc).split(";")[0]
    return "no error"


@pytest.mark.multiprocess
def test_a_bad_log_with_is_the_same_error_on_every_rank():
    assert (
        run_distributed(unknown_tracker_on_every_rank, nprocs=2)
        == ["log_with: unknown tracker 'nope'"] * 2
    )


# --------------------------------------------------------------------------- third party

THIRD_PARTY = """
from accelerate_core import TrackerSpec, hookimpl
from accelerate_core.tracking import GeneralTracker

class JsonLinesTracker(GeneralTracker):
    name = "jsonlines"
    requires_logging_directory = True

    def __init__(self, run_name, logging_dir, **kwargs):
        super().__init__()
        self.path = f"{logging_dir}/{run_name}.jsonl"

    def start(self):
        import jsonlines_lib  # the "library", imported only when used
        self.file = open(self.path, "w")

    @property
    def tracker(self):
        return self.file

    def log(self, values, step=None, **kwargs):
        import json
        self.file.write(json.dumps({"step": step, **values}) + "\\n")

    def finish(self):
        self.file.close()

@hookimpl
def accelerate_core_trackers():
    return [TrackerSpec("jsonlines", "pip install jsonlines-lib", ("jsonlines_lib",), True,
                        "one JSON line per log call")]

@hookimpl
def accelerate_core_tracker_class(name):
    return JsonLinesTracker if name == "jsonlines" else None
"""


def test_a_third_party_tracker_is_added_by_installing_a_distribution(make_distribution, tmp_path):
    site = make_distribution("jsonlines-tracker", modules={"jsonlines_tracker": THIRD_PARTY},
                             entry_points={"jsonlines": "jsonlines_tracker"})  # fmt: skip
    with pytest.raises(PluginNotInstalledError, match=r"pip install jsonlines-lib$"):
        Accelerator(cpu=True, log_with="jsonlines", project_dir=str(tmp_path))
    (site / "jsonlines_lib.py").write_text("")
    importlib.invalidate_caches()
    accelerator = Accelerator(cpu=True, log_with="jsonlines", project_dir=str(tmp_path))
    accelerator.init_trackers("run")
    accelerator.log({"loss": torch.tensor(0.5)}, step=3)
    accelerator.end_training()
    assert (tmp_path / "run.jsonl").read_text() == '{"step": 3, "loss": 0.5}\n'
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, "-m", "accelerate_core", "env", "--json"], env=env,
                          capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    trackers = json.loads(done.stdout)["trackers"]
    assert trackers["jsonlines"] == {"distribution": "jsonlines-tracker 1.0", "installed": True,
                                     "install": "pip install jsonlines-lib"}  # fmt: skip
    assert trackers["tensorboard"]["distribution"] == "accelerate-core (built-in)"


# --------------------------------------------------------------------------- tqdm


def progress_bars() -> list[bool]:
    from accelerate_core.utils import tqdm

    return [tqdm(range(2)).disable, tqdm(range(2), main_process_only=False).disable]


@pytest.mark.multiprocess
def test_tqdm_shows_one_bar_per_machine():
    assert run_distributed(progress_bars, nprocs=2) == [[False, False], [True, False]]


def test_tqdm_refuses_a_boolean_first_argument():
    from accelerate_core.utils import tqdm

    assert list(tqdm(range(3))) == [0, 1, 2]
    with pytest.raises(ValueError, match="main_process_only as a keyword"):
        tqdm(True, range(3))
