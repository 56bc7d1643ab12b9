"""Exception types. Each message says what went wrong and how to fix it."""

from __future__ import annotations


class AccelerateCoreError(Exception):
    """Base class of every error accelerate-core raises on purpose."""


class PluginError(AccelerateCoreError, RuntimeError):
    """A plugin could not be loaded, conflicts with another, or does not fit this core."""


class PluginConflictError(PluginError):
    """Two distributions register the same backend, precision or device name."""


class PluginNotInstalledError(PluginError, ValueError):
    """A backend or precision was requested by name but no installed plugin provides it."""


class ConfigurationError(AccelerateCoreError, ValueError):
    """An argument or environment setting is invalid or contradicts another."""


class EnvironmentDetectionError(AccelerateCoreError, RuntimeError):
    """The launch environment is incomplete or contradictory (never guessed around)."""


class CollectiveError(AccelerateCoreError, RuntimeError):
    """A collective failed: a process never reached it (timeout), crashed, or passed bad input."""


class CheckpointError(AccelerateCoreError, RuntimeError):
    """A checkpoint is missing, incomplete, corrupt, or does not fit this run."""


class TrackerError(AccelerateCoreError, RuntimeError):
    """An experiment tracker failed; the message names the tracker and the call that failed."""
