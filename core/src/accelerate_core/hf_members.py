"""The ``Accelerator`` members Hugging Face scripts use beyond the core loop (a mixin).

Properties HF exposes (``distributed_type``, ``dataloader_config``, a settable
``gradient_accumulation_steps``...), ``save``, checkpoint pre-hooks, early-stopping triggers,
``profile()``, ``trigger_sync_in_backward`` and ``torch.compile`` of prepared models
(``dynamo_backend``). Kept apart from ``accelerator.py`` so that the training loop's module stays
small; the ``Accelerator`` inherits these.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

from .distributed_type import DistributedType
from .errors import ConfigurationError
from .ops import uncompiled
from .utils.constants import PROFILE_PATTERN_NAME
from .utils.dataclasses import DataLoaderConfiguration, ProfileKwargs
from .utils.other import compile_regions, save

# HF's MULTI_* kinds that run on accelerators (``multi_device``).
_MULTI_DEVICE_PREFIX = "MULTI_"


def check_accumulation_steps(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(
            f"gradient_accumulation_steps must be an integer >= 1, got {value!r}; use 1 to step "
            "the optimizer on every batch"
        )
    return value


class HFMembers:
    """Mixin of the ``Accelerator``: HF's members that are not the training loop itself."""

    # Uses the Accelerator's state, gradient_state, project_configuration and _hf (the resolved
    # HF arguments), set by Accelerator.__init__.
    _flag_tensor: torch.Tensor | None = None  # set_trigger/check_trigger

    # ------------------------------------------------------------------ properties

    @property
    def distributed_type(self) -> DistributedType:
        """HF's ``DistributedType`` of this run (from the selected backend's record)."""
        return self.state.distributed_type

    @property
    def multi_device(self) -> bool:
        kind = self.distributed_type.value
        return (
            self.use_distributed and kind.startswith(_MULTI_DEVICE_PREFIX) and kind != "MULTI_CPU"
        )

    @property
    def deepspeed_plugin(self) -> Any:
        """The ``DeepSpeedPlugin`` given to the ``Accelerator`` (``None`` otherwise)."""
        return self.state.deepspeed_plugin

    @property
    def dataloader_config(self) -> DataLoaderConfiguration:
        return self._hf.dataloader

    @property
    def split_batches(self) -> bool:
        return self._hf.dataloader.split_batches

    @property
    def dispatch_batches(self) -> bool | None:
        return self._hf.dataloader.dispatch_batches

    @property
    def even_batches(self) -> bool:
        return self._hf.dataloader.even_batches

    @even_batches.setter
    def even_batches(self, value: bool) -> None:
        """Applies to dataloaders prepared afterwards."""
        self._hf.dataloader.even_batches = value

    @property
    def save_iteration(self) -> int:
        return self.project_configuration.iteration

    @property
    def is_fsdp2(self) -> bool:
        return self.state.backend == "fsdp"

    @property
    def should_save_model(self) -> bool:
        """Whether this process should write model files (``save_model`` gathers itself)."""
        return True

    @property
    def use_seedable_sampler(self) -> bool:
        return True  # prepared loaders always shuffle with a library-owned, saved seed

    @property
    def non_blocking(self) -> bool:
        return self._hf.dataloader.non_blocking

    @property
    def use_stateful_dataloader(self) -> bool:
        return True  # prepared loaders always save and restore their position

    @property
    def dynamo_plugin(self) -> Any:
        return self._hf.dynamo

    @property
    def rng_types(self) -> list[str]:
        return self._hf.rng_types

    @property
    def gradient_accumulation_steps(self) -> int:
        return self.gradient_state.num_steps

    @gradient_accumulation_steps.setter
    def gradient_accumulation_steps(self, steps: int) -> None:
        """Change the accumulation: the next ``accumulate``/``backward`` use the new count."""
        self._set_accumulation_steps(check_accumulation_steps(steps))

    @property
    def sync_gradients(self) -> bool:
        """True on the micro-step that synchronises gradients and steps the optimizer."""
        return self.gradient_state.sync_gradients

    @sync_gradients.setter
    def sync_gradients(self, value: bool) -> None:
        self.gradient_state.sync_gradients = bool(value)

    @property
    def step(self) -> int:
        """Micro-steps since the last synchronising one (HF's ``accelerator.step``)."""
        return self.gradient_state.step

    # ------------------------------------------------------------------ processes

    def wait_for_everyone(self) -> None:
        self.state.wait_for_everyone()

    def main_process_first(self) -> AbstractContextManager[None]:
        return self.state.main_process_first()

    def local_main_process_first(self) -> AbstractContextManager[None]:
        return self.state.local_main_process_first()

    def on_main_process(self, function: Callable[..., Any]) -> Callable[..., Any]:
        return self.state.on_main_process(function)

    def on_local_main_process(self, function: Callable[..., Any]) -> Callable[..., Any]:
        return self.state.on_local_main_process(function)

    def split_between_processes(
        self, inputs: Any, apply_padding: bool = False
    ) -> AbstractContextManager[Any]:
        return self.state.split_between_processes(inputs, apply_padding=apply_padding)

    def print(self, *args: Any, **kwargs: Any) -> None:
        """``print`` once per machine (on the local main process)."""
        self.state.print(*args, **kwargs)

    def on_process(
        self, function: Callable[..., Any] | None = None, process_index: int | None = None
    ) -> Any:
        """Decorator: run ``function`` only on the process of rank ``process_index``."""
        if function is None:
            return lambda f: self.on_process(f, process_index)
        return self._only_when(function, lambda: self.process_index == process_index)

    def on_local_process(
        self, function: Callable[..., Any] | None = None, local_process_index: int | None = None
    ) -> Any:
        """Decorator: run ``function`` only on the process of local rank ``local_process_index``."""
        if function is None:
            return lambda f: self.on_local_process(f, local_process_index)
        return self._only_when(function, lambda: self.local_process_index == local_process_index)

    def on_last_process(self, function: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator: run ``function`` only on the last process."""
        return self._only_when(function, lambda: self.is_last_process)

    @staticmethod
    def _only_when(function: Callable[..., Any], condition: Callable[[], bool]) -> Any:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return function(*args, **kwargs) if condition() else None

        return wrapper

    def verify_device_map(self, model: torch.nn.Module) -> bool:
        """True when ``model`` was dispatched over several devices (``hf_device_map``)."""
        for module in model.modules():
            device_map = getattr(module, "hf_device_map", None)
            if isinstance(device_map, dict) and len(set(device_map.values())) > 1:
                return True
        return False

    def _set_accumulation_steps(self, steps: int) -> None:
        """A new accumulation count: the plugins get a new context and are asked again (a
        backend engine built with the old count then asks for ``prepare`` again)."""
        self.gradient_state.num_steps = steps
        self.plugin_context = dataclasses.replace(
            self.plugin_context, gradient_accumulation_steps=steps
        )
        self._resolve_backend_callables()
        for optimizer in self._optimizers:
            optimizer._step = self._optimizer_step

    # ------------------------------------------------------------------ saving

    def save(self, obj: Any, f: Any, safe_serialization: bool = False) -> None:
        """``torch.save`` once per run (per machine with ``save_on_each_node``), atomically."""
        save(
            obj,
            f,
            save_on_each_node=self.project_configuration.save_on_each_node,
            safe_serialization=safe_serialization,
        )

    def register_save_state_pre_hook(self, hook: Callable[..., None]) -> RemovableHandle:
        """Call ``hook(models, weights, output_dir)`` in ``save_state`` before anything is saved.

        Files it writes into ``output_dir`` belong to the checkpoint (listed in its manifest and
        verified on load). Returns a handle whose ``remove()`` unregisters it.
        """
        return self._register_hook(self._save_state_hooks, hook)

    def register_load_state_pre_hook(self, hook: Callable[..., None]) -> RemovableHandle:
        """Call ``hook(models, input_dir)`` in ``load_state``, once every file was verified."""
        return self._register_hook(self._load_state_hooks, hook)

    @staticmethod
    def _register_hook(hooks: dict[int, Any], hook: Callable[..., None]) -> RemovableHandle:
        handle = RemovableHandle(hooks)
        hooks[handle.id] = hook
        return handle

    # ------------------------------------------------------------------ triggers

    def set_trigger(self) -> None:
        """Flag this process; the next ``check_trigger()`` is True on every process."""
        self._flag_tensor = torch.tensor(1, device=self.device)

    def check_trigger(self) -> bool:
        """True on every process when any process called ``set_trigger`` since the last check.

        A collective: every process must call it at the same point. Resets the flag when True.
        """
        flag = self._flag_tensor
        if flag is None:
            flag = torch.tensor(0, device=self.device)
        if self.reduce(flag, reduction="sum").item() >= 1:
            self._flag_tensor = None
            return True
        return False

    # ------------------------------------------------------------------ profiling

    @contextlib.contextmanager
    def profile(self, profile_handler: ProfileKwargs | None = None) -> Iterator[Any]:
        """Profile the block with ``torch.profiler``; yields the profiler.

        With ``ProfileKwargs(output_trace_dir=...)`` every process writes its Chrome trace to
        ``profile_<rank>.json`` there, then waits for the others.
        """
        handler = profile_handler or self._hf.profile or ProfileKwargs()
        with handler.build() as profiler:
            yield profiler
        if handler.output_trace_dir is None:
            return
        os.makedirs(handler.output_trace_dir, exist_ok=True)
        name = PROFILE_PATTERN_NAME.format(suffix=self.process_index)
        profiler.export_chrome_trace(os.path.join(handler.output_trace_dir, name))
        self.wait_for_everyone()

    # ------------------------------------------------------------------ gradient sync

    @staticmethod
    @contextlib.contextmanager
    def trigger_sync_in_backward(model: torch.nn.Module) -> Iterator[None]:
        """The next backward synchronises ``model``'s gradients, even inside ``no_sync``.

        For models that synchronise in backward (DDP-style ``require_backward_grad_sync``, or
        FSDP2's ``set_requires_gradient_sync``); any other model is left alone.
        """
        model = uncompiled(model)
        if hasattr(model, "set_requires_gradient_sync"):
            model.set_requires_gradient_sync(True)
            yield
            return
        reducer = getattr(model, "reducer", None)
        if reducer is None or not hasattr(model, "require_backward_grad_sync"):
            yield
            return
        old = model.require_backward_grad_sync, model.require_forward_param_sync
        model.require_backward_grad_sync = True
        model.require_forward_param_sync = True
        reducer.prepare_for_backward([])
        try:
            yield
        finally:
            model.require_backward_grad_sync, model.require_forward_param_sync = old

    # ------------------------------------------------------------------ compile

    def _compile_models(self, models: list[torch.nn.Module]) -> None:
        """``torch.compile`` the user's module inside each prepared model, in place.

        Compiling in place (``Module.compile``) under the backend's wrapper keeps every
        parameter name as it was: ``unwrap_model``, ``get_state_dict`` and ``save_model`` give
        the same keys as without compilation, and the wrapper's gradient sync is untouched.
        """
        dynamo = self._hf.dynamo
        if not dynamo.enabled:
            return
        kwargs = dynamo.compile_kwargs()
        for model in models:
            inner = self.unwrap_model(model)
            if dynamo.use_regional_compilation:
                compile_regions(inner, **kwargs)
            else:
                inner.compile(**kwargs)

    def clear(self, *objects: Any) -> list[None]:
        """Alias of ``free_memory`` (HF's name)."""
        return self.free_memory(*objects)
