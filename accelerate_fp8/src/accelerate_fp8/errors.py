"""Errors and warnings of accelerate-fp8. Each message says what went wrong and how to fix it."""

from __future__ import annotations

from accelerate_core.errors import ConfigurationError, PluginNotInstalledError


class FP8BackendNotInstalledError(PluginNotInstalledError):
    """The selected fp8 backend's library (torchao, transformer_engine, msamp) cannot be imported.

    Raised instead of falling back to another backend or to bf16: a run that asked for fp8 must
    never silently train in another precision.
    """


class FP8HardwareError(ConfigurationError):
    """The device of this process cannot run fp8 with the selected backend."""


class FP8NoLayersConvertedWarning(UserWarning):
    """``prepare`` converted no Linear layer to fp8: the model trains in high precision only."""
