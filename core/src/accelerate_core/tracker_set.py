"""The experiment trackers of one ``Accelerator``: selected once, run where they belong.

``log_with`` is resolved at ``Accelerator`` creation, on every process, so a misspelt name, a
missing library or a missing logging directory is the same clear error on every rank. Trackers
come from the ``accelerate_core_trackers`` hook (built-in and installed plugins alike), from
``register_tracker_class``, or are ``GeneralTracker`` instances the script made. A tracker runs
on the main process unless its class says ``main_process_only = False``; elsewhere ``log`` is a
loop over nothing.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Callable
from typing import Any

from .errors import ConfigurationError, PluginError, PluginNotInstalledError, TrackerError
from .logger_type import LoggerType
from .plugins import Registered, get_plugin_manager
from .specs import TrackerSpec
from .tracker_base import GeneralTracker, NoOpTracker
from .tracker_values import plain_values

ALL = "all"
CLASS_HOOK = "accelerate_core_tracker_class"
# Classes registered at run time by name (Hugging Face's register_tracker_class).
REGISTERED_CLASSES: dict[str, type[GeneralTracker]] = {}


def register_tracker_class(tracker_class: type[GeneralTracker]) -> None:
    """Make ``log_with=tracker_class.name`` select ``tracker_class`` in this process.

    Hugging Face's function: for a tracker defined in the script. A name that shadows an
    installed tracker wins over it, with a warning. Installed packages add trackers through the
    ``accelerate_core_trackers`` hook instead (``plugins/README.md``).
    """
    if not (isinstance(tracker_class, type) and issubclass(tracker_class, GeneralTracker)):
        raise ValueError(f"tracker_class must be a subclass of GeneralTracker, got {tracker_class}")
    name = getattr(tracker_class, "name", None)
    if not name or not isinstance(name, str):
        raise ValueError(f"{tracker_class.__qualname__} must define a non-empty `name` string")
    if not hasattr(tracker_class, "requires_logging_directory"):
        raise ValueError(
            f"{tracker_class.__qualname__} must define `requires_logging_directory` (True when "
            "its constructor takes the logging directory as second argument)"
        )
    if name in REGISTERED_CLASSES or name in _registry():
        warnings.warn(
            f"tracker '{name}' is already registered; {tracker_class.__qualname__} replaces it",
            stacklevel=2,
        )
    REGISTERED_CLASSES[name] = tracker_class


def _registry() -> dict[str, Registered]:
    return get_plugin_manager().registry()["tracker"]


def library_installed(spec: TrackerSpec) -> bool:
    """Whether one of the tracker's library modules can be found (nothing is imported)."""
    if not spec.modules:
        return True
    for module in spec.modules:
        try:
            if importlib.util.find_spec(module) is not None:
                return True
        except (ImportError, ValueError):  # a broken or half-imported package
            continue
    return False


def available_trackers() -> list[str]:
    """Names of the trackers that can run here: known and with their library installed."""
    names = {name for name, entry in _registry().items() if library_installed(entry.spec)}
    return sorted(names | set(REGISTERED_CLASSES))


def _unknown(name: str) -> PluginError:
    manager = get_plugin_manager()
    known = sorted(set(_registry()) | set(REGISTERED_CLASSES))
    ready = available_trackers()
    failed = [f"{r.name} ({r.distribution}: {r.error})" for r in manager.failed_entry_points()]
    message = (
        f"log_with: unknown tracker '{name}'; known trackers: {', '.join(known)} (installed: "
        f"{', '.join(ready) or 'none'}). A third-party tracker is added by installing its "
        "package, a script's own by register_tracker_class() or a GeneralTracker instance"
    )
    if failed:
        message += f"; plugins that failed to load: {'; '.join(failed)}"
    return PluginNotInstalledError(message)


def _spec_of(name: str) -> TrackerSpec | None:
    if name in REGISTERED_CLASSES:
        cls = REGISTERED_CLASSES[name]
        return TrackerSpec(name, requires_logging_directory=bool(cls.requires_logging_directory))
    entry = _registry().get(name)
    return None if entry is None else entry.spec


def _check_usable(spec: TrackerSpec, logging_dir: Any, how: str) -> None:
    if spec.name not in REGISTERED_CLASSES and not library_installed(spec):
        raise PluginNotInstalledError(
            f"{how} tracker '{spec.name}' but its library ({' or '.join(spec.modules)}) is not "
            f"installed; {spec.install or 'install it'}"
        )
    if spec.requires_logging_directory and logging_dir is None:
        raise ConfigurationError(
            f"{how} tracker '{spec.name}', which writes to a logging directory, but none is set; "
            "pass Accelerator(project_dir=...) or ProjectConfiguration(logging_dir=...)"
        )


def filter_trackers(
    log_with: Any, logging_dir: str | os.PathLike[str] | None = None
) -> list[LoggerType | str | GeneralTracker]:
    """Resolve ``log_with`` to tracker names and instances, checking each (Hugging Face's name).

    Accepts a name, a ``LoggerType``, a ``GeneralTracker`` instance or a list of them;
    ``"all"`` adds every tracker whose library is installed. Unknown names, trackers whose
    library is missing, and trackers that need a logging directory when there is none raise,
    naming the fix (Hugging Face skips a missing library silently).
    """
    if log_with is None:
        return []
    entries = list(log_with) if isinstance(log_with, (list, tuple)) else [log_with]
    selected: list[LoggerType | str | GeneralTracker] = []
    names: list[str] = []
    for entry in entries:
        if isinstance(entry, GeneralTracker):
            if not any(entry is s for s in selected):
                selected.append(entry)
            continue
        if isinstance(entry, type):
            raise ConfigurationError(
                f"log_with got the class {entry.__qualname__}; pass an instance "
                f"({entry.__qualname__}(...)) or register_tracker_class({entry.__qualname__}) "
                "and its name"
            )
        if not isinstance(entry, (str, LoggerType)):
            raise ConfigurationError(
                f"log_with takes tracker names, LoggerType members or GeneralTracker instances; "
                f"got {entry!r}"
            )
        name = str(entry)
        if name == ALL:
            names.extend(n for n in available_trackers() if n not in names)
            continue
        if _spec_of(name) is None:
            raise _unknown(name)
        if name not in names:
            names.append(name)
    explicit = {str(e) for e in entries if isinstance(e, (str, LoggerType)) and str(e) != ALL}
    for name in names:
        how = "log_with selects" if name in explicit else "log_with='all' selects"
        _check_usable(_spec_of(name), logging_dir, how)  # type: ignore[arg-type]
        selected.append(LoggerType(name) if name in LoggerType else name)
    return selected


def tracker_class(name: str) -> type[GeneralTracker]:
    """The class of tracker ``name``: registered by the script, else asked of its plugin."""
    if name in REGISTERED_CLASSES:
        return REGISTERED_CLASSES[name]
    manager = get_plugin_manager()
    owner = manager.select("tracker", name)
    cls = manager.call_owner(CLASS_HOOK, owner.plugin, name=name)
    if not (isinstance(cls, type) and issubclass(cls, GeneralTracker)):
        raise PluginError(
            f"plugin {owner.distribution} registers tracker '{name}' but its {CLASS_HOOK} "
            f"returned {cls!r}, not a GeneralTracker subclass"
        )
    return cls


def runs_here(tracker: GeneralTracker | type[GeneralTracker], is_main_process: bool) -> bool:
    return is_main_process or not getattr(tracker, "main_process_only", True)


class TrackerSet:
    """The trackers an ``Accelerator`` logs to: ``init_trackers``, ``log``, ``end_training``.

    Args:
        log_with: as ``Accelerator(log_with=...)``; checked here, on every process.
        logging_dir: where trackers that need a directory write.
        is_main_process: trackers with ``main_process_only`` run only where this is True.
        extra_values: called with the step on every ``log``; its values are logged too (the
            opt-in memory and step-time figures).
    """

    def __init__(
        self,
        log_with: Any,
        logging_dir: str | os.PathLike[str] | None,
        is_main_process: bool,
        extra_values: Callable[[int | None], dict[str, Any]] | None = None,
    ) -> None:
        self.log_with = filter_trackers(log_with, logging_dir)
        self.logging_dir = logging_dir
        self.is_main_process = is_main_process
        self.extra_values = extra_values
        self._classes = {
            str(entry): tracker_class(str(entry))
            for entry in self.log_with
            if not isinstance(entry, GeneralTracker)
        }
        self.trackers: list[GeneralTracker] = []
        self._open: list[GeneralTracker] = []

    @property
    def names(self) -> list[str]:
        return [e.name if isinstance(e, GeneralTracker) else str(e) for e in self.log_with]

    def init_trackers(
        self,
        project_name: str,
        config: dict[str, Any] | None = None,
        init_kwargs: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        """Create and start the trackers that run on this process; store ``config``."""
        if self._open:
            raise ConfigurationError(
                "init_trackers() was already called for this run; call end_training() first"
            )
        init_kwargs = init_kwargs or {}
        trackers: list[GeneralTracker] = []
        for entry in self.log_with:
            if isinstance(entry, GeneralTracker):
                if runs_here(entry, self.is_main_process):
                    trackers.append(entry)
                continue
            name = str(entry)
            cls = self._classes[name]
            if not runs_here(cls, self.is_main_process):
                continue
            kwargs = init_kwargs.get(name, {})
            if getattr(cls, "requires_logging_directory", False):
                tracker = _call(name, "__init__", cls, project_name, self.logging_dir, **kwargs)
            else:
                tracker = _call(name, "__init__", cls, project_name, **kwargs)
            trackers.append(tracker)
        self.trackers = trackers
        self._open = list(trackers)
        for tracker in trackers:
            _call(tracker.name, "start", tracker.start)
        if config is not None:
            for tracker in trackers:
                _call(tracker.name, "store_init_configuration", tracker.store_init_configuration,
                      config)  # fmt: skip

    def log(
        self,
        values: dict[str, Any],
        step: int | None = None,
        log_kwargs: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        """Log ``values`` (tensors as numbers) to every tracker running on this process."""
        if not self._open:
            return
        values = plain_values(values)
        if self.extra_values is not None:
            values.update(self.extra_values(step))
        for tracker in self._open:
            kwargs = log_kwargs.get(tracker.name, {}) if log_kwargs else {}
            try:
                tracker.log(values, step=step, **kwargs)
            except Exception as exc:
                raise _failure(tracker.name, "log", exc) from exc

    def get_tracker(self, name: str, unwrap: bool = False) -> Any:
        """The tracker ``name`` (its library's run object with ``unwrap``).

        On a process that does not run it (or before ``init_trackers``) a ``NoOpTracker``,
        whose every method does nothing; a name that was never selected raises everywhere.
        """
        for tracker in self.trackers:
            if tracker.name == name:
                return tracker.tracker if unwrap else tracker
        if name in self.names:
            return NoOpTracker(name)
        raise ConfigurationError(
            f"'{name}' is not a tracker of this Accelerator; its trackers: "
            f"{', '.join(self.names) or 'none (pass log_with=...)'}"
        )

    def end_training(self) -> None:
        """Finish every open tracker once; later calls do nothing. Raises the first failure."""
        failures: list[TrackerError] = []
        while self._open:
            tracker = self._open.pop(0)
            try:
                tracker.finish()
            except Exception as exc:  # finish the others first
                failure = _failure(tracker.name, "finish", exc)
                failure.__cause__ = exc
                failures.append(failure)
        if failures:
            raise failures[0]


class TrackingMethods:
    """``Accelerator``'s experiment-tracking API (HF's names), a mixin over its ``TrackerSet``
    (``_tracking``); ``end_training`` stays with the ``Accelerator``, which also tears down."""

    _tracking: TrackerSet

    @property
    def log_with(self) -> list[Any]:
        """The selected trackers: names (``LoggerType`` for built-in ones) and instances."""
        return self._tracking.log_with

    @property
    def trackers(self) -> list[GeneralTracker]:
        """The trackers running on this process (on the main process, every selected one)."""
        return self._tracking.trackers

    def init_trackers(
        self,
        project_name: str,
        config: dict[str, Any] | None = None,
        init_kwargs: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        """Start a run of every selected tracker and store ``config`` as its hyperparameters.

        ``init_kwargs`` maps a tracker's name to the keyword arguments of its constructor
        (``{"wandb": {"tags": ["a"]}, "tensorboard": {"flush_secs": 30}}``).
        """
        self._tracking.init_trackers(project_name, config, init_kwargs)

    def log(
        self,
        values: dict[str, Any],
        step: int | None = None,
        log_kwargs: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        """Log ``values`` (numbers, one-element tensors, strings, dicts of numbers) at ``step``.

        Runs on the processes that run trackers (the main process); elsewhere it returns at
        once. ``log_kwargs`` maps a tracker's name to extra arguments of its ``log``.
        """
        self._tracking.log(values, step, log_kwargs)

    def get_tracker(self, name: str, unwrap: bool = False) -> Any:
        """The tracker ``name`` (``unwrap=True``: its library's run object, such as the wandb
        run); a ``NoOpTracker`` on processes that do not run it."""
        return self._tracking.get_tracker(name, unwrap)


def _failure(name: str, method: str, exc: BaseException) -> TrackerError:
    return TrackerError(f"tracker '{name}' failed in {method}(): {type(exc).__name__}: {exc}")


def _call(
    tracker_name: str, method: str, function: Callable[..., Any], /, *args: Any, **kwargs: Any
) -> Any:
    try:
        return function(*args, **kwargs)
    except (ConfigurationError, PluginError):
        raise
    except Exception as exc:
        raise _failure(tracker_name, method, exc) from exc
