"""Device maps: the same maps and budgets as HF Accelerate, within ``max_memory``, never
splitting a ``no_split_module_classes`` block, with device memory asked of the device plugins."""

from __future__ import annotations

import itertools
import typing
import warnings

import accelerate.utils as hf
import psutil
import pytest
import torch
from big_models import decoder, gpt2, opt

from accelerate_core import DeviceSpec, hookimpl
from accelerate_core.errors import ConfigurationError
from accelerate_core.plugins import get_plugin_manager
from accelerate_core.utils import (
    compute_module_sizes,
    convert_file_size_to_int,
    find_tied_parameters,
    get_balanced_memory,
    get_max_memory,
    infer_auto_device_map,
)
from accelerate_core.utils import device_map as device_map_module
from accelerate_core.utils.modeling import accelerator_type


def meta(build, **kwargs):
    from accelerate_core import init_empty_weights

    with init_empty_weights():
        model = build(**kwargs)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return model


MODELS = {
    "decoder": (lambda: decoder(width=32, layers=4), ["Block"]),
    "gpt2": (lambda: meta(gpt2), ["GPT2Block"]),
    "opt": (lambda: meta(opt, tie_word_embeddings=False), ["OPTDecoderLayer"]),
}


def hf_quiet(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args, **kwargs)


def budgets(total: int) -> list[dict]:
    """Budgets around the model's size: everything fits, CPU spill, disk spill, two devices."""
    return [
        {"cpu": total * 2},
        {"cpu": total // 2},
        {"cpu": total // 5},
        {0: total // 3, "cpu": total},
        {0: total // 4, 1: total // 4, "cpu": total // 3},
        {0: total // 6, 1: total, "cpu": total},
        {0: f"{total // 3 / 1e3:.1f}KB", "cpu": f"{total / 2**10:.1f}KiB"},
    ]


@pytest.mark.parametrize("name", MODELS)
def test_maps_equal_hf_accelerates(name, caplog):
    build, blocks = MODELS[name]
    model = build()
    total = compute_module_sizes(model)[""]
    assert dict(compute_module_sizes(model)) == dict(hf.compute_module_sizes(model))
    assert dict(compute_module_sizes(model, dtype="float16")) == dict(
        hf.compute_module_sizes(model, dtype="float16")
    )
    checked = 0
    for memory, no_split, dtype in itertools.product(
        budgets(total), [None, blocks], [None, "float16"]
    ):
        ours = infer_auto_device_map(
            model, dict(memory), no_split_module_classes=no_split, dtype=dtype
        )
        theirs = hf_quiet(
            hf.infer_auto_device_map,
            model,
            dict(memory),
            no_split_module_classes=no_split,
            dtype=dtype,
        )
        assert list(ours.items()) == list(theirs.items()), (memory, no_split, dtype)
        checked += 1
    assert checked == 28


@pytest.mark.parametrize("low_zero", [False, True])
@pytest.mark.parametrize("name", MODELS)
def test_balanced_memory_equals_hf_accelerates(name, low_zero):
    build, blocks = MODELS[name]
    model = build()
    total = compute_module_sizes(model)[""]
    for memory in (
        {0: total, 1: total, "cpu": total},
        {0: total, 1: total // 3, 2: total, "cpu": 10},
    ):
        ours = get_balanced_memory(
            model, dict(memory), no_split_module_classes=blocks, low_zero=low_zero
        )
        theirs = hf_quiet(
            hf.get_balanced_memory,
            model,
            dict(memory),
            no_split_module_classes=blocks,
            low_zero=low_zero,
        )
        assert ours == theirs


def _devices_of(device_map: dict) -> dict:
    return {name: device for name, device in device_map.items()}


@pytest.mark.parametrize("name", MODELS)
def test_maps_respect_max_memory_and_no_split(name):
    build, blocks = MODELS[name]
    model = build()
    sizes = compute_module_sizes(model)
    total = sizes[""]
    modules = dict(model.named_modules())
    block_names = [n for n, m in modules.items() if m.__class__.__name__ in blocks]
    for memory in budgets(total)[:6]:
        device_map = infer_auto_device_map(model, dict(memory), no_split_module_classes=blocks)
        used: dict = {}
        for module_name, device in device_map.items():
            used[device] = used.get(device, 0) + sizes[module_name]
            inside = [b for b in block_names if module_name.startswith(b + ".")]
            assert not inside, f"{module_name} splits the no-split block {inside}"
        limits = get_max_memory(dict(memory))
        for device, size in used.items():
            if device != "disk":
                assert size <= limits[device], (memory, device, size)
        # Tied weights (gpt2's head and embedding) land on one device.
        for group in find_tied_parameters(model):
            homes = {device_map_module_owner(device_map, p) for p in group}
            assert len(homes) == 1, group


def device_map_module_owner(device_map: dict, tensor: str):
    name = tensor
    while name not in device_map:
        name = name.rsplit(".", 1)[0] if "." in name else ""
    return device_map[name]


def test_no_split_changes_the_map():
    """The same budget splits a block without no_split and moves it whole with it."""
    model = decoder(width=32, layers=4)
    total = compute_module_sizes(model)[""]
    split = infer_auto_device_map(model, {"cpu": total // 2})
    whole = infer_auto_device_map(model, {"cpu": total // 2}, no_split_module_classes=["Block"])
    assert any(k.count(".") >= 2 for k in split), split  # e.g. blocks.1.up
    assert all(k.count(".") <= 1 for k in whole), whole


def test_tied_parameters_and_sizes_match_hf():
    model = decoder()
    assert find_tied_parameters(model) == [["embed.weight", "head.weight"]]
    assert find_tied_parameters(model) == hf.find_tied_parameters(model)
    for size in [123, "5GB", "5GiB", "1.5MB", "300MiB", "8Kb", "2KiB"]:
        assert convert_file_size_to_int(size) == hf.convert_file_size_to_int(size)
    with pytest.raises(ValueError, match="not in a valid format"):
        convert_file_size_to_int("5 parsecs")


def test_max_memory_is_converted_ordered_and_checked():
    assert list(get_max_memory({"cpu": "1KB", "disk": 5, 1: 7, 0: "1KiB"}).items()) == [
        (0, 1024),
        (1, 7),
        ("cpu", 1000),
        ("disk", 5),
    ]
    with pytest.raises(ConfigurationError, match="device 'gpu' is not recognized"):
        get_max_memory({"gpu": 10})


def test_default_budgets_come_from_the_cpu_memory_hook():
    memory = get_max_memory()
    if accelerator_type() is None:
        assert list(memory) == ["cpu"]
    available = psutil.virtual_memory().available
    assert abs(memory["cpu"] - available) < 0.2 * available


class FakeAccelerator:
    """A third-party device plugin: registers 'hpu' and answers its memory (torch knows the
    type; this machine has no such device, so torch's view of it is patched: contract test)."""

    asked: typing.ClassVar[list] = []

    @hookimpl
    def accelerate_core_devices(self):
        return [DeviceSpec(name="hpu", dist_backend="hccl")]

    @hookimpl
    def accelerate_core_device_memory_info(self, device):
        self.asked.append(device)
        return (1000 * (device.index + 1), 10_000)


@pytest.mark.contract
def test_a_plugin_accelerator_takes_part_in_device_maps(monkeypatch):
    plugin = FakeAccelerator()
    FakeAccelerator.asked = []
    get_plugin_manager().register(plugin, "accelerate-fake-hpu")
    monkeypatch.setattr(device_map_module, "accelerator_type", lambda: "hpu")
    monkeypatch.setattr(torch.accelerator, "device_count", lambda: 2)
    monkeypatch.setattr(device_map_module, "_touch", lambda device: None)
    memory = get_max_memory()
    assert FakeAccelerator.asked == [torch.device("hpu", 0), torch.device("hpu", 1)]
    assert memory[0] == 1000 and memory[1] == 2000 and "cpu" in memory
    model = torch.nn.Sequential(*[torch.nn.Linear(10, 10) for _ in range(6)])  # 440 bytes each
    device_map = infer_auto_device_map(model)
    # hpu:0 keeps room for the largest layer (offload runs there): 1000 - 440 holds one layer.
    assert dict(device_map) == {"0": 0, "1": 1, "2": 1, "3": 1, "4": 1, "5": "cpu"}
