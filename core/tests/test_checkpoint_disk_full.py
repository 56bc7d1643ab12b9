"""A full disk during ``save_state``, on a real small tmpfs (issue 17, item 4).

Mounting needs root (CI runs as root); elsewhere these tests skip, saying why.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from accelerate_core import Accelerator, CheckpointError
from accelerate_core.testing import run_distributed

MiB = 1024 * 1024


def mount_small_disk(path: Path, size: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs the suite as root)")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip() or result.returncode}")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB file system of its own (tmpfs), unmounted afterwards."""
    disk = tmp_path / "disk"
    mount_small_disk(disk, 2 * MiB)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_save_that_cannot_fit_is_refused_before_writing(small_disk):
    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(torch.nn.Linear(1024, 1024))  # 4,198,400 bytes of weights
    free = shutil.disk_usage(small_disk).free
    with pytest.raises(CheckpointError) as error:
        accelerator.save_state(small_disk / "c")
    assert str(error.value) == (
        f"not enough disk space for checkpoint {small_disk / 'c'}: it needs at least "
        f"4,198,400 bytes (4.0 MiB) and {small_disk} has {free:,} bytes (2.0 MiB) free. Free "
        "some space, lower ProjectConfiguration.total_limit, or save elsewhere. Nothing was "
        f"written; {small_disk / 'c'} and every earlier checkpoint are as they were"
    )
    assert list(small_disk.iterdir()) == []
    assert model.weight.shape == (1024, 1024)


class Big:
    """A registered object whose state the up-front estimate does not know (only models and
    optimizers are estimated): the disk fills while it is written."""

    def __init__(self, count: int) -> None:
        self.values = torch.ones(count)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"values": self.values}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.values = state["values"]


def test_a_disk_that_fills_during_the_save_keeps_the_previous_checkpoint(small_disk):
    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(torch.nn.Linear(64, 64))
    big = Big(1000)
    accelerator.register_for_checkpointing(big)
    target = small_disk / "c"
    accelerator.save_state(target)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    before = sorted(p.name for p in target.iterdir())
    free = shutil.disk_usage(small_disk).free
    with torch.no_grad():
        model.weight.add_(1.0)
    big.values = torch.ones(600_000)  # 2.4 MB: more than the whole disk
    with pytest.raises(CheckpointError) as error:
        accelerator.save_state(target)
    message = str(error.value)
    assert message.startswith(f"saving checkpoint {target} failed: the disk is full at ")
    assert f"at {small_disk} (RuntimeError: [enforce fail at inline_container.cc" in message
    assert "unexpected pos" in message
    assert f"The partial save was removed; {target} and every earlier checkpoint are as they " in (
        message
    )
    needed = int(re.search(r"It needs at least ([\d,]+) bytes", message)[1].replace(",", ""))
    assert 2_400_000 + 64 * 65 * 4 <= needed < 2_450_000  # the big tensor, the weights, the RNG
    assert f"; {free:,} bytes (2.0 MiB) are free now. Free some space" in message
    assert sorted(p.name for p in small_disk.iterdir()) == ["c"]  # no temporary directory left
    assert sorted(p.name for p in target.iterdir()) == before
    assert shutil.disk_usage(small_disk).free == free  # the space is free again
    big.values = torch.zeros(3)
    accelerator.load_state(target)  # the previous checkpoint, intact and loadable
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    assert torch.equal(big.values, torch.ones(1000))


def too_big_on_every_rank(directory: str) -> str:
    accelerator = Accelerator(cpu=True)
    accelerator.prepare(torch.nn.Linear(1024, 1024))
    try:
        accelerator.save_state(directory)
    except CheckpointError as exc:
        accelerator.wait_for_everyone()
        return str(exc)
    return "saved"


@pytest.mark.multiprocess
def test_every_rank_gets_the_disk_space_error(small_disk):
    messages = run_distributed(too_big_on_every_rank, str(small_disk / "c"))
    assert messages[0] == messages[1]
    assert messages[0].startswith(f"not enough disk space for checkpoint {small_disk / 'c'}")
    assert list(small_disk.iterdir()) == []
