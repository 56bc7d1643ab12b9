"""Trackers run for real and what they wrote is read back with each library's own reader.

Each test trains the same tiny regression with ``Accelerator(log_with=...)``, logs the loss
tensor of every step, and compares what the library stored with the losses of a hand-written
loop. On 2 processes exactly one run is written. TensorBoard, MLflow (local file store), W&B
(offline) and trackio run here; the other trackers are contract tests
(``test_tracking_contracts.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from accelerate_core import Accelerator
from accelerate_core.testing import run_distributed

from tracker_readers import (  # isort: skip
    event_dirs, mlflow_runs, regression_problem, tensorboard_run, training_losses,
    wandb_run, wandb_run_files,
)  # fmt: skip

STEPS = 5
CONFIG = {"lr": 0.1, "batch_size": 8, "optimizer": {"name": "sgd", "momentum": 0.0},
          "layers": [4, 1], "dtype": torch.float32}  # fmt: skip


def offline_env(root: Path) -> dict[str, str]:
    """No network: W&B offline, MLflow on a local file store, trackio in the test directory."""
    return {
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(root),
        "WANDB_SILENT": "true",
        "WANDB_DISABLE_GIT": "true",
        "MLFLOW_TRACKING_URI": f"file:{root / 'mlruns'}",
        "MLFLOW_ALLOW_FILE_STORE": "true",  # MLflow 3 asks for an opt-in to its file store
        "TRACKIO_DIR": str(root / "trackio"),
    }


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, value in offline_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    return tmp_path


def train_and_log(log_with: str, project_dir: str, init_kwargs: dict | None = None) -> int:
    """The tracking recipe: returns how many trackers run on this process."""
    accelerator = Accelerator(cpu=True, log_with=log_with, project_dir=project_dir)
    model, optimizer, data = regression_problem()
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.init_trackers("regression", CONFIG, init_kwargs=init_kwargs)
    for step in range(STEPS):
        x, y = data[step]
        loss = torch.nn.functional.mse_loss(model(x), y)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        accelerator.log({"loss": loss.detach(), "step_text": f"step {step}"}, step=step)
    running = len(accelerator.trackers)
    accelerator.end_training()
    accelerator.end_training()  # safe twice
    return running


def two_process_run(log_with: str, root: str) -> int:
    os.environ.update(offline_env(Path(root)))
    return train_and_log(log_with, os.path.join(root, "project"))


def expected_losses() -> list[tuple[int, float]]:
    return list(enumerate(training_losses(STEPS)))


def assert_close(found: list[tuple[int, float]], expected: list[tuple[int, float]]) -> None:
    assert [s for s, _ in found] == [s for s, _ in expected]
    assert [v for _, v in found] == pytest.approx([v for _, v in expected], rel=1e-6)


# --------------------------------------------------------------------------- TensorBoard


def check_tensorboard(project: Path) -> None:
    (run_dir,) = event_dirs(project)  # one run, hparams in the same directory
    assert run_dir == project / "regression"
    run = tensorboard_run(run_dir)
    assert set(run["scalars"]) == {"loss"}
    assert_close(run["scalars"]["loss"], expected_losses())
    assert run["hparams"] == {"lr": 0.1, "batch_size": 8.0, "optimizer/name": "sgd",
                              "optimizer/momentum": 0.0, "layers": "[4, 1]",
                              "dtype": "torch.float32"}  # fmt: skip
    assert run["text"]["step_text/text_summary"][-1] == (STEPS - 1, f"step {STEPS - 1}")
    assert (run_dir / "hparams.yml").exists()


def test_tensorboard_holds_every_step_and_the_config(tmp_path):
    with pytest.warns(UserWarning, match=r"layers \(list\), dtype \(dtype\)"):
        assert train_and_log("tensorboard", str(tmp_path)) == 1
    check_tensorboard(tmp_path)


@pytest.mark.multiprocess
def test_tensorboard_on_two_processes_writes_one_run(tmp_path):
    running = run_distributed(two_process_run, "tensorboard", str(tmp_path), nprocs=2)
    assert running == [1, 0]
    check_tensorboard(tmp_path / "project")


# --------------------------------------------------------------------------- MLflow


def check_mlflow(root: Path) -> None:
    (run,) = mlflow_runs(f"file:{root / 'mlruns'}", "regression")
    assert run["status"] == "FINISHED"
    assert run["params"] == {"lr": "0.1", "batch_size": "8", "optimizer/name": "sgd",
                             "optimizer/momentum": "0.0", "layers": "[4, 1]",
                             "dtype": "torch.float32"}  # fmt: skip
    assert set(run["metrics"]) == {"loss"}  # the text value is reported, not stored
    assert_close(run["metrics"]["loss"], expected_losses())


def test_mlflow_store_holds_the_params_and_the_metric_history(offline):
    with pytest.warns(UserWarning, match="'step_text' .* not a number"):
        assert train_and_log("mlflow", str(offline)) == 1
    check_mlflow(offline)


@pytest.mark.multiprocess
def test_mlflow_on_two_processes_writes_one_run(offline):
    assert run_distributed(two_process_run, "mlflow", str(offline), nprocs=2) == [1, 0]
    check_mlflow(offline)


# --------------------------------------------------------------------------- W&B


def check_wandb(root: Path) -> None:
    (run_file,) = wandb_run_files(root)
    run = wandb_run(run_file)
    assert run["project"] == "regression"
    assert run["config"] == {"lr": 0.1, "batch_size": 8, "layers": [4, 1],
                             "optimizer": {"name": "sgd", "momentum": 0.0},
                             "dtype": "torch.float32"}  # fmt: skip
    found = [(h["_step"], h["loss"]) for h in run["history"]]
    assert_close(found, expected_losses())
    assert [h["step_text"] for h in run["history"]] == [f"step {s}" for s in range(STEPS)]


def test_wandb_offline_run_holds_the_config_and_history(offline):
    assert train_and_log("wandb", str(offline)) == 1
    check_wandb(offline)


@pytest.mark.multiprocess
def test_wandb_on_two_processes_writes_one_run(tmp_path):
    assert run_distributed(two_process_run, "wandb", str(tmp_path), nprocs=2) == [1, 0]
    check_wandb(tmp_path)


# --------------------------------------------------------------------------- trackio


def test_trackio_stores_the_config_and_every_step(offline):
    from trackio.sqlite_storage import SQLiteStorage

    assert train_and_log("trackio", str(offline), {"trackio": {"name": "run-1"}}) == 1
    logs = SQLiteStorage.get_logs(project="regression", run="run-1")
    found = [(row["step"], row["loss"]) for row in logs if "loss" in row]
    assert_close(found, expected_losses())
    config = SQLiteStorage.get_run_config(project="regression", run="run-1")
    assert config["lr"] == 0.1 and config["optimizer"] == {"name": "sgd", "momentum": 0.0}
