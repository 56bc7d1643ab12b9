"""MS-AMP backend against a stand-in ``msamp`` (MS-AMP needs an NVIDIA GPU and a source build).

Checks the contract: ``msamp.initialize`` runs before device placement and before wrapping, with
the recipe's opt_level, on the model and optimizer of one prepare call; the recipe's filter
reaches MS-AMP as ``use_fp32_linear``; schedulers follow the new optimizer; errors are clear.
"""

from __future__ import annotations

import sys

import pytest
import torch
from fp8_testing_utils import (
    FakeFP8Linear,
    Net,
    install_fake_msamp,
    make_net,
    pretend_gpu,
    record_placement,
    register_recording_backend,
)

import accelerate_fp8
from accelerate_core import Accelerator, ConfigurationError
from accelerate_fp8 import FP8BackendNotInstalledError, FP8HardwareError

pytestmark = [pytest.mark.contract, pytest.mark.timeout(60)]


def msamp_accelerator(opt_level: str = "O2", **kwargs) -> Accelerator:
    options = {"fp8": {"backend": "msamp", "opt_level": opt_level}}
    return Accelerator(mixed_precision="fp8", cpu=True, precision_options=options, **kwargs)


def test_fp8_contract_msamp_initialize_runs_before_placement_and_wrapping(monkeypatch):
    events = []
    install_fake_msamp(monkeypatch, events)
    pretend_gpu(monkeypatch, capability=(8, 0))
    register_recording_backend(events)
    accelerator = msamp_accelerator("O1", backend="recording")
    model = make_net()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    record_placement(model, events)
    prepared_model, prepared_optimizer = accelerator.prepare(model, optimizer)

    assert [e[0] for e in events] == ["msamp.initialize", "to", "wrap"]
    _, opt_level, device, given_optimizer = events[0]
    assert opt_level == "O1" and given_optimizer is optimizer and device == "cpu"
    assert "FakeFP8Linear" in events[2][2]  # the backend wraps the converted model
    assert prepared_optimizer.optimizer is not optimizer  # MS-AMP's optimizer is the one used
    assert prepared_model is model


def test_fp8_contract_msamp_filter_reaches_msamp_as_use_fp32_linear(monkeypatch):
    install_fake_msamp(monkeypatch, [])
    pretend_gpu(monkeypatch)
    model = make_net()
    optimizer = torch.optim.AdamW(model.parameters())
    model, optimizer = msamp_accelerator().prepare(model, optimizer)

    converted = {n for n, m in model.named_modules() if isinstance(m, FakeFP8Linear)}
    assert converted == set(Net.CONVERTED)
    for name in ("embed", "odd", "odd_out", "head"):
        assert model.get_submodule(name).use_fp32_linear is True
    assert accelerate_fp8.converted_layer_count(model) == 4
    assert accelerate_fp8.conversion_report(model).extra == {"opt_level": "O2"}
    # The new optimizer holds the new parameters and training steps them.
    params = {id(p) for g in optimizer.optimizer.param_groups for p in g["params"]}
    assert params == {id(p) for p in model.parameters()}
    before = model.blocks[0].up.weight.detach().clone()
    model(torch.randn(4, 32)).pow(2).mean().backward()
    optimizer.step()
    assert not torch.equal(before, model.blocks[0].up.weight)


def test_fp8_contract_msamp_schedulers_follow_the_new_optimizer(monkeypatch):
    install_fake_msamp(monkeypatch, [])
    pretend_gpu(monkeypatch)
    model = make_net()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    model, optimizer, scheduler = msamp_accelerator().prepare(model, optimizer, scheduler)
    assert scheduler.scheduler.optimizer is optimizer.optimizer
    model(torch.randn(4, 32)).sum().backward()
    optimizer.step()
    scheduler.step()
    assert optimizer.optimizer.param_groups[0]["lr"] == pytest.approx(0.5)


@pytest.mark.parametrize("objects", ["model", "optimizer", "two models"])
def test_fp8_contract_msamp_needs_one_model_with_its_optimizer(monkeypatch, objects):
    install_fake_msamp(monkeypatch, [])
    pretend_gpu(monkeypatch)
    model = make_net()
    given = {
        "model": [model],
        "optimizer": [torch.optim.AdamW(model.parameters())],
        "two models": [model, make_net(1), torch.optim.AdamW(model.parameters())],
    }[objects]
    with pytest.raises(ConfigurationError, match="one model together with its optimizer"):
        msamp_accelerator().prepare(*given)


def test_fp8_contract_msamp_missing_library_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "msamp", None)
    with pytest.raises(FP8BackendNotInstalledError, match=r"not on PyPI.*github\.com/Azure/MS-AMP"):
        msamp_accelerator()


def test_fp8_contract_msamp_on_cpu_is_a_hardware_error(monkeypatch):
    install_fake_msamp(monkeypatch, [])
    with pytest.raises(FP8HardwareError, match="runs on CUDA only"):
        msamp_accelerator()
