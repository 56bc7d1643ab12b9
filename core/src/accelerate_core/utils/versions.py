"""Version comparisons by HF's names (``compare_versions``, ``is_torch_version``)."""

from __future__ import annotations

import importlib.metadata
import operator

import torch
from packaging.version import Version

STR_OPERATION_TO_FUNC = {
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<=": operator.le,
    "<": operator.lt,
}


def _operation(name: str) -> operator.methodcaller:
    if name not in STR_OPERATION_TO_FUNC:
        raise ValueError(f"operation must be one of {list(STR_OPERATION_TO_FUNC)}, got {name!r}")
    return STR_OPERATION_TO_FUNC[name]


def compare_versions(library_or_version: str | Version, operation: str, requirement: str) -> bool:
    """``compare_versions("torch", ">=", "2.6")``: an installed library's version, or a version."""
    version = library_or_version
    if isinstance(version, str):
        try:
            version = Version(importlib.metadata.version(version))
        except importlib.metadata.PackageNotFoundError:
            version = Version(version)
    return _operation(operation)(version, Version(requirement))


def is_torch_version(operation: str, version: str) -> bool:
    """Compare the installed torch (its release, ignoring local tags like ``+cpu``)."""
    return _operation(operation)(Version(Version(torch.__version__).base_version), Version(version))
