"""Checkpoint files: naming, rotation, integrity errors, safe loading, kill -9, save_model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from accelerate_core import Accelerator, CheckpointError, ProjectConfiguration
from accelerate_core.state import reset_state


def prepared(accelerator: Accelerator):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    return accelerator.prepare(model, optimizer)


def one_step(accelerator, model, optimizer):
    accelerator.backward(model(torch.ones(3, 4)).sum())
    optimizer.step()
    optimizer.zero_grad()


def test_automatic_naming_rotation_and_latest(tmp_path):
    config = ProjectConfiguration(project_dir=str(tmp_path), total_limit=2)
    accelerator = Accelerator(cpu=True, project_config=config)
    model, optimizer = prepared(accelerator)
    saved = []
    for _ in range(4):
        one_step(accelerator, model, optimizer)
        saved.append(accelerator.save_state())
    root = tmp_path / "checkpoints"
    assert [Path(p).name for p in saved] == [f"checkpoint_{i}" for i in range(4)]
    assert sorted(p.name for p in root.iterdir()) == ["checkpoint_2", "checkpoint_3"]
    manifest = json.loads((root / "checkpoint_3" / "manifest.json").read_text())
    assert manifest["world_size"] == 1 and manifest["backend"] == "none"
    assert set(manifest["files"]) == {
        "model_0.safetensors", "optimizer_0.bin", "random_states_0.bin",
    }  # fmt: skip
    assert manifest["versions"]["torch"] == torch.__version__
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    one_step(accelerator, model, optimizer)
    assert accelerator.load_state() == str(root / "checkpoint_3")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, expected[name])


def test_without_project_dir_a_directory_is_required():
    accelerator = Accelerator(cpu=True)
    prepared(accelerator)
    with pytest.raises(CheckpointError, match="need a project directory"):
        accelerator.save_state()


def test_custom_objects_round_trip_and_must_have_state_dict(tmp_path):
    accelerator = Accelerator(cpu=True)

    class Box:
        def __init__(self):
            self.value = torch.zeros(2)

        def state_dict(self):
            return {"value": self.value}

        def load_state_dict(self, state):
            self.value = state["value"]

    box = Box()
    accelerator.register_for_checkpointing(box)
    with pytest.raises(TypeError, match="needs objects with state_dict"):
        accelerator.register_for_checkpointing(object())
    box.value = torch.tensor([1.0, 2.0])
    accelerator.save_state(tmp_path / "c")
    box.value = torch.zeros(2)
    accelerator.load_state(tmp_path / "c")
    assert torch.equal(box.value, torch.tensor([1.0, 2.0]))


@pytest.fixture
def saved(tmp_path):
    accelerator = Accelerator(cpu=True)
    model, optimizer = prepared(accelerator)
    one_step(accelerator, model, optimizer)
    directory = tmp_path / "c"
    accelerator.save_state(directory)
    return accelerator, directory


def test_corrupt_file_is_named(saved):
    accelerator, directory = saved
    path = directory / "model_0.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model_0.safetensors is corrupt \(checksum"):
        accelerator.load_state(directory)


def test_a_corrupt_checkpoint_changes_nothing(tmp_path):
    """Every file is verified before any live object is restored: weights, optimizer state,
    RNG and accumulation step stay those of the running process."""
    accelerator = Accelerator(cpu=True)
    model, optimizer = prepared(accelerator)
    one_step(accelerator, model, optimizer)
    accelerator.save_state(tmp_path / "c")
    one_step(accelerator, model, optimizer)  # the live state now differs from the saved one
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    moments = [s["exp_avg"].clone() for s in optimizer.state_dict()["state"].values()]
    rng = torch.get_rng_state()
    path = tmp_path / "c" / "random_states_0.bin"  # restored last, after the models
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"random_states_0\.bin is corrupt \(checksum"):
        accelerator.load_state(tmp_path / "c")
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    after = [s["exp_avg"] for s in optimizer.state_dict()["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(after, moments))
    assert torch.equal(torch.get_rng_state(), rng)


def test_truncated_and_missing_files_are_named(saved):
    accelerator, directory = saved
    path = directory / "optimizer_0.bin"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match=r"optimizer_0\.bin has .* bytes, the manifest says"):
        accelerator.load_state(directory)
    path.unlink()
    with pytest.raises(CheckpointError, match=r"optimizer_0\.bin is missing"):
        accelerator.load_state(directory)
    (directory / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match=r"has no manifest\.json"):
        accelerator.load_state(directory)


def test_different_objects_than_saved_is_an_error(saved, tmp_path):
    accelerator, directory = saved
    accelerator.prepare(torch.optim.SGD(accelerator._models[0].parameters(), lr=1.0))
    with pytest.raises(CheckpointError, match="holds 1 optimizers but this run prepared 2"):
        accelerator.load_state(directory)


def test_loading_never_unpickles_code(saved):
    accelerator, directory = saved
    evil = directory / "optimizer_0.bin"

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned > /dev/null",))

    from accelerate_core.checkpoint_io import file_record

    torch.save({"state": Payload()}, evil)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["files"]["optimizer_0.bin"] = file_record(evil)  # a consistent, malicious file
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        accelerator.load_state(directory)


KILLED_SAVE = """
import sys, time, pathlib, torch
from accelerate_core import Accelerator
root, marker = sys.argv[1], pathlib.Path(sys.argv[2])
accelerator = Accelerator(cpu=True, project_dir=root)
model = accelerator.prepare(torch.nn.Linear(4, 4))
class Slow:
    saves = 0
    def state_dict(self):
        Slow.saves += 1
        if Slow.saves == 2:
            marker.write_text("saving")
            time.sleep(60)
        return {{"saves": Slow.saves}}
    def load_state_dict(self, state):
        pass
accelerator.register_for_checkpointing(Slow())
accelerator.save_state()
with torch.no_grad():
    model.weight.add_(1.0)
accelerator.save_state()
"""


def test_kill_during_save_keeps_the_previous_checkpoint(tmp_path):
    marker = tmp_path / "marker"
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KILLED_SAVE.format()), str(tmp_path), str(marker)]
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert process.poll() is None, "the script ended before the second save"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".tmp-")) == [
        "checkpoint_0"
    ]
    assert any(p.name.startswith(".tmp-checkpoint_1") for p in root.iterdir())

    accelerator = Accelerator(cpu=True, project_dir=str(tmp_path))
    accelerator.prepare(torch.nn.Linear(4, 4))

    class Quiet:
        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

    accelerator.register_for_checkpointing(Quiet())
    assert Path(accelerator.load_state()).name == "checkpoint_0"
    assert Path(accelerator.save_state()).name == "checkpoint_1"
    assert not any(p.name.startswith(".tmp-") for p in root.iterdir())  # stale save removed


def test_save_model_shards_and_plain_safetensors_loads_them(tmp_path):
    accelerator = Accelerator(cpu=True, mixed_precision="bf16")
    torch.manual_seed(0)
    model = accelerator.prepare(
        torch.nn.Sequential(*[torch.nn.Linear(32, 32) for _ in range(4)])
    )  # 4 layers of 4096 + 128 bytes (fp32 weight and bias): one layer per 5 KB shard
    accelerator.save_model(model, tmp_path / "sharded", max_shard_size="5KB")
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert files == [f"model-0000{i}-of-00004.safetensors" for i in range(1, 5)]
    loaded = {}
    for name in files:
        loaded.update(load_file(tmp_path / "sharded" / name))
    expected = accelerator.unwrap_model(model).state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    assert index["metadata"]["total_size"] == sum(t.numel() * 4 for t in expected.values())

    accelerator.save_model(model, tmp_path / "single")
    plain = torch.nn.Sequential(*[torch.nn.Linear(32, 32) for _ in range(4)])
    plain.load_state_dict(load_file(tmp_path / "single" / "model.safetensors"))
    assert torch.equal(plain[3].weight, expected["3.weight"])

    accelerator.save_model(model, tmp_path / "bin", safe_serialization=False)
    state = torch.load(tmp_path / "bin" / "pytorch_model.bin", weights_only=True)
    assert torch.equal(state["0.bias"], expected["0.bias"])


def test_save_model_rejects_a_bad_size(tmp_path):
    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="is not a size like"):
        accelerator.save_model(model, tmp_path, max_shard_size="lots")


def test_reset_between_tests_is_clean():
    reset_state()
    assert Accelerator(cpu=True).num_processes == 1
