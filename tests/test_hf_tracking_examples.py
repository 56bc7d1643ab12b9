"""Hugging Face's tracking examples, ported by renaming the import, write TensorBoard runs.

``examples/by_feature/tracking.py`` and ``examples/complete_nlp_example.py --with_tracking``
come from a Hugging Face Accelerate source tree (``HF_ACCELERATE_SOURCE``: a checkout or a bare
git repository; skipped without one), with ``accelerate`` replaced by ``accelerate_core`` in
their import lines and nothing else. Offline stand-ins replace transformers, datasets and
evaluate (``tests/hf_ports/README.md``, shared with the other ported examples).
``log_with="all"`` starts every installed tracker (TensorBoard, MLflow, W&B offline, trackio
here); the TensorBoard run is read back with
TensorBoard's reader and must hold, for each epoch, exactly what the script printed.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "core" / "tests"))
from tracker_readers import event_dirs, mlflow_runs, tensorboard_run, wandb_run, wandb_run_files  # noqa: E402

SOURCE = Path(os.environ.get("HF_ACCELERATE_SOURCE", "/work/.mirror/huggingface+accelerate/repo"))
IMPORT_LINE = re.compile(r"^(\s*)(from|import) accelerate(?=[\s.])", re.MULTILINE)


def hf_file(path: str) -> str:
    if (SOURCE / path).is_file():
        return (SOURCE / path).read_text()
    done = subprocess.run(["git", "-C", str(SOURCE), "show", f"HEAD:{path}"],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"no Hugging Face Accelerate source at {SOURCE} (set HF_ACCELERATE_SOURCE)")
    return done.stdout


def port(text: str) -> str:
    """Rename the module in import lines; nothing else changes."""
    return IMPORT_LINE.sub(r"\1\2 accelerate_core", text)


def run_example(path: str, tmp_path: Path) -> tuple[str, Path]:
    source = hf_file(path)
    ported = port(source)
    changed = [(a, b) for a, b in zip(source.splitlines(), ported.splitlines()) if a != b]
    assert changed and all("accelerate_core" in b and b.lstrip().startswith(("from", "import"))
                           for _, b in changed)  # fmt: skip
    script = tmp_path / Path(path).name
    script.write_text(ported)
    project = tmp_path / "logs"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCELERATE_CORE_")}
    env.update(
        PYTHONPATH=str(HERE / "hf_ports" / "shims"),
        WANDB_MODE="offline",
        WANDB_DIR=str(tmp_path),
        WANDB_SILENT="true",
        MLFLOW_TRACKING_URI=f"file:{tmp_path / 'mlruns'}",
        MLFLOW_ALLOW_FILE_STORE="true",
        TRACKIO_DIR=str(tmp_path / "trackio"),
        OMP_NUM_THREADS="1",
    )
    done = subprocess.run(
        [sys.executable, str(script), "--cpu",
         "--with_tracking", "--project_dir", str(project)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done.stdout, project


def printed_epochs(stdout: str) -> list[dict]:
    return [ast.literal_eval(m) for m in re.findall(r"^epoch \d+: (\{.*\})$", stdout, re.M)]


def check_run(stdout: str, project: Path, run_name: str) -> dict:
    (run_dir,) = event_dirs(project)
    assert run_dir == project / run_name
    run = tensorboard_run(run_dir)
    assert run["hparams"] == {"lr": 2e-5, "num_epochs": 3.0, "seed": 42.0, "batch_size": 16.0}
    epochs = printed_epochs(stdout)
    assert len(epochs) == 3
    assert set(run["scalars"]) == {"accuracy", "f1", "train_loss", "epoch"}
    for name in ("accuracy", "f1"):
        assert [s for s, _ in run["scalars"][name]] == [0, 1, 2]
        assert [v for _, v in run["scalars"][name]] == pytest.approx([e[name] for e in epochs])
    assert run["scalars"]["epoch"] == [(0, 0.0), (1, 1.0), (2, 2.0)]
    assert all(v > 0 for _, v in run["scalars"]["train_loss"])
    return run


def test_by_feature_tracking_example_writes_a_tensorboard_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # to read the store back here
    stdout, project = run_example("examples/by_feature/tracking.py", tmp_path)
    run = check_run(stdout, project, "tracking")
    # log_with="all": every installed tracker wrote the same run
    (wandb_file,) = wandb_run_files(tmp_path)
    assert [h["accuracy"] for h in wandb_run(wandb_file)["history"]] == pytest.approx(
        [v for _, v in run["scalars"]["accuracy"]]
    )
    (mlflow,) = mlflow_runs(f"file:{tmp_path / 'mlruns'}", "tracking")
    assert [s for s, _ in mlflow["metrics"]["f1"]] == [0, 1, 2]
    assert [v for _, v in mlflow["metrics"]["f1"]] == pytest.approx(
        [v for _, v in run["scalars"]["f1"]]
    )
    print(stdout.splitlines()[0], run["scalars"])  # the figures for the closing note


def test_complete_nlp_example_with_tracking_writes_a_tensorboard_run(tmp_path):
    stdout, project = run_example("examples/complete_nlp_example.py", tmp_path)
    run = check_run(stdout, project, "complete_nlp_example")
    print(stdout.splitlines()[0], run["scalars"])
