"""Seeding every random number generator a training script touches."""

from __future__ import annotations

import random

import numpy as np
import torch

from .state import PartialState, seed_device


def set_seed(seed: int, device_specific: bool = False, deterministic: bool = False) -> None:
    """Seed Python's ``random``, NumPy and torch (CPU and every device) with ``seed``.

    A device plugin's own generator is seeded through its ``accelerate_core_seed_device`` hook,
    now or, before the process state exists, when the device is set up.

    Args:
        device_specific: add the process index so each process draws differently (data
            augmentation); leave False where processes must agree (model initialisation).
        deterministic: also ask torch for deterministic algorithms (slower on GPUs).
    """
    if device_specific:
        seed += PartialState().process_index
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds every device's default generator as well
    seed_device(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)
