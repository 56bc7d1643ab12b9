"""``save_state(async_save=True)`` (issue 17, item 9): returns once the state is in host memory,
writes in the background with the same guarantees, and the next call or the exit waits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from test_checkpoint_disk_full import Big, mount_small_disk

from accelerate_core import Accelerator, CheckpointError
from accelerate_core.async_checkpoint import wait_for_pending_save
from accelerate_core.checkpoint_io import file_record
from accelerate_core.testing import run_distributed


def step(accelerator, model, optimizer):
    accelerator.backward(model(torch.ones(3, 4)).sum())
    optimizer.step()
    optimizer.zero_grad()


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_the_checkpoint_holds_the_state_of_the_call_not_what_training_did_after(tmp_path):
    accelerator = Accelerator(cpu=True, project_dir=str(tmp_path))
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    model, optimizer = accelerator.prepare(model, torch.optim.Adam(model.parameters(), lr=0.1))
    step(accelerator, model, optimizer)
    saved = snapshot(model)
    moments = optimizer.state_dict()["state"][0]["exp_avg"].clone()
    path = accelerator.save_state(async_save=True)
    for _ in range(3):  # training goes on, in place, while the save may still be writing
        step(accelerator, model, optimizer)
    assert Path(path) == tmp_path / "checkpoints" / "checkpoint_0"
    assert wait_for_pending_save() == Path(path)
    manifest = json.loads((Path(path) / "manifest.json").read_text())
    for name, record in manifest["files"].items():  # checksums of what is on disk
        assert file_record(Path(path) / name) == record, name
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["checkpoint_0"]
    accelerator.load_state(path)
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    assert torch.equal(optimizer.state_dict()["state"][0]["exp_avg"], moments)


def test_the_next_save_waits_and_rotation_still_applies(tmp_path):
    from accelerate_core import ProjectConfiguration

    config = ProjectConfiguration(project_dir=str(tmp_path), total_limit=2)
    accelerator = Accelerator(cpu=True, project_config=config)
    model = torch.nn.Linear(4, 2)
    model, optimizer = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1))
    names = []
    for i in range(4):
        step(accelerator, model, optimizer)
        names.append(Path(accelerator.save_state(async_save=i % 2 == 0)).name)
    accelerator.end_training()  # waits for the last one too
    assert names == ["checkpoint_0", "checkpoint_1", "checkpoint_2", "checkpoint_3"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == names[2:]


def test_a_failed_background_write_surfaces_at_the_next_call(tmp_path):
    disk = tmp_path / "disk"
    mount_small_disk(disk, 2 * 1024 * 1024)
    try:
        accelerator = Accelerator(cpu=True)
        model = accelerator.prepare(torch.nn.Linear(4, 2))
        big = Big(600_000)  # 2.4 MB: not estimated up front, does not fit
        accelerator.register_for_checkpointing(big)
        target = disk / "c"
        assert accelerator.save_state(target, async_save=True) == str(target)
        with pytest.raises(CheckpointError, match=r"saving checkpoint .* failed: the disk is full"):
            accelerator.save_state(tmp_path / "next")  # the next call reports it
        assert list(disk.iterdir()) == []  # the partial save was removed
        big.values = torch.ones(3)
        accelerator.save_state(tmp_path / "next")  # and the one after works
        assert model.weight.shape == (2, 4)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


EXITS = """
import sys, torch
from accelerate_core import Accelerator
accelerator = Accelerator(cpu=True)
accelerator.prepare(torch.nn.Linear(512, 512))
class Box:
    def state_dict(self):
        return {{"values": torch.ones({count})}}
    def load_state_dict(self, state):
        pass
accelerator.register_for_checkpointing(Box())
print(accelerator.save_state(sys.argv[1], async_save=True), flush=True)
# the script ends at once: the exit waits for the save
"""


@pytest.mark.parametrize("fails", [False, True], ids=["completes", "fails"])
def test_the_exit_waits_for_the_save(tmp_path, fails):
    if fails:
        mount_small_disk(tmp_path / "disk", 2 * 1024 * 1024)
    target = tmp_path / ("disk" if fails else "") / "c"
    script = textwrap.dedent(EXITS.format(count=600_000 if fails else 3))
    try:
        result = subprocess.run(
            [sys.executable, "-c", script, str(target)], capture_output=True, text=True,
            timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
    finally:
        if fails:
            subprocess.run(["umount", "-l", str(tmp_path / "disk")], check=False)
    if fails:
        assert result.returncode == 1
        assert "accelerate-core: the asynchronous checkpoint failed: saving checkpoint" in (
            result.stderr
        )
    else:
        assert result.returncode == 0, result.stderr
        assert (target / "manifest.json").exists()
        assert (target / "model_0.safetensors").stat().st_size > 512 * 512 * 4


def async_on_two_processes(directory: str) -> dict[str, object]:
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    model, optimizer = accelerator.prepare(model, torch.optim.Adam(model.parameters(), lr=0.1))
    step(accelerator, model, optimizer)
    saved = snapshot(accelerator.unwrap_model(model))
    accelerator.save_state(directory, async_save=True)
    for _ in range(3):
        step(accelerator, model, optimizer)  # DDP all-reduces while the save coordinates
    accelerator.load_state(directory)  # waits for the save first
    restored = accelerator.unwrap_model(model).state_dict()
    return {"restored": all(torch.equal(v, saved[k]) for k, v in restored.items())}


@pytest.mark.multiprocess
def test_two_processes_save_in_the_background_while_training_communicates(tmp_path):
    results = run_distributed(async_on_two_processes, str(tmp_path / "c"))
    assert results == [{"restored": True}, {"restored": True}]
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["world_size"] == 2
    assert {"random_states_0.bin", "random_states_1.bin"} <= set(manifest["files"])
