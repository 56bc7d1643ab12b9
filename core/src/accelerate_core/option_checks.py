"""Checks plugins share for the options users pass them (``backend_options`` and the like)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .errors import ConfigurationError


def check_option_names(owner: str, options: Mapping[str, Any], valid: Iterable[str]) -> None:
    """Raise a ``ConfigurationError`` naming every unknown key of ``options`` and the valid ones.

    A misspelt option must never be silently ignored; ``owner`` is the plugin's name as users
    select it (``"ddp"``), so the message reads ``unknown ddp option(s) ...``.
    """
    valid = list(valid)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigurationError(
            f"unknown {owner} option(s) {', '.join(unknown)}; valid: {', '.join(valid)}"
        )
