"""``save_state`` never touches what it did not write (issue 17, item 1)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from accelerate_core import Accelerator, CheckpointError, ProjectConfiguration
from accelerate_core.testing import run_distributed


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every entry under ``root`` (and ``root``'s siblings) with its content."""
    found: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        key = path.relative_to(root).as_posix()
        if path.is_symlink():
            found[key] = os.readlink(path).encode()
        else:
            found[key] = path.read_bytes() if path.is_file() else None
    return found


@pytest.fixture
def accelerator():
    accelerator = Accelerator(cpu=True)
    accelerator.prepare(torch.nn.Linear(2, 2))
    return accelerator


def test_a_user_directory_with_files_is_refused_and_left_as_it_was(tmp_path, accelerator):
    target = tmp_path / "results"
    (target / "sub").mkdir(parents=True)
    (target / "notes.txt").write_text("my notes")
    (target / "sub" / "data.bin").write_bytes(b"\x00\x01")
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError) as error:
        accelerator.save_state(target)
    message = str(error.value)
    assert f"cannot save a checkpoint to {target}: the directory exists and is not an " in message
    assert "(it holds notes.txt, sub; no manifest.json of ours)" in message
    assert "save_state never replaces what it did not write" in message
    assert snapshot(tmp_path) == before  # nothing moved, deleted, or left behind


@pytest.mark.parametrize("kind", ["file", "link"])
def test_a_file_or_a_link_is_refused(tmp_path, accelerator, kind):
    target = tmp_path / "c"
    if kind == "file":
        target.write_text("precious")
    else:
        (tmp_path / "elsewhere").mkdir()
        target.symlink_to(tmp_path / "elsewhere")
    before = snapshot(tmp_path)
    expected = "a file" if kind == "file" else "a symbolic link"
    with pytest.raises(CheckpointError, match=f"{target}: it is {expected}"):
        accelerator.save_state(target)
    assert snapshot(tmp_path) == before


def test_an_empty_directory_and_our_own_checkpoint_are_replaced(tmp_path, accelerator):
    target = tmp_path / "c"
    target.mkdir()
    accelerator.save_state(target)
    assert (target / "manifest.json").exists()
    first = (target / "manifest.json").read_text()
    accelerator.save_state(target)  # ours: replaced by the new one
    assert (target / "manifest.json").read_text() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no temporary or trash left


def test_only_our_own_leftovers_next_to_the_target_are_removed(tmp_path, accelerator):
    keep = [
        ".tmp-c",
        ".tmp-c-notours",
        ".tmp-other-0123abcd",
        ".trash-c-xyz",
        ".tmp-c-0123abcd.txt",
    ]
    for name in keep[:-1]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text(name)
    (tmp_path / keep[-1]).write_text("a file")
    for name in (".tmp-c-0123abcd", ".trash-c-89abcdef"):  # left by killed saves of c
        (tmp_path / name).mkdir()
        (tmp_path / name / "model_0.safetensors").write_text("partial")
    before = snapshot(tmp_path)
    accelerator.save_state(tmp_path / "c")
    after = snapshot(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*keep, "c"])
    assert {k: v for k, v in after.items() if not k.startswith("c")} == {
        k: v for k, v in before.items() if k.split("/")[0] in keep
    }


def test_automatic_naming_steps_over_a_directory_that_is_not_ours(tmp_path):
    foreign = tmp_path / "checkpoints" / "checkpoint_0"  # say, Hugging Face's format
    foreign.mkdir(parents=True)
    (foreign / "pytorch_model.bin").write_text("theirs")
    config = ProjectConfiguration(project_dir=str(tmp_path), total_limit=1)
    accelerator = Accelerator(cpu=True, project_config=config)
    accelerator.prepare(torch.nn.Linear(2, 2))
    assert Path(accelerator.save_state()).name == "checkpoint_1"
    assert Path(accelerator.save_state()).name == "checkpoint_2"
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["checkpoint_0", "checkpoint_2"]  # rotation removed only our checkpoint_1
    assert (foreign / "pytorch_model.bin").read_text() == "theirs"
    assert Path(accelerator.load_state()).name == "checkpoint_2"


def refuse_on_every_rank(directory: str) -> str:
    accelerator = Accelerator(cpu=True)
    accelerator.prepare(torch.nn.Linear(2, 2))
    try:
        accelerator.save_state(directory)
    except CheckpointError as exc:
        accelerator.wait_for_everyone()  # every rank is still in step after the error
        return str(exc)
    return "saved"


@pytest.mark.multiprocess
def test_every_rank_gets_the_error(tmp_path):
    target = tmp_path / "results"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    messages = run_distributed(refuse_on_every_rank, str(target))
    assert len(set(messages)) == 1 and "is not an accelerate-core checkpoint" in messages[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]
    assert (target / "notes.txt").read_text() == "mine"
