"""Loading checkpoints into a model placed by a device map: sharded and single-file, with dtype
conversion, the same results as HF Accelerate, and clear errors before anything is loaded."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import accelerate
import pytest
import torch
from big_models import Decoder, decoder, gpt2, save_sharded, without_ties
from safetensors.torch import save_file

import accelerate_core
from accelerate_core import init_empty_weights, load_checkpoint_and_dispatch
from accelerate_core.errors import CheckpointError, ConfigurationError
from accelerate_core.utils import compute_module_sizes, load_checkpoint_in_model
from accelerate_core.utils.tensor_files import read_header

IDS = torch.tensor([[1, 5, 9, 2, 7, 3], [4, 4, 8, 0, 1, 6]])
BLOCKS = ["Block"]


def empty(**sizes) -> Decoder:
    with init_empty_weights():
        return Decoder(**sizes).eval()


@pytest.fixture
def checkpoint(tmp_path):
    """A 4-shard safetensors checkpoint of ``decoder()`` (head tied, so stored once)."""
    return save_sharded(without_ties(decoder()), tmp_path / "ckpt", shard_bytes=40_000)


def total_size() -> int:
    return compute_module_sizes(decoder())[""]


@pytest.mark.parametrize("strategy", ["auto", "balanced", "sequential"])
@pytest.mark.parametrize("cpu_share", [10, 0.5, 0.3])
def test_sharded_load_and_dispatch_equals_the_full_model(checkpoint, tmp_path, strategy, cpu_share):
    expected = decoder()(IDS)
    budget = int(total_size() * cpu_share)
    model = load_checkpoint_and_dispatch(
        empty(),
        checkpoint.parent,
        device_map=strategy,
        max_memory={"cpu": budget},
        no_split_module_classes=BLOCKS,
        offload_folder=tmp_path / "offload",
    )
    devices = set(model.hf_device_map.values())
    assert devices == ({"cpu"} if cpu_share > 1 else {"cpu", "disk"})
    torch.testing.assert_close(model(IDS), expected, rtol=1.3e-6, atol=1e-5)
    if "disk" in devices:  # nothing converted: the index points into the checkpoint's shards
        offload = tmp_path / "offload"
        assert sorted(p.name for p in offload.iterdir()) == ["index.json"]
        index = json.loads((offload / "index.json").read_text())
        assert all(e["safetensors_file"].startswith(str(checkpoint.parent)) for e in index.values())


def gpt2_checkpoint(folder):
    reference = gpt2()
    save_sharded(without_ties(reference), folder, shard_bytes=30_000)
    return reference


def test_maps_and_outputs_equal_hf_accelerates(tmp_path):
    reference = gpt2_checkpoint(tmp_path / "ckpt")
    budget = {"cpu": int(compute_module_sizes(reference)[""] * 0.5)}
    ids = torch.tensor([[3, 7, 11, 2]])
    models = {}
    for name, library in (("ours", accelerate_core), ("hf", accelerate)):
        with library.init_empty_weights():
            model = gpt2()
        model.tie_weights()
        models[name] = library.load_checkpoint_and_dispatch(
            model,
            str(tmp_path / "ckpt"),
            device_map="auto",
            max_memory=dict(budget),
            no_split_module_classes=["GPT2Block"],
            offload_folder=str(tmp_path / name),
        )
    assert models["ours"].hf_device_map == models["hf"].hf_device_map
    assert "disk" in models["ours"].hf_device_map.values()
    expected = reference(ids).logits
    torch.testing.assert_close(models["ours"](ids).logits, expected)
    assert torch.equal(models["ours"](ids).logits, models["hf"](ids).logits)


def test_a_root_buffer_mapped_to_disk_is_loaded(checkpoint, tmp_path):
    """HF Accelerate keeps the buffer's initial value, or fails with offload_buffers=True."""
    budget = {"cpu": int(total_size() * 0.4)}
    expected = decoder()(IDS)
    for offload_buffers in (False, True):
        ours = load_checkpoint_and_dispatch(
            empty(),
            checkpoint,
            device_map="auto",
            max_memory=budget,
            no_split_module_classes=BLOCKS,
            offload_buffers=offload_buffers,
            offload_folder=tmp_path / f"ours{offload_buffers}",
        )
        assert ours.hf_device_map["scale"] == "disk"
        assert torch.equal(ours(IDS), expected)
    with accelerate.init_empty_weights():
        theirs = Decoder().eval()
    theirs.head.weight = theirs.embed.weight
    theirs = accelerate.load_checkpoint_and_dispatch(
        theirs,
        str(checkpoint),
        device_map="auto",
        max_memory=dict(budget),
        no_split_module_classes=BLOCKS,
        offload_folder=str(tmp_path / "hf"),
    )
    assert torch.equal(theirs.scale, torch.full((32,), 0.5))  # not loaded: its initial value


def test_single_files_and_explicit_maps(tmp_path):
    expected = decoder()(IDS)
    state = without_ties(decoder())
    save_file(state, tmp_path / "model.safetensors")
    torch.save(state, tmp_path / "weights.bin")
    device_map = {
        "embed": "cpu",
        "blocks.0": "disk",
        "blocks.1": "cpu",
        "blocks.2": "disk",
        "blocks.3": "cpu",
        "norm": "cpu",
        "head": "cpu",
        "scale": "disk",
    }
    for source in (tmp_path, tmp_path / "model.safetensors", tmp_path / "weights.bin"):
        model = load_checkpoint_and_dispatch(
            empty(), source, device_map=device_map, offload_folder=tmp_path / f"off-{source.name}"
        )
        torch.testing.assert_close(model(IDS), expected)
    model = empty()
    load_checkpoint_in_model(model, tmp_path / "model.safetensors")  # no map: all on the CPU
    assert model.head.weight is model.embed.weight
    torch.testing.assert_close(model(IDS), expected)


def test_torch_shards_with_their_index(tmp_path):
    state = without_ties(decoder())
    names = list(state)
    halves = {
        "pytorch_model-1.bin": names[: len(names) // 2],
        "pytorch_model-2.bin": names[len(names) // 2 :],
    }
    weight_map = {}
    for file, keys in halves.items():
        torch.save({k: state[k] for k in keys}, tmp_path / file)
        weight_map.update(dict.fromkeys(keys, file))
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    model = load_checkpoint_and_dispatch(
        empty(),
        tmp_path,
        device_map="auto",
        max_memory={"cpu": total_size() // 2},
        no_split_module_classes=BLOCKS,
        offload_folder=tmp_path / "off",
    )
    torch.testing.assert_close(model(IDS), decoder()(IDS))


@pytest.mark.parametrize("dtype", [torch.bfloat16, "float16"])
def test_dtype_conversion_on_load(checkpoint, tmp_path, dtype):
    target = torch.bfloat16 if dtype is torch.bfloat16 else torch.float16
    model = empty()
    device_map = {"embed": "cpu", "blocks": "disk", "norm": "cpu", "head": "cpu", "scale": "cpu"}
    load_checkpoint_in_model(
        model, checkpoint, device_map=device_map, dtype=dtype, offload_folder=tmp_path / "off"
    )
    reference = {k: v.to(target) for k, v in decoder().state_dict().items()}
    assert model.embed.weight.dtype == target and model.blocks[0].up.weight.dtype == target
    assert torch.equal(model.embed.weight, reference["embed.weight"])
    # Converted disk weights cannot be referenced in the checkpoint: they are written, converted.
    index = json.loads((tmp_path / "off" / "index.json").read_text())
    from accelerate_core.utils import OffloadedWeightsLoader

    weights = OffloadedWeightsLoader(save_folder=tmp_path / "off")
    assert set(index) == {k for k in reference if k.startswith("blocks.")}
    for entry in index.values():  # written into the offload folder at the new dtype
        path = Path(entry["safetensors_file"])
        assert path.parent == (tmp_path / "off").resolve()
        assert {info.dtype for info in read_header(path)[0].values()} == {target}
    for name in index:
        assert weights[name].dtype == target and torch.equal(weights[name], reference[name])


def test_dtype_none_loads_at_the_models_dtype(tmp_path):
    state = {k: v.half() for k, v in without_ties(decoder()).items()}
    save_file(state, tmp_path / "model.safetensors")
    model = empty()
    load_checkpoint_in_model(model, tmp_path / "model.safetensors", device_map={"": "cpu"})
    assert model.embed.weight.dtype == torch.float32
    assert torch.equal(model.embed.weight, state["embed.weight"].float())


# ----------------------------------------------------------------------------- errors


def untouched(model) -> bool:
    return all(p.device.type == "meta" for p in model.parameters())


def test_a_missing_shard_is_named_before_anything_loads(checkpoint):
    shards = sorted(checkpoint.parent.glob("*.safetensors"))
    assert len(shards) >= 3
    shards[1].unlink()
    model = empty()
    with pytest.raises(
        CheckpointError, match=rf"1 shard\(s\) that do not exist: .*{shards[1].name}"
    ):
        load_checkpoint_and_dispatch(model, checkpoint, device_map={"": "cpu"})
    assert untouched(model)


def test_an_index_that_disagrees_with_its_shards(checkpoint):
    index = json.loads(checkpoint.read_text())
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = sorted(checkpoint.parent.glob("*.safetensors"))[-1].name
    checkpoint.write_text(json.dumps(index))
    model = empty()
    with pytest.raises(CheckpointError, match=f"holds \\['{first}'\\], but it does not"):
        load_checkpoint_in_model(model, checkpoint, device_map={"": "cpu"})
    assert untouched(model)


def test_unexpected_and_missing_keys(tmp_path, caplog):
    state = without_ties(decoder())
    state["extra.weight"] = torch.ones(2)
    save_file(state, tmp_path / "extra.safetensors")
    with pytest.raises(CheckpointError, match=r"strict=True.*unexpected keys \['extra.weight'\]"):
        load_checkpoint_in_model(empty(), tmp_path / "extra.safetensors", strict=True)
    model = empty()
    with caplog.at_level(logging.WARNING):
        load_checkpoint_in_model(model, tmp_path / "extra.safetensors")
    assert "were not used when initializing Decoder: ['extra.weight']" in caplog.text
    torch.testing.assert_close(model(IDS), decoder()(IDS))

    del state["extra.weight"], state["blocks.2.up.bias"]
    save_file(state, tmp_path / "short.safetensors")
    model = empty()
    with pytest.raises(
        CheckpointError, match=r"no value for 1 weight.*meta device.*blocks\.2\.up\.bias"
    ):
        load_checkpoint_in_model(model, tmp_path / "short.safetensors")
    assert untouched(model)
    real = decoder(seed=3)  # real weights: a missing one keeps its value, with a warning
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_checkpoint_in_model(real, tmp_path / "short.safetensors")
    assert "were not in the checkpoint" in caplog.text and "blocks.2.up.bias" in caplog.text
    assert torch.equal(real.blocks[2].up.bias, decoder(seed=3).blocks[2].up.bias)
    assert torch.equal(real.blocks[1].up.bias, decoder().blocks[1].up.bias)


def test_budgets_that_cannot_fit_are_refused_before_loading(checkpoint, tmp_path):
    total = total_size()
    model = empty()
    with pytest.raises(
        ConfigurationError, match=r"would have to be offloaded to disk\. Pass offload_folder"
    ):
        load_checkpoint_and_dispatch(
            model,
            checkpoint,
            device_map="auto",
            max_memory={"cpu": total // 2},
            no_split_module_classes=BLOCKS,
        )
    assert untouched(model)
    block = compute_module_sizes(decoder())["blocks.0"]
    with pytest.raises(
        ConfigurationError,
        match=rf"largest \(blocks.0, blocks.1, blocks.2\) takes .* at least {block} bytes",
    ):
        load_checkpoint_and_dispatch(
            model,
            checkpoint,
            device_map="auto",
            max_memory={"cpu": block // 2},
            no_split_module_classes=BLOCKS,
            offload_folder=tmp_path,
        )
    assert untouched(model)
    with pytest.raises(ConfigurationError, match="please choose 'auto', 'balanced'"):
        load_checkpoint_and_dispatch(model, checkpoint, device_map="everywhere")
    with pytest.raises(ConfigurationError, match="please pass along an `offload_folder`"):
        load_checkpoint_in_model(model, checkpoint, device_map={"": "disk"})


def test_unreadable_checkpoints(tmp_path):
    (tmp_path / "a.index.json").write_text("{}")
    (tmp_path / "b.index.json").write_text("{}")
    with pytest.raises(ValueError, match=r"more than one `\.index\.json`"):
        load_checkpoint_in_model(empty(), tmp_path)
    with pytest.raises(ValueError, match="should be the path to a file"):
        load_checkpoint_in_model(empty(), tmp_path / "nowhere")
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match="is not a safetensors file"):
        load_checkpoint_in_model(empty(), tmp_path / "junk.safetensors")
