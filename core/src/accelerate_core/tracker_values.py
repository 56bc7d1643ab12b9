"""Values on their way to a tracker: tensors become numbers, configurations become storable.

Records-level helpers shared by the built-in trackers and the core. Libraries differ in what they
accept (TensorBoard's hparams take only numbers, strings and booleans; MLflow stores strings of
bounded length); what a tracker cannot store is converted and reported once, never dropped
silently.
"""

from __future__ import annotations

import enum
import os
import warnings
from collections.abc import Mapping
from typing import Any

SCALARS = (bool, int, float, str)


class TrackerWarning(UserWarning):
    """A value was converted or left out because the tracker's library cannot store it."""


def as_number(value: Any) -> Any:
    """A one-element tensor or array as a Python number; anything else unchanged."""
    if isinstance(value, SCALARS) or value is None:
        return value
    item = getattr(value, "item", None)
    if item is None or not callable(item):
        return value
    numel = getattr(value, "numel", None)
    size = numel() if callable(numel) else getattr(value, "size", None)
    return item() if size == 1 else value


def plain_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with one-element tensors/arrays (nested dicts too) turned into numbers.

    Other objects (images, tables, a library's own types) pass through for the tracker to handle.
    """
    if not isinstance(values, Mapping):
        raise TypeError(
            f"accelerator.log() takes a dict of name -> value, got {type(values).__qualname__}"
        )
    plain: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            plain[key] = {k: as_number(v) for k, v in value.items()}
        else:
            plain[key] = as_number(value)
    return plain


def flat_config(values: Mapping[str, Any], allowed: tuple[type, ...] = SCALARS) -> dict[str, Any]:
    """``values`` flattened to ``{"a/b": scalar}`` with only ``allowed`` types.

    Nested mappings become ``parent/child`` keys, one-element tensors numbers, enums their value,
    paths strings; anything else (lists, ``None``, objects) its ``str()``, reported in one
    ``TrackerWarning`` naming the keys.
    """
    flat: dict[str, Any] = {}
    converted: list[str] = []

    def visit(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                visit(f"{prefix}/{key}" if prefix else str(key), inner)
            return
        value = as_number(value)
        if isinstance(value, enum.Enum):
            value = value.value
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, allowed):
            converted.append(f"{prefix} ({type(value).__name__})")
            value = str(value)
        flat[prefix] = value

    for key, value in values.items():
        visit(str(key), value)
    if converted:
        report(f"config values stored as strings: {', '.join(converted)}")
    return flat


def report(message: str) -> None:
    """Warn once per distinct message (a value a tracker cannot store)."""
    warnings.warn(message, TrackerWarning, stacklevel=3)
