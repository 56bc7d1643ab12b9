"""A checkpoint written by Hugging Face Accelerate's own ``save_state`` resumes here.

HF Accelerate (a test-only dependency) trains ``hf_checkpoint_recipe.py`` in its own process,
saving mid-epoch and going on; we convert its checkpoint (``accel convert-checkpoint``) and
resume from it the HF way (``load_state`` + ``skip_first_batches``). With the RNG states
(``--trust-pickled-code``) the weights equal those of HF's run that went on, bit for bit, dropout
included. HF's own resume does not: its new dataloader iterator draws from the restored RNG.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from accelerate_core import Accelerator, CheckpointError
from accelerate_core.cli.main import main

RECIPE = Path(__file__).with_name("hf_checkpoint_recipe.py")
sys.path.insert(0, str(RECIPE.parent))
import hf_checkpoint_recipe as recipe  # noqa: E402


def hf(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / f"hf{len(list(tmp_path.glob('hf*.pt')))}.pt"
    subprocess.run([sys.executable, str(RECIPE), "hf", str(out), *args], check=True, timeout=120)
    return torch.load(out, weights_only=True)


@pytest.fixture(scope="module")
def hf_runs(tmp_path_factory):
    """HF: train, save_state, go on; then resume from its checkpoint in a new process."""
    tmp = tmp_path_factory.mktemp("hf")
    checkpoint = tmp / "hf_checkpoint"
    uninterrupted = hf(tmp, str(checkpoint))
    resumed = hf(tmp, str(checkpoint), "--resume")
    return checkpoint, uninterrupted, resumed


def test_hfs_own_resume_is_not_exact(hf_runs):
    """The difference we document: the dropout stream of HF's resumed run differs."""
    _, uninterrupted, resumed = hf_runs
    assert resumed["counter"] == uninterrupted["counter"] == recipe.TOTAL
    assert not torch.equal(resumed["weights"]["0.weight"], uninterrupted["weights"]["0.weight"])


def test_converted_hf_checkpoint_resumes_to_the_weights_of_hfs_run(hf_runs, tmp_path, capsys):
    checkpoint, uninterrupted, resumed = hf_runs
    converted = tmp_path / "converted"
    assert main(["convert-checkpoint", str(checkpoint), str(converted),
                 "--trust-pickled-code", "--dataloaders", "1"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "model.safetensors -> model_0.safetensors" in out
    assert "random_states_0.pkl -> random_states_0.bin" in out
    ours = recipe.run(Accelerator, str(converted), resume=True)
    assert ours["counter"] == uninterrupted["counter"] == recipe.TOTAL
    assert ours["lr"] == uninterrupted["lr"] == resumed["lr"]
    for key, value in uninterrupted["weights"].items():
        assert torch.equal(ours["weights"][key], value), key


def test_without_trusting_pickles_the_rng_states_are_listed_not_read(hf_runs, tmp_path, capsys):
    checkpoint, _, _ = hf_runs
    converted = tmp_path / "converted"
    assert main(["convert-checkpoint", str(checkpoint), str(converted), "--dataloaders", "1"]) == 0
    out = capsys.readouterr().out
    assert (
        "not converted:\n  random_states_0.pkl: pickled RNG states: reading them runs code" in out
    )
    assert not (converted / "random_states_0.bin").exists()
    ours = recipe.run(Accelerator, str(converted), resume=True)  # resumes; RNG as it is
    assert ours["counter"] == recipe.TOTAL


def test_load_state_of_an_hf_directory_names_the_command(hf_runs):
    checkpoint, _, _ = hf_runs
    accelerator = Accelerator(cpu=True)
    with pytest.raises(CheckpointError, match=r"accel convert-checkpoint .* NEW_DIR"):
        accelerator.load_state(str(checkpoint))


def test_converting_into_an_existing_directory_touches_nothing(hf_runs, tmp_path, capsys):
    checkpoint, _, _ = hf_runs
    existing = tmp_path / "mine"
    existing.mkdir()
    (existing / "notes.txt").write_text("keep")
    assert main(["convert-checkpoint", str(checkpoint), str(existing)]) == 1
    assert "exists" in capsys.readouterr().err
    assert [p.name for p in existing.iterdir()] == ["notes.txt"]


def test_converting_leaves_a_users_directory_named_like_a_temporary_one_alone(
    hf_runs, tmp_path, capsys
):
    checkpoint, _, _ = hf_runs
    theirs = tmp_path / ".tmp-converted"  # a user's own directory, not one of our saves
    theirs.mkdir()
    (theirs / "notes.txt").write_text("keep")
    assert main(["convert-checkpoint", str(checkpoint), str(tmp_path / "converted")]) == 0
    assert (theirs / "notes.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-converted", "converted"]
