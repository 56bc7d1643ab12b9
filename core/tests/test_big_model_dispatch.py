"""Dispatching and offloading: outputs equal the full model's for CPU, disk and mixed maps, the
offloaded weights are released after each forward, and hooks come off cleanly."""

from __future__ import annotations

import accelerate.utils as hf
import pytest
import torch
from big_models import decoder, gpt2, without_ties

from accelerate_core import cpu_offload, cpu_offload_with_hook, disk_offload, dispatch_model
from accelerate_core.errors import ConfigurationError
from accelerate_core.hooks import (
    AlignDevicesHook,
    ModelHook,
    SequentialHook,
    add_hook_to_module,
    remove_hook_from_module,
    remove_hook_from_submodules,
)
from accelerate_core.utils import OffloadedWeightsLoader, offload_state_dict

IDS = torch.tensor([[1, 5, 9, 2, 7, 3], [4, 4, 8, 0, 1, 6]])

MAPS = {
    "cpu-hooked": {"embed": "cpu", "blocks": "cpu", "norm": "cpu", "head": "cpu", "scale": "cpu"},
    "all-disk": {"": "disk"},
    "mixed": {
        "embed": "cpu",
        "blocks.0": "cpu",
        "blocks.1": "disk",
        "blocks.2": "disk",
        "blocks.3": "cpu",
        "norm": "disk",
        "head": "cpu",
        "scale": "cpu",
    },
    "disk-tail": {"embed": "cpu", "blocks": "disk", "norm": "disk", "head": "cpu", "scale": "cpu"},
}


def on_meta(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.device.type == "meta"}


@pytest.mark.parametrize("name", MAPS)
def test_dispatched_outputs_equal_the_full_model(name, tmp_path):
    expected = decoder()(IDS)
    model = dispatch_model(
        decoder(), MAPS[name], offload_dir=tmp_path / "offload", force_hooks=True
    )
    assert model.hf_device_map == MAPS[name]
    torch.testing.assert_close(model(IDS), expected, rtol=1.3e-6, atol=1e-5)
    torch.testing.assert_close(model(IDS, bias=torch.ones(50)), expected + 1)
    disk = {k for k, v in MAPS[name].items() if v == "disk"}
    released = on_meta(model)
    # Disk modules' weights are on the meta device between forwards (read in, then released).
    assert all(any(p == k or p.startswith(k + ".") or k == "" for k in disk) for p in released)
    assert bool(released) == bool(disk)


def test_a_single_device_map_just_moves_the_model():
    model = decoder()
    dispatch_model(model, {"": "cpu"})
    assert not hasattr(model, "_hf_hook") and model.hf_device_map == {"": "cpu"}


def test_a_disk_map_needs_an_offload_dir():
    with pytest.raises(ConfigurationError, match=r"need an `offload_dir`.*blocks"):
        dispatch_model(decoder(), MAPS["disk-tail"])
    with pytest.raises(ValueError, match=r"does not give any device.*norm\.weight"):
        dispatch_model(decoder(), {"embed": "cpu", "blocks": "cpu", "head": "cpu", "scale": "cpu"})


def test_cpu_offload_brings_weights_in_and_releases_them():
    expected = decoder()(IDS)
    model = cpu_offload(decoder(), execution_device=torch.device("cpu"))
    assert len(on_meta(model)) == len(list(model.parameters()))
    torch.testing.assert_close(model(IDS), expected)
    assert len(on_meta(model)) == len(list(model.parameters()))
    remove_hook_from_submodules(model)
    assert not on_meta(model)  # the weights come back from the state dict
    torch.testing.assert_close(model(IDS), expected)


def test_disk_offload_reads_safetensors_and_releases_them(tmp_path):
    expected = decoder()(IDS)
    model = disk_offload(decoder(), tmp_path, execution_device="cpu")
    files = sorted(p.name for p in tmp_path.iterdir())
    assert "index.json" in files and "blocks.0.up.weight.safetensors" in files
    torch.testing.assert_close(model(IDS), expected)
    assert len(on_meta(model)) == len(list(model.parameters()))
    # The folder is reused as it is (index present): a second model reads the same weights.
    again = disk_offload(decoder(seed=1), tmp_path, execution_device="cpu", offload_buffers=True)
    torch.testing.assert_close(again(IDS), expected)


def test_offload_folders_are_readable_both_ways(tmp_path):
    state = decoder().state_dict()
    offload_state_dict(tmp_path / "ours", state)
    theirs = hf.OffloadedWeightsLoader(save_folder=str(tmp_path / "ours"))
    hf.offload_state_dict(str(tmp_path / "hf"), state)
    ours = OffloadedWeightsLoader(save_folder=tmp_path / "hf")
    for name, tensor in state.items():
        assert torch.equal(theirs[name], tensor), name
        assert torch.equal(ours[name], tensor), name
    moved = tmp_path / "moved"
    (tmp_path / "ours").rename(moved)
    assert torch.equal(
        OffloadedWeightsLoader(save_folder=moved)["embed.weight"], state["embed.weight"]
    )


def test_tied_weights_stay_tied_after_dispatch(tmp_path):
    model = dispatch_model(decoder(), MAPS["cpu-hooked"], force_hooks=True)
    assert model.head.weight is model.embed.weight


def test_transformers_generate_matches_through_offload(tmp_path):
    reference = gpt2()
    ids = torch.tensor([[3, 7, 11]])
    expected = reference.generate(ids, max_new_tokens=6, do_sample=False)
    model = gpt2()
    model.load_state_dict(reference.state_dict())
    device_map = {
        "transformer.wte": "cpu",
        "transformer.wpe": "cpu",
        "transformer.h.0": "cpu",
        "transformer.h.1": "disk",
        "transformer.h.2": "disk",
        "transformer.ln_f": "cpu",
        "lm_head": "cpu",
    }
    model = dispatch_model(model, device_map, offload_dir=tmp_path, skip_keys="past_key_values")
    assert torch.equal(model.generate(ids, max_new_tokens=6, do_sample=False), expected)
    torch.testing.assert_close(model(ids).logits, reference(ids).logits)


def test_moving_an_offloaded_model_is_refused(tmp_path):
    model = dispatch_model(decoder(), MAPS["disk-tail"], offload_dir=tmp_path)
    with pytest.raises(RuntimeError, match="can't move a model that has some modules offloaded"):
        model.to("cpu")
    remove_hook_from_submodules(model)
    assert "to" not in model.__dict__


class Double(ModelHook):
    def pre_forward(self, module, *args, **kwargs):
        return tuple(a * 2 for a in args), kwargs


class AddOne(ModelHook):
    no_grad = True

    def post_forward(self, module, output):
        return output + 1


def test_hooks_change_inputs_and_outputs_and_come_off():
    layer = torch.nn.Linear(3, 3)
    x = torch.randn(2, 3)
    plain = layer(x)
    add_hook_to_module(layer, Double())
    torch.testing.assert_close(layer(x), layer._old_forward(2 * x))
    add_hook_to_module(layer, AddOne(), append=True)
    assert isinstance(layer._hf_hook, SequentialHook)
    torch.testing.assert_close(layer(x), layer._old_forward(2 * x) + 1)
    add_hook_to_module(layer, AddOne())  # replaces, not chains
    out = layer(x)
    torch.testing.assert_close(out, plain + 1)
    assert not out.requires_grad  # AddOne asks for no_grad
    remove_hook_from_module(layer)
    assert not hasattr(layer, "_hf_hook") and not hasattr(layer, "_old_forward")
    torch.testing.assert_close(layer(x), plain)


def test_cpu_offload_with_hook_returns_the_model_and_a_handle():
    reference = decoder()
    model, hook = cpu_offload_with_hook(decoder(), execution_device="cpu")
    torch.testing.assert_close(model(IDS), reference(IDS))
    hook.offload()
    hook.remove()
    assert not hasattr(model, "_hf_hook")


def test_safetensors_library_reads_our_offload_files(tmp_path):
    from safetensors.torch import load_file

    state = without_ties(decoder())
    offload_state_dict(tmp_path, state)
    for name, tensor in state.items():
        assert torch.equal(load_file(tmp_path / f"{name}.safetensors")[name], tensor)


class Devices(torch.nn.Module):
    """Reports where its inputs arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))

    def forward(self, x, cache=None):
        return {"x": x.device.type, "cache": cache.device.type}


def test_align_devices_hook_moves_inputs_but_skip_keys():
    module = Devices()
    add_hook_to_module(module, AlignDevicesHook(execution_device="meta", skip_keys="cache"))
    assert module(torch.ones(2), cache=torch.ones(2)) == {"x": "meta", "cache": "cpu"}
    add_hook_to_module(module, AlignDevicesHook(execution_device="meta"))
    assert module(torch.ones(2), cache=torch.ones(2)) == {"x": "meta", "cache": "meta"}
