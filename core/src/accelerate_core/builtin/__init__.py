"""The core's own plugins, registered through the same hooks as installed ones."""

from . import defaults, devices, environments, hf_launch, precisions, single_process, trackers

BUILTIN_PLUGINS: tuple[object, ...] = (
    *environments.DETECTORS,
    devices,
    precisions,
    single_process,
    trackers,
    hf_launch,
)

__all__ = ["BUILTIN_PLUGINS", "defaults"]
