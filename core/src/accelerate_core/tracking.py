"""Experiment tracking under Hugging Face Accelerate's names (``accelerate.tracking``).

``Accelerator(log_with=...)`` selects trackers; ``init_trackers``, ``log``, ``get_tracker`` and
``end_training`` drive them (``tracker_set``). The built-in tracker classes live in
``accelerate_core.trackers`` and are registered as plugins; write your own by subclassing
``GeneralTracker`` and passing an instance to ``log_with`` (or ``register_tracker_class``), or
ship one in a package through the ``accelerate_core_trackers`` hook.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from .logger_type import LoggerType
from .plugins import get_plugin_manager
from .state import PartialState
from .tracker_base import GeneralTracker, NoOpTracker
from .tracker_set import (
    REGISTERED_CLASSES,
    available_trackers,
    filter_trackers,
    register_tracker_class,
    tracker_class,
)
from .tracker_values import TrackerWarning
from .trackers.aim import AimTracker
from .trackers.clearml import ClearMLTracker
from .trackers.comet_ml import CometMLTracker
from .trackers.dvclive import DVCLiveTracker
from .trackers.mlflow import MLflowTracker
from .trackers.swanlab import SwanLabTracker
from .trackers.tensorboard import TensorBoardTracker
from .trackers.trackio import TrackioTracker
from .trackers.wandb import WandBTracker

F = TypeVar("F", bound=Callable[..., Any])


def on_main_process(function: F) -> F:
    """Run a tracker method only on the main process when the tracker is ``main_process_only``.

    For trackers used outside an ``Accelerator``; through one, the core already runs each
    tracker only where it belongs.
    """

    @functools.wraps(function)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(self, "main_process_only", False) and not PartialState().is_main_process:
            return None
        return function(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def get_available_trackers() -> list[LoggerType | str]:
    """The trackers whose library is installed (``LoggerType`` members for the built-in ones)."""
    return [LoggerType(n) if n in LoggerType else n for n in available_trackers()]


class _TrackerClasses(Mapping[str, type]):
    """``LOGGER_TYPE_TO_CLASS``: tracker name -> class, for every known tracker, resolved lazily."""

    def __getitem__(self, name: str) -> type:
        name = str(name)
        if (
            name not in REGISTERED_CLASSES
            and name not in get_plugin_manager().registry()["tracker"]
        ):
            raise KeyError(name)
        return tracker_class(name)

    def __iter__(self) -> Iterator[str]:
        known = set(get_plugin_manager().registry()["tracker"]) | set(REGISTERED_CLASSES)
        return iter(sorted(known))

    def __len__(self) -> int:
        return sum(1 for _ in self)


LOGGER_TYPE_TO_CLASS: Mapping[str, type] = _TrackerClasses()

__all__ = [
    "LOGGER_TYPE_TO_CLASS",
    "AimTracker",
    "ClearMLTracker",
    "CometMLTracker",
    "DVCLiveTracker",
    "GeneralTracker",
    "LoggerType",
    "MLflowTracker",
    "NoOpTracker",
    "SwanLabTracker",
    "TensorBoardTracker",
    "TrackerWarning",
    "TrackioTracker",
    "WandBTracker",
    "filter_trackers",
    "get_available_trackers",
    "on_main_process",
    "register_tracker_class",
]
