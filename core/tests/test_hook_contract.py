"""Every family hook is asked of the selected plugin, at the documented moment, and used."""

from __future__ import annotations

import contextlib

import pytest
import torch

from accelerate_core import Accelerator, BackendSpec, DeviceSpec, PrecisionSpec, hookimpl
from accelerate_core.builtin import environments, precisions, single_process
from accelerate_core.plugins import PluginManager, get_plugin_manager, set_plugin_manager


class Wrapper(torch.nn.Module):
    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, *args):
        return self.module(*args)


class RecordingPlugin:
    """A backend + precision + device plugin that records when each hook is asked and used."""

    def __init__(self):
        self.events = []

    @hookimpl
    def accelerate_core_backends(self):
        return [BackendSpec("recording", distributed=False)]

    @hookimpl
    def accelerate_core_precisions(self):
        return [PrecisionSpec("halfish", requires_device_support="halfish")]

    @hookimpl
    def accelerate_core_devices(self):
        return [DeviceSpec("cpu", "gloo", frozenset({"halfish"}))]

    @hookimpl
    def accelerate_core_setup_device(self, device):
        self.events.append(("setup_device", device.type))
        return True

    @hookimpl
    def accelerate_core_convert(self, request, context):
        model = request.models[0]
        self.events.append(("convert", context.mixed_precision, next(model.parameters()).device))
        return None

    @hookimpl
    def accelerate_core_autocast(self, context):
        events = self.events

        @contextlib.contextmanager
        def autocast():
            events.append(("autocast",))
            yield

        return autocast

    @hookimpl
    def accelerate_core_grad_scaler(self, context):
        return None

    @hookimpl
    def accelerate_core_wrap(self, request, context):
        self.events.append(("wrap", type(request.models[0]).__name__, len(request.optimizers)))
        request.models[0] = Wrapper(request.models[0])
        return request

    @hookimpl
    def accelerate_core_unwrap_model(self, model):
        return model.module if isinstance(model, Wrapper) else model

    @hookimpl
    def accelerate_core_backward(self, context, scaler):
        def backward(loss, **kwargs):
            self.events.append(("backward",))
            loss.backward(**kwargs)

        return backward

    @hookimpl
    def accelerate_core_no_sync(self, context):
        @contextlib.contextmanager
        def no_sync(model):
            self.events.append(("no_sync", type(model).__name__))
            yield

        return no_sync

    @hookimpl
    def accelerate_core_clip_grad_norm(self, context):
        def clip(parameters, max_norm, norm_type=2.0):
            self.events.append(("clip", max_norm))
            return torch.tensor(0.0)

        return clip

    @hookimpl
    def accelerate_core_optimizer_step(self, context, scaler):
        def step(optimizer):
            self.events.append(("step",))
            optimizer.step()

        return step

    @hookimpl
    def accelerate_core_get_state_dict(self, model, context):
        return {"from": "plugin"}


def test_family_hooks_are_asked_once_and_used_at_the_right_moments():
    plugin = RecordingPlugin()
    manager = PluginManager(
        (*environments.DETECTORS, precisions, single_process, plugin), load_entry_points=False
    )
    set_plugin_manager(manager)
    accelerator = Accelerator(
        backend="recording", mixed_precision="halfish", cpu=True, gradient_accumulation_steps=2
    )
    assert plugin.events == [("setup_device", "cpu")]
    inner = torch.nn.Linear(2, 1)
    model, optimizer = accelerator.prepare(inner, torch.optim.SGD(inner.parameters(), lr=0.1))
    assert plugin.events[1:] == [
        ("convert", "halfish", torch.device("cpu")),
        ("wrap", "Linear", 1),
    ]
    assert isinstance(model, Wrapper) and accelerator.unwrap_model(model) is inner
    plugin.events.clear()
    for _ in range(2):
        with accelerator.accumulate(model):
            accelerator.backward(model(torch.ones(1, 2)).sum())
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
    assert plugin.events == [
        ("no_sync", "Wrapper"),
        ("autocast",),
        ("backward",),  # micro-step: no sync, no clip
        ("autocast",),
        ("backward",),
        ("clip", 1.0),
        ("step",),  # syncing step
    ]
    assert accelerator.get_state_dict(model) == {"from": "plugin"}


def test_builtin_defaults_answer_the_device_hooks_for_cpu():
    manager = get_plugin_manager()
    owner = manager.registry()["device"]["cpu"].plugin
    cpu = torch.device("cpu")
    state = manager.call_owner("accelerate_core_device_rng_state", owner, device=cpu)
    expected = torch.rand(3)
    torch.rand(5)
    assert manager.call_owner(
        "accelerate_core_set_device_rng_state", owner, device=cpu, rng_state=state
    )
    assert torch.equal(torch.rand(3), expected)
    assert manager.call_owner("accelerate_core_device_memory_stats", owner, device=cpu) is None
    assert manager.call_owner("accelerate_core_synchronize", owner, device=cpu) is True


def test_default_get_state_dict_is_the_unwrapped_models():
    accelerator = Accelerator(cpu=True, mixed_precision="bf16")
    model = accelerator.prepare(torch.nn.Linear(2, 1))
    state = accelerator.get_state_dict(model)
    assert set(state) == {"weight", "bias"}
    assert torch.equal(state["weight"], model.weight)


class NamedCpuDevice:
    """A vendor-style device plugin that drives the CPU its own way, selected by name."""

    def __init__(self):
        self.calls = []

    @hookimpl
    def accelerate_core_devices(self):
        return [
            DeviceSpec("vendor-cpu", "gloo", frozenset({"bf16"}), device_type="cpu"),
            DeviceSpec("vendor-gpu", "vccl", frozenset(), device_type="cuda"),
        ]

    @hookimpl
    def accelerate_core_setup_device(self, device):
        self.calls.append(("setup", str(device)))
        return True


def test_a_plugin_device_is_selected_by_name(monkeypatch):
    from accelerate_core import ConfigurationError, PartialState, PluginNotInstalledError

    plugin = NamedCpuDevice()
    manager = get_plugin_manager()
    manager.register(plugin, "accelerate-vendor 1.0")
    monkeypatch.setenv("ACCELERATE_CORE_DEVICE", "vendor-cpu")
    state = PartialState()
    assert state.device == torch.device("cpu")
    assert state.device_spec.name == "vendor-cpu" and state.device_owner is plugin
    assert plugin.calls == [("setup", "cpu")]
    from accelerate_core.state import reset_state

    reset_state()
    with pytest.raises(
        ConfigurationError,
        match="not supported on device 'vendor-cpu' \\(cpu\\) \\(supported there: bf16\\)",
    ):
        Accelerator(mixed_precision="fp16")
    for name in ("vendor-gpu", "vendor-cpu"):  # --cpu means the core's cpu device, no other
        reset_state()
        monkeypatch.setenv("ACCELERATE_CORE_DEVICE", name)
        with pytest.raises(
            ConfigurationError, match=f"cpu=True contradicts the selected device '{name}'"
        ):
            PartialState(cpu=True)
    monkeypatch.setenv("ACCELERATE_CORE_DEVICE", "nonexistent")
    with pytest.raises(
        PluginNotInstalledError, match=r"device 'nonexistent' is not installed.*vendor-cpu"
    ):
        PartialState()
