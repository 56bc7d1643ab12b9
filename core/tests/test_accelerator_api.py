"""Accelerator's single-process API: prepare, placement, helpers and the bad-input errors."""

from __future__ import annotations

import dataclasses
import gc
import weakref
from collections import OrderedDict, namedtuple

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from accelerate_core import (
    Accelerator,
    ConfigurationError,
    DeviceSpec,
    PluginNotInstalledError,
    hookimpl,
    send_to_device,
)
from accelerate_core.builtin import environments, precisions, single_process
from accelerate_core.data import DataLoaderShard
from accelerate_core.optimizer import AcceleratedOptimizer
from accelerate_core.plugins import PluginManager, set_plugin_manager
from accelerate_core.scheduler import AcceleratedScheduler


def parts():
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    loader = DataLoader(TensorDataset(torch.randn(10, 3), torch.randn(10, 1)), batch_size=4)
    return model, optimizer, scheduler, loader


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("steps", [0, -1, 2.5, "4", True])
def test_gradient_accumulation_steps_below_one_or_not_int(steps):
    with pytest.raises(
        ConfigurationError, match=r"gradient_accumulation_steps must be an integer >= 1"
    ):
        Accelerator(gradient_accumulation_steps=steps)


def test_unknown_mixed_precision_lists_valid_values(core_only):
    with pytest.raises(ConfigurationError) as info:
        Accelerator(mixed_precision="fp12")
    assert "unknown mixed_precision 'fp12'; valid values: bf16, fp16, no" in str(info.value)


def test_fp8_without_its_plugin_names_the_pip_command():
    set_plugin_manager(PluginManager(load_entry_points=False))  # as if accelerate-fp8 were absent
    with pytest.raises(
        PluginNotInstalledError,
        match="precision 'fp8' is not installed; pip install accelerate-fp8",
    ):
        Accelerator(mixed_precision="fp8")


def test_options_nobody_reads_are_refused_at_creation():
    with pytest.raises(ConfigurationError, match=r"backend 'none' takes no options, got"):
        Accelerator(cpu=True, backend_options={"typo": 1})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"scaler": {}}, r"unknown mixed_precision='no' option\(s\) scaler; valid: grad_scaler"),
        ({"grad_scaler": {"init": 2.0}}, r"unknown grad_scaler option\(s\) init; valid: init_sc"),
        ({"autocast": True}, r"precision option 'autocast' must be a dict of AutocastKwargs"),
    ],
)
def test_precision_options_are_checked_at_creation(options, message):
    with pytest.raises(ConfigurationError, match=message):
        Accelerator(cpu=True, precision_options=options)


def test_prepare_rejects_unknown_objects_and_says_what_it_takes():
    accelerator = Accelerator(cpu=True)
    with pytest.raises(TypeError) as info:
        accelerator.prepare(torch.nn.Linear(2, 2), {"not": "preparable"})
    message = str(info.value)
    assert "cannot handle an object of type dict" in message
    for accepted in ("torch.nn.Module", "torch.optim.Optimizer", "LRScheduler", "DataLoader"):
        assert accepted in message


class CpuWithoutHalf:
    """A device plugin for a CPU without fp16 kernels (stands in for such hardware)."""

    @hookimpl
    def accelerate_core_devices(self):
        return [DeviceSpec("cpu", "gloo", frozenset({"bf16"}))]


@pytest.mark.contract
def test_contract_fp16_on_a_device_without_fp16_is_an_error():
    builtins = (*environments.DETECTORS, precisions, single_process, CpuWithoutHalf())
    set_plugin_manager(PluginManager(builtins, load_entry_points=False))
    with pytest.raises(ConfigurationError) as info:
        Accelerator(mixed_precision="fp16", cpu=True)
    assert "mixed_precision='fp16' is not supported on device 'cpu' (supported there: bf16)" in str(
        info.value
    )


# --------------------------------------------------------------------------- prepare


def test_prepare_returns_objects_in_the_order_given_and_wraps_them():
    accelerator = Accelerator(cpu=True)
    model, optimizer, scheduler, loader = parts()
    out = accelerator.prepare(scheduler, loader, model, optimizer)
    assert [type(o) for o in out] == [
        AcceleratedScheduler,
        DataLoaderShard,
        torch.nn.Linear,
        AcceleratedOptimizer,
    ]
    assert out[2] is model  # one process: the model itself, placed on the device
    assert out[3].optimizer is optimizer and isinstance(out[3], torch.optim.Optimizer)
    assert out[0].optimizers == [out[3]]
    assert out[1].dataset is loader.dataset and len(out[1]) == len(loader) == 3
    single = accelerator.prepare(torch.nn.Linear(1, 1))
    assert isinstance(single, torch.nn.Linear)


def test_preparing_twice_returns_prepared_objects_unchanged():
    accelerator = Accelerator(cpu=True)
    model, optimizer, _, loader = parts()
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    again = accelerator.prepare(model, optimizer, loader)
    assert again[0] is model and again[1] is optimizer and again[2] is loader
    assert len(accelerator._optimizers) == 1


def test_optimizer_step_and_zero_grad_wait_for_the_sync_step():
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=2)
    model, optimizer, _, _ = parts()
    model, optimizer = accelerator.prepare(model, optimizer)
    before = model.weight.detach().clone()
    with accelerator.accumulate(model):
        accelerator.backward(model(torch.ones(1, 3)).sum())
        optimizer.step()
        optimizer.zero_grad()
    assert torch.equal(model.weight, before) and model.weight.grad is not None
    with accelerator.accumulate(model):
        accelerator.backward(model(torch.ones(1, 3)).sum())
        optimizer.step()
        optimizer.zero_grad()
    assert not torch.equal(model.weight, before) and model.weight.grad is None
    with pytest.raises(TypeError, match="does not take a closure"):
        optimizer.step(lambda: 0.0)


def test_dataloader_knows_its_last_batch_one_batch_early():
    accelerator = Accelerator(cpu=True)
    loader = accelerator.prepare(parts()[3])
    flags = [accelerator.gradient_state.end_of_dataloader for _ in loader]
    assert flags == [False, False, True]
    assert not accelerator.gradient_state.end_of_dataloader
    assert [len(x) for x, _ in loader] == [4, 4, 2]  # iterates again, same batches


def test_nested_dataloaders_track_their_own_end():
    accelerator = Accelerator(cpu=True)
    outer = accelerator.prepare(DataLoader(list(range(2)), batch_size=1))
    inner = accelerator.prepare(DataLoader(list(range(3)), batch_size=1))
    seen = []
    for _ in outer:
        outer_end = accelerator.gradient_state.end_of_dataloader
        seen.append([accelerator.gradient_state.end_of_dataloader for _ in inner])
        assert accelerator.gradient_state.end_of_dataloader == outer_end
    assert seen == [[False, False, True]] * 2


Pair = namedtuple("Pair", ["left", "right"])


@dataclasses.dataclass
class Batch:
    inputs: torch.Tensor
    meta: dict
    name: str = "b"


class Movable:
    def __init__(self):
        self.moved_to = None

    def to(self, device):
        self.moved_to = device
        return self


def test_send_to_device_keeps_nested_structures():
    device = torch.device("meta")  # a real device type, so the move is observable on a CPU box
    movable = Movable()
    batch = {
        "list": [torch.ones(1), (torch.ones(2), "text")],
        "pair": Pair(torch.ones(1), 3),
        "data": Batch(torch.ones(2), OrderedDict(mask=torch.ones(1))),
        "other": movable,
    }
    moved = send_to_device(batch, device)
    assert moved["list"][0].device.type == "meta" and moved["list"][1][1] == "text"
    assert isinstance(moved["list"][1], tuple) and moved["list"][1][0].device.type == "meta"
    assert isinstance(moved["pair"], Pair) and moved["pair"].left.device.type == "meta"
    assert moved["pair"].right == 3
    assert isinstance(moved["data"], Batch) and moved["data"].inputs.device.type == "meta"
    assert isinstance(moved["data"].meta, OrderedDict)
    assert moved["data"].meta["mask"].device.type == "meta" and moved["data"].name == "b"
    assert batch["data"].inputs.device.type == "cpu"  # the input is not modified
    assert movable.moved_to == device


def test_batches_are_placed_on_the_device_unless_disabled():
    accelerator = Accelerator(cpu=True)
    accelerator.state.device = torch.device("meta")  # observe placement without a GPU
    accelerator._resolve_plugin_callables()
    loader, unplaced = accelerator.prepare(parts()[3], parts()[3], device_placement=[True, False])
    x, y = next(iter(loader))
    assert x.device.type == "meta" and y.device.type == "meta"
    assert next(iter(unplaced))[0].device.type == "cpu"


def test_device_placement_length_must_match():
    accelerator = Accelerator(cpu=True)
    with pytest.raises(ConfigurationError, match="device_placement has 1 entries for 2 objects"):
        accelerator.prepare(*parts()[:2], device_placement=[True])


# --------------------------------------------------------------------------- helpers


def test_autocast_context_uses_the_selected_precision():
    accelerator = Accelerator(mixed_precision="bf16", cpu=True)
    with accelerator.autocast():
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32


def test_unwrap_model_removes_torch_compile_wrapper():
    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(2, 2)
    compiled = torch.compile(model)
    assert accelerator.unwrap_model(compiled) is model


def test_print_and_main_process_helpers(capsys):
    accelerator = Accelerator(cpu=True)
    accelerator.print("hello", 1)
    assert capsys.readouterr().out == "hello 1\n"
    calls = []

    @accelerator.on_main_process
    def record(value):
        calls.append(value)
        return value

    assert record(5) == 5 and calls == [5]
    with accelerator.main_process_first():
        calls.append("first")
    accelerator.wait_for_everyone()
    with accelerator.split_between_processes([1, 2, 3]) as share:
        assert share == [1, 2, 3]
    assert calls == [5, "first"]


def test_free_memory_drops_references():
    accelerator = Accelerator(cpu=True)
    model, optimizer, _, _ = parts()
    model, optimizer = accelerator.prepare(model, optimizer)
    ref = weakref.ref(model)
    model, optimizer = accelerator.free_memory(model, optimizer)
    gc.collect()
    assert model is None and optimizer is None and ref() is None
    assert accelerator._models == [] and accelerator._optimizers == []


def test_set_seed_makes_every_generator_repeat():
    import random

    import numpy as np

    from accelerate_core import set_seed

    set_seed(7)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    set_seed(7)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
