"""fp8 training with the real torchao on CPU (``torch._scaled_mm`` has a CPU kernel), through a
real ``Accelerator``: conversion counts, training, accuracy against bf16, checkpoints, warnings."""

from __future__ import annotations

import logging

import pytest
import torch
from fp8_testing_utils import (
    Net,
    make_net,
    record_placement,
    register_recording_backend,
    tail_mean,
    train,
)
from torch import nn

import accelerate_fp8
from accelerate_core import Accelerator
from accelerate_fp8 import FP8NoLayersConvertedWarning, FP8Recipe

pytest.importorskip("torchao.float8")
from torchao.float8.float8_linear import Float8Linear

pytestmark = pytest.mark.timeout(180)  # torchao start-up and CPU fp8 emulation on 2 busy cores


def test_fp8_torchao_cpu_has_an_fp8_matmul_kernel():
    from accelerate_fp8.support import scaled_mm_error

    assert scaled_mm_error("cpu") is None


def test_fp8_torchao_converted_count_is_exact_and_explained(caplog):
    accelerator = Accelerator(mixed_precision="fp8", cpu=True)
    with caplog.at_level(logging.INFO, logger="accelerate_fp8"):
        model = accelerator.prepare(make_net())
    assert accelerate_fp8.converted_layer_count(model) == 4
    report = accelerate_fp8.conversion_report(model)
    assert report.backend == "torchao" and report.converted == Net.CONVERTED
    assert report.linear_count == 8
    assert report.skipped == {
        "embed": "first Linear (skip_first_last=True)",
        "odd": "in_features=64, out_features=40 are not both multiples of 16",
        "odd_out": "in_features=40, out_features=64 are not both multiples of 16",
        "head": "last Linear (skip_first_last=True)",
    }
    fp8 = {n for n, m in model.named_modules() if isinstance(m, Float8Linear)}
    assert fp8 == set(Net.CONVERTED)
    assert "converted 4 of 8 Linear layers of Net" in caplog.text


def test_fp8_torchao_filter_options_change_the_count():
    accelerator = Accelerator(
        mixed_precision="fp8",
        cpu=True,
        precision_options={
            "fp8": FP8Recipe(
                skip_first_last=False,
                exclude=("blocks.1",),
                module_filter=lambda module, name: name != "blocks.0.down",
            )
        },
    )
    model = accelerator.prepare(make_net())
    # embed and head are now eligible; blocks.1.* excluded; blocks.0.down rejected by the filter.
    assert accelerate_fp8.conversion_report(model).converted == ("embed", "blocks.0.up", "head")


def test_fp8_torchao_recipe_reaches_the_float8_config():
    recipe = FP8Recipe(fp8_format="E4M3", fsdp_fp8_all_gather=True)
    model = Accelerator(mixed_precision="fp8", cpu=True, precision_options={"fp8": recipe}).prepare(
        make_net()
    )
    config = model.blocks[0].up.config
    assert config.cast_config_grad_output.target_dtype == torch.float8_e4m3fn
    assert config.enable_fsdp_float8_all_gather is True


def test_fp8_torchao_rowwise_recipe_is_axiswise():
    from accelerate_fp8.backend_torchao import float8_config
    from torchao.float8.config import ScalingGranularity

    config = float8_config(FP8Recipe(scaling="rowwise"))
    assert config.cast_config_input.scaling_granularity is ScalingGranularity.AXISWISE
    assert config.cast_config_grad_output.target_dtype == torch.float8_e4m3fn
    assert config.round_scales_to_power_of_2
    hybrid = float8_config(FP8Recipe(scaling="rowwise", fp8_format="HYBRID"))
    assert hybrid.cast_config_grad_output.target_dtype == torch.float8_e5m2


def test_fp8_torchao_forward_runs_fp8_matmuls():
    model = Accelerator(mixed_precision="fp8", cpu=True).prepare(make_net())
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        model(torch.randn(8, 32)).sum().backward()
    calls = [e for e in profile.events() if e.name == "aten::_scaled_mm"]
    assert len(calls) >= 4 * 3  # 4 fp8 Linears: forward, grad_input and grad_weight matmuls


def test_fp8_torchao_converts_before_placement_and_before_wrapping():
    events = []
    register_recording_backend(events)
    accelerator = Accelerator(mixed_precision="fp8", cpu=True, backend="recording")
    model = make_net()
    record_placement(model, events)
    accelerator.prepare(model)
    assert events[0] == ("to", "cpu")
    assert events[1][0] == "wrap" and "Float8Linear" in events[1][2]
    assert accelerate_fp8.converted_layer_count(model) == 4  # in place: same object


def test_fp8_torchao_every_model_of_one_prepare_call_is_converted():
    accelerator = Accelerator(mixed_precision="fp8", cpu=True)
    first, second = accelerator.prepare(make_net(0), make_net(1))
    assert accelerate_fp8.converted_layer_count(first) == 4
    assert accelerate_fp8.converted_layer_count(second) == 4


def test_fp8_torchao_count_is_found_through_a_wrapper_and_absent_without_fp8():
    model = Accelerator(mixed_precision="fp8", cpu=True).prepare(make_net())
    wrapper = nn.Sequential(model)  # as a DDP / compile wrapper holds the module
    assert accelerate_fp8.converted_layer_count(wrapper) == 4
    with pytest.raises(ValueError, match="was not converted to fp8"):
        accelerate_fp8.converted_layer_count(make_net())


def test_fp8_torchao_zero_converted_layers_warns():
    # Every Linear fails the filter: first/last, or dimensions that are not multiples of 16.
    model = nn.Sequential(nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 40), nn.Linear(40, 16))
    accelerator = Accelerator(mixed_precision="fp8", cpu=True)
    with pytest.warns(FP8NoLayersConvertedWarning, match="no Linear layer of Sequential"):
        model = accelerator.prepare(model)
    assert accelerate_fp8.converted_layer_count(model) == 0
    assert len(accelerate_fp8.conversion_report(model).skipped) == 3


def test_fp8_torchao_training_loss_decreases():
    losses, model, _ = train("fp8")
    assert accelerate_fp8.converted_layer_count(model) == 4
    assert all(torch.isfinite(torch.tensor(losses)))
    assert tail_mean(losses) < 0.3 * losses[0]


@pytest.mark.parametrize("reference", ["bf16", "no"])
def test_fp8_torchao_final_loss_matches_high_precision_run(reference):
    fp8_losses, _, _ = train("fp8")
    from accelerate_core.state import reset_state

    reset_state()  # a second Accelerator in this process with another precision
    ref_losses, _, _ = train(reference)
    assert abs(tail_mean(fp8_losses) - tail_mean(ref_losses)) <= 0.03 * tail_mean(ref_losses)


def test_fp8_torchao_autocast_dtype_decides_the_precision_of_other_ops():
    seen = {}

    def record(name):
        return lambda module, args, output: seen.__setitem__(name, output.dtype)

    for dtype in ("bf16", "fp32"):
        from accelerate_core.state import reset_state

        reset_state()
        accelerator = Accelerator(
            mixed_precision="fp8", cpu=True, precision_options={"fp8": {"autocast_dtype": dtype}}
        )
        model = accelerator.prepare(make_net())
        model.embed.register_forward_hook(record(f"{dtype}-embed"))  # a high-precision Linear
        output = model(torch.randn(4, 32))
        assert output.dtype == torch.float32  # the core returns fp32 outputs
    assert seen == {"bf16-embed": torch.bfloat16, "fp32-embed": torch.float32}


def test_fp8_torchao_state_dict_round_trips_into_a_fresh_converted_model(tmp_path):
    _, model, accelerator = train("fp8", steps=10)
    state = accelerator.get_state_dict(model)
    assert all(type(t) is torch.Tensor for t in state.values())  # plain tensors, no subclasses
    torch.save(state, tmp_path / "model.pt")

    fresh = accelerator.prepare(make_net(seed=123))
    assert accelerate_fp8.converted_layer_count(fresh) == 4
    fresh.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    x = torch.randn(16, 32)
    with torch.no_grad():
        assert torch.equal(model(x), fresh(x))
    # The checkpoint is an ordinary one: a model that never saw fp8 loads it too.
    plain = make_net(seed=7)
    plain.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
