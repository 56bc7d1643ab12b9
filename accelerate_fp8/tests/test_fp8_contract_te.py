"""TransformerEngine backend against a stand-in ``transformer_engine`` (TE needs an NVIDIA GPU).

Checks the contract: which modules are swapped and with what arguments, that weights are copied,
that the forward runs inside TE's fp8 autocast built from the recipe (and bf16 torch.autocast),
and the errors for old TE options, missing TE and unsuitable hardware.
"""

from __future__ import annotations

import pytest
import torch
from fp8_testing_utils import Net, install_fake_transformer_engine, make_net, pretend_gpu

import accelerate_fp8
from accelerate_core import Accelerator, ConfigurationError
from accelerate_fp8 import FP8BackendNotInstalledError, FP8HardwareError

pytestmark = [pytest.mark.contract, pytest.mark.timeout(60)]

TE = {"fp8": {"backend": "te"}}


def test_fp8_contract_te_swaps_planned_linears_and_layernorms_with_copied_weights(monkeypatch):
    te = install_fake_transformer_engine(monkeypatch)
    pretend_gpu(monkeypatch)
    original = make_net()
    expected = {k: v.clone() for k, v in original.state_dict().items()}
    model = Accelerator(mixed_precision="fp8", cpu=True, precision_options=TE).prepare(original)

    swapped = {n for n, m in model.named_modules() if isinstance(m, te["Linear"])}
    assert swapped == set(Net.CONVERTED)
    assert {n for n, m in model.named_modules() if isinstance(m, te["LayerNorm"])} == {
        "blocks.0.norm",
        "blocks.1.norm",
    }
    assert type(model.embed) is torch.nn.Linear and type(model.odd) is torch.nn.Linear
    assert ("Linear", 64, 128, "cpu") in te["created"]  # created on the process's device
    state = model.state_dict()
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(state[key], value), key
    report = accelerate_fp8.conversion_report(model)
    assert report.backend == "te" and report.count == 4
    assert report.extra == {"layernorms_swapped": 2}


def test_fp8_contract_te_forward_runs_in_fp8_autocast_from_the_recipe(monkeypatch):
    te = install_fake_transformer_engine(monkeypatch)
    pretend_gpu(monkeypatch)
    recipe = {"backend": "te", "fp8_format": "E4M3", "margin": 2, "amax_history_len": 16}
    recipe["amax_compute_algo"] = "most_recent"
    accelerator = Accelerator(mixed_precision="fp8", cpu=True, precision_options={"fp8": recipe})
    model = accelerator.prepare(make_net())
    model(torch.randn(4, 32))

    assert len(te["forward"]) == 4  # each TE Linear ran once
    for te_recipe, bf16_autocast in te["forward"]:
        assert te_recipe == te["DelayedScaling"](
            margin=2, fp8_format=te["Format"].E4M3, amax_history_len=16,
            amax_compute_algo="most_recent",
        )  # fmt: skip
        assert bf16_autocast  # torch.autocast(bf16) around TE's context
    assert te["active"] == []  # the context was left


def test_fp8_contract_te_older_fp8_autocast_and_interval(monkeypatch):
    te = install_fake_transformer_engine(monkeypatch, new_autocast=False, with_interval=True)
    pretend_gpu(monkeypatch)
    options = {"fp8": {"backend": "te", "interval": 4, "autocast_dtype": "fp32"}}
    model = Accelerator(mixed_precision="fp8", cpu=True, precision_options=options).prepare(
        make_net()
    )
    model(torch.randn(4, 32))
    te_recipe, bf16_autocast = te["forward"][0]
    assert te_recipe.interval == 4 and te_recipe.fp8_format is te["Format"].HYBRID
    assert not bf16_autocast  # autocast_dtype='fp32': only TE's context


def test_fp8_contract_te_interval_without_support_is_an_error(monkeypatch):
    install_fake_transformer_engine(monkeypatch, with_interval=False)
    pretend_gpu(monkeypatch)
    with pytest.raises(ConfigurationError, match="interval=4 is not supported by the installed"):
        Accelerator(
            mixed_precision="fp8",
            cpu=True,
            precision_options={"fp8": {"backend": "te", "interval": 4}},
        )


def test_fp8_contract_te_missing_library_names_the_pip_command(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "transformer_engine", None)
    with pytest.raises(FP8BackendNotInstalledError, match=r'pip install "accelerate-fp8\[te\]"'):
        Accelerator(mixed_precision="fp8", cpu=True, precision_options=TE)


def test_fp8_contract_te_broken_install_is_an_error_not_a_fallback(monkeypatch, tmp_path):
    import sys

    package = tmp_path / "transformer_engine"
    package.mkdir()
    (package / "__init__.py").write_text("raise OSError('libcudart.so.12: cannot open')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "transformer_engine", raising=False)
    with pytest.raises(FP8BackendNotInstalledError, match=r"fails to import.*libcudart"):
        Accelerator(mixed_precision="fp8", cpu=True, precision_options=TE)
    monkeypatch.delitem(sys.modules, "transformer_engine", raising=False)


def test_fp8_contract_te_on_cpu_is_a_hardware_error(monkeypatch):
    install_fake_transformer_engine(monkeypatch)
    with pytest.raises(FP8HardwareError, match=r"runs on CUDA only.*this process runs on cpu"):
        Accelerator(mixed_precision="fp8", cpu=True, precision_options=TE)


def test_fp8_contract_te_on_a_gpu_without_fp8_is_a_hardware_error(monkeypatch):
    install_fake_transformer_engine(monkeypatch)
    pretend_gpu(monkeypatch, capability=(8, 0))
    with pytest.raises(FP8HardwareError, match=r"compute capability >= 8\.9.*has compute capa"):
        Accelerator(mixed_precision="fp8", cpu=True, precision_options=TE)
