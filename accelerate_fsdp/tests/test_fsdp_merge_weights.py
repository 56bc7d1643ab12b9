"""``accel merge-weights`` of fsdp checkpoints written by 2 real processes: the output loads with
plain safetensors and equals ``accelerator.get_state_dict`` at the save."""

from __future__ import annotations

import io

import pytest
import torch
from safetensors.torch import load_file

from accelerate_core.cli.main import main
from accelerate_core.cli.merge_weights import merge
from accelerate_core.testing import run_distributed

pytestmark = pytest.mark.multiprocess


def save(directory: str, state_dict_type: str) -> dict[str, torch.Tensor]:
    """Train 3 steps under fsdp, save_state; return the gathered weights (rank 0)."""
    import fsdp_recipes as R

    from accelerate_core import Accelerator

    accelerator = Accelerator(
        cpu=True, backend="fsdp",
        backend_options={**R.WRAP, "state_dict_type": state_dict_type},
    )  # fmt: skip
    model = R.make_model()
    optimizer = R.make_optimizer(model.parameters())
    model, optimizer = accelerator.prepare(model, optimizer)
    inputs, targets = R.data()
    for step in range(3):
        rows = slice(4 * step, 4 * step + 4)
        loss = torch.nn.functional.mse_loss(model(inputs[rows]), targets[rows])
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
    accelerator.save_state(directory)
    return {k: v.clone() for k, v in accelerator.get_state_dict(model).items()}


@pytest.mark.parametrize("state_dict_type", ["sharded", "full"])
def test_merged_weights_equal_get_state_dict(tmp_path, state_dict_type, capsys):
    checkpoint = tmp_path / "checkpoint"
    gathered = run_distributed(save, str(checkpoint), state_dict_type)[0]
    out = tmp_path / "merged"
    assert main(["merge-weights", str(checkpoint), str(out)]) == 0
    captured = capsys.readouterr()
    assert "merging model_0 [" in captured.err and "100%" in captured.err  # the progress bar
    merged = load_file(out / "model.safetensors")
    assert merged.keys() == gathered.keys()
    for name, tensor in gathered.items():
        assert torch.equal(merged[name], tensor), name
    if state_dict_type == "sharded":
        assert (checkpoint / "fsdp_sharded").is_dir()
        stream = io.StringIO()
        merge(checkpoint, tmp_path / "small", max_shard_size=600, stream=stream)
        index = (tmp_path / "small" / "model.safetensors.index.json").read_text()
        assert '"weight_map"' in index
        assert stream.getvalue().count("\n") <= 11  # one line per tenth, not per tensor


def test_merging_into_a_non_empty_directory_is_refused(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    assert main(["merge-weights", str(tmp_path), str(tmp_path / "out")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep"
