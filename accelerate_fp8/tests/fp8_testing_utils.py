"""Shared pieces of the accelerate-fp8 tests: a small model, its data, a training loop, and
stand-ins for TransformerEngine and MS-AMP (CUDA-only libraries that cannot run here)."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import sys
import types
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from accelerate_core import Accelerator, BackendSpec, hookimpl
from accelerate_core.plugins import get_plugin_manager

WIDTH = 64
STEPS = 60
BATCH = 64
LR = 3e-3


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, 2 * width)
        self.down = nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(nn.functional.gelu(self.up(self.norm(x))))


class Net(nn.Module):
    """8 Linear layers; the default filter converts exactly the 4 inside ``blocks``.

    ``embed`` is the first Linear, ``head`` the last, ``odd``/``odd_out`` have a dimension (40)
    that is not a multiple of 16.
    """

    CONVERTED = ("blocks.0.up", "blocks.0.down", "blocks.1.up", "blocks.1.down")

    def __init__(self, width: int = WIDTH) -> None:
        super().__init__()
        self.embed = nn.Linear(32, width)
        self.blocks = nn.ModuleList([Block(width) for _ in range(2)])
        self.odd = nn.Linear(width, 40)
        self.odd_out = nn.Linear(40, width)
        self.head = nn.Linear(width, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        h = h + self.odd_out(torch.relu(self.odd(h)))
        return self.head(h)


def make_net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net()


def data(samples: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(samples, 32, generator=generator)
    return x, torch.tanh(x @ torch.randn(32, 16, generator=generator))


def train(
    mixed_precision: str, steps: int = STEPS, **precision_options: Any
) -> tuple[list[float], nn.Module, Accelerator]:
    """Train ``Net`` with a real Accelerator; returns losses, prepared model and accelerator."""
    model = make_net()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    accelerator = Accelerator(
        mixed_precision=mixed_precision, cpu=True, precision_options=precision_options or None
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    x, y = data()
    losses = []
    for step in range(steps):
        start = (step * BATCH) % len(x)
        loss = nn.functional.mse_loss(model(x[start : start + BATCH]), y[start : start + BATCH])
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses, model, accelerator


def tail_mean(losses: list[float], n: int = 5) -> float:
    return sum(losses[-n:]) / n


# --------------------------------------------------------------------------- recording backend


class RecordingBackend:
    """A single-process backend that records what ``accelerate_core_wrap`` receives."""

    def __init__(self, events: list[tuple[Any, ...]]) -> None:
        self.events = events

    @hookimpl
    def accelerate_core_backends(self) -> list[BackendSpec]:
        return [BackendSpec("recording", distributed=False)]

    @hookimpl
    def accelerate_core_wrap(self, request: Any, context: Any) -> None:
        for model in request.models:
            kinds = sorted({type(m).__name__ for m in model.modules()})
            self.events.append(("wrap", next(model.parameters()).device.type, kinds))
        return None


def register_recording_backend(events: list[tuple[Any, ...]]) -> None:
    get_plugin_manager().register(RecordingBackend(events), "fp8-tests")


def record_placement(model: nn.Module, events: list[tuple[Any, ...]]) -> None:
    """Record ``model.to(...)`` calls (the core's device placement) in ``events``."""
    original = model.to

    def to(*args: Any, **kwargs: Any) -> nn.Module:
        events.append(("to", str(args[0]) if args else str(kwargs.get("device"))))
        return original(*args, **kwargs)

    model.__dict__["to"] = to


# --------------------------------------------------------------------------- stand-in libraries


def _module(name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


def install_fake_transformer_engine(
    monkeypatch: Any, *, new_autocast: bool = True, with_interval: bool = False
) -> dict[str, Any]:
    """Put a stand-in ``transformer_engine`` into ``sys.modules``; returns its recorded state.

    ``new_autocast`` offers ``te.autocast(enabled, recipe)`` (TransformerEngine >= 2.8) instead of
    ``te.fp8_autocast(enabled, fp8_recipe)``; ``with_interval`` gives ``DelayedScaling`` the
    ``interval`` field of TransformerEngine 1.x.
    """
    state: dict[str, Any] = {"active": [], "forward": [], "created": []}

    class Format(enum.Enum):
        E4M3 = "E4M3"
        E5M2 = "E5M2"
        HYBRID = "HYBRID"

    fields_ = [
        ("margin", int, 0),
        ("fp8_format", Format, Format.HYBRID),
        ("amax_history_len", int, 1024),
        ("amax_compute_algo", str, "max"),
    ]
    if with_interval:
        fields_.append(("interval", int, 1))
    DelayedScaling = dataclasses.make_dataclass(
        "DelayedScaling", [(n, t, dataclasses.field(default=d)) for n, t, d in fields_]
    )

    class Linear(nn.Module):
        def __init__(self, in_features, out_features, bias=True, params_dtype=None, device="cuda"):
            super().__init__()
            state["created"].append(("Linear", in_features, out_features, str(device)))
            self.in_features, self.out_features = in_features, out_features
            self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=params_dtype))
            self.bias = nn.Parameter(torch.empty(out_features)) if bias else None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            recipe = state["active"][-1] if state["active"] else None
            state["forward"].append((recipe, torch.is_autocast_enabled("cpu")))
            return nn.functional.linear(x, self.weight, self.bias)

    class LayerNorm(nn.Module):
        def __init__(self, hidden_size, eps=1e-5, params_dtype=None, device="cuda"):
            super().__init__()
            state["created"].append(("LayerNorm", hidden_size, eps, str(device)))
            self.eps = eps
            self.weight = nn.Parameter(torch.empty(hidden_size, dtype=params_dtype))
            self.bias = nn.Parameter(torch.empty(hidden_size, dtype=params_dtype))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)

    @contextlib.contextmanager
    def _autocast(enabled: bool, recipe: Any) -> Iterator[None]:
        state["active"].append(recipe if enabled else None)
        try:
            yield
        finally:
            state["active"].pop()

    pytorch_attrs: dict[str, Any] = {"Linear": Linear, "LayerNorm": LayerNorm}
    if new_autocast:
        pytorch_attrs["autocast"] = lambda enabled=True, recipe=None: _autocast(enabled, recipe)
    else:
        pytorch_attrs["fp8_autocast"] = lambda enabled=True, fp8_recipe=None: _autocast(
            enabled, fp8_recipe
        )
    recipe_module = _module(
        "transformer_engine.common.recipe", DelayedScaling=DelayedScaling, Format=Format
    )
    common = _module("transformer_engine.common", recipe=recipe_module)
    pytorch = _module("transformer_engine.pytorch", **pytorch_attrs)
    root = _module("transformer_engine", pytorch=pytorch, common=common)
    for module in (root, pytorch, common, recipe_module):
        monkeypatch.setitem(sys.modules, module.__name__, module)
    state.update(Linear=Linear, LayerNorm=LayerNorm, DelayedScaling=DelayedScaling, Format=Format)
    return state


class FakeFP8Linear(nn.Module):
    """MS-AMP's FP8Linear stand-in: not an ``nn.Linear`` (as the real one)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = nn.Parameter(linear.weight.detach().clone())
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight, self.bias)


def install_fake_msamp(monkeypatch: Any, events: list[tuple[Any, ...]]) -> types.ModuleType:
    """A stand-in ``msamp`` whose ``initialize`` behaves like MS-AMP's and records its call."""

    def replace(module: nn.Module) -> nn.Module:
        if isinstance(module, nn.Linear):
            return module if getattr(module, "use_fp32_linear", False) else FakeFP8Linear(module)
        for name, child in list(module.named_children()):
            setattr(module, name, replace(child))
        return module

    def initialize(model, optimizer=None, opt_level="O1"):
        events.append(
            ("msamp.initialize", opt_level, next(model.parameters()).device.type, optimizer)
        )
        index = {id(p): i for i, p in enumerate(model.parameters())}
        order = [index[id(p)] for group in optimizer.param_groups for p in group["params"]]
        model = replace(model)
        params = list(model.parameters())
        position = 0
        for group in optimizer.param_groups:
            for i in range(len(group["params"])):
                group["params"][i] = params[order[position]]
                position += 1
        defaults = {k: optimizer.defaults[k] for k in ("lr", "betas", "eps", "weight_decay")}
        new_optimizer = torch.optim.AdamW(optimizer.param_groups, **defaults)
        return model, new_optimizer

    module = _module("msamp", initialize=initialize, __version__="0.4.0")
    monkeypatch.setitem(sys.modules, "msamp", module)
    return module


def pretend_gpu(monkeypatch: Any, capability: tuple[int, int] = (9, 0)) -> None:
    """Make the hardware check see an NVIDIA GPU of ``capability`` (the process stays on CPU)."""
    from accelerate_fp8 import support

    monkeypatch.setattr(support, "cuda_capability", lambda device: capability)
