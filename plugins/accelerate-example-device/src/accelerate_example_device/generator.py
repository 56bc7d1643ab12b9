"""The example device's own random number generator: a vendor runtime's, in miniature.

A real accelerator draws random numbers from a generator its runtime owns (one per device), which
``torch.manual_seed`` does not know about. This one is a ``torch.Generator`` kept by the plugin:
``rand`` draws from it the way a vendor's kernels would. The plugin's hooks seed it
(``set_seed``), save it and restore it (``save_state``/``load_state``), so the core's contract
for device generators is exercised for real, on the CPU.
"""

from __future__ import annotations

import torch

_GENERATOR: list[torch.Generator] = []  # created on first use, one per process


def generator() -> torch.Generator:
    """This process's example-device generator."""
    if not _GENERATOR:
        _GENERATOR.append(torch.Generator())
    return _GENERATOR[0]


def rand(*size: int) -> torch.Tensor:
    """Uniform random numbers drawn on the example device (from its own generator)."""
    return torch.rand(*size, generator=generator())
