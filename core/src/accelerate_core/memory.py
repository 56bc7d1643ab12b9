"""Releasing memory between runs (say, when retrying with a smaller batch)."""

from __future__ import annotations

import gc
from typing import Any

import torch


def release_memory(*objects: Any) -> list[None]:
    """Drop the caller's references (``a, b = release_memory(a, b)``), collect, empty caches."""
    nones: list[None] = [None] * len(objects)
    del objects
    gc.collect()
    if torch.accelerator.is_available():
        torch.accelerator.empty_cache()
    return nones
