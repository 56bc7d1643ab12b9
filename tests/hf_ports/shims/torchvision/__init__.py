"""Offline stand-in for the parts of torchvision the examples use (tests only)."""

from . import transforms  # noqa: F401
