"""Environment-variable helpers by HF's names (``accelerate.utils.environment``)."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

TRUE_VALUES = {"y", "yes", "t", "true", "on", "1"}
FALSE_VALUES = {"n", "no", "f", "false", "off", "0"}


def str_to_bool(value: str) -> int:
    """1 for a true spelling (``yes``, ``1``, ``on``...), 0 for a false one; else ``ValueError``."""
    lowered = value.lower()
    if lowered in TRUE_VALUES:
        return 1
    if lowered in FALSE_VALUES:
        return 0
    raise ValueError(f"invalid truth value {value!r}")


def get_int_from_env(env_keys: list[str], default: int) -> int:
    """The first of ``env_keys`` set to a non-negative integer, else ``default``."""
    for key in env_keys:
        value = int(os.environ.get(key, -1))
        if value >= 0:
            return value
    return default


def parse_flag_from_env(key: str, default: bool = False) -> bool:
    return str_to_bool(os.environ.get(key, str(default))) == 1


def parse_choice_from_env(key: str, default: str = "no") -> str:
    return os.environ.get(key, str(default))


def convert_dict_to_env_variables(current_env: dict[str, Any]) -> list[str]:
    """``KEY=value`` lines for the entries whose key and value are single-line strings."""
    valid = []
    for key, value in current_env.items():
        if all(c.isalnum() or c == "_" for c in key) and "\n" not in str(value):
            valid.append(f"{key}={value}\n")
    return valid


@contextmanager
def clear_environment() -> Iterator[None]:
    """Run the block with an empty ``os.environ``; the original is restored afterwards."""
    saved = os.environ.copy()
    os.environ.clear()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextmanager
def patch_environment(**kwargs: Any) -> Iterator[None]:
    """Set upper-cased variables for the block, restoring the previous values afterwards."""
    saved: dict[str, str | None] = {}
    for key, value in kwargs.items():
        key = key.upper()
        saved[key] = os.environ.get(key)
        os.environ[key] = str(value)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def purge_accelerate_environment(func_or_cls: Any) -> Any:
    """Decorator: variables starting with ``ACCELERATE_`` set inside are removed afterwards."""

    def purge(before: set[str]) -> None:
        for key in [k for k in os.environ if k.startswith("ACCELERATE_") and k not in before]:
            del os.environ[key]

    if isinstance(func_or_cls, type):
        return func_or_cls

    @functools.wraps(func_or_cls)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        before = set(os.environ)
        try:
            return func_or_cls(*args, **kwargs)
        finally:
            purge(before)

    return wrapper
