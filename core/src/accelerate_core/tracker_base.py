"""``GeneralTracker``: the interface every experiment tracker implements (Hugging Face's).

A records-level module: it imports nothing from the package, so built-in trackers, third-party
trackers and the core all build on it without import cycles. Which process runs a tracker is
decided by the core (``tracker_set``), not by the tracker: ``main_process_only`` says where.
"""

from __future__ import annotations

import importlib
from typing import Any


class GeneralTracker:
    """Base class of experiment trackers; subclass it to log somewhere new.

    Define ``name`` (``str``, what ``log_with``, ``init_kwargs`` and ``get_tracker`` use),
    ``requires_logging_directory`` (``bool``: the constructor's second argument is the logging
    directory) and a ``tracker`` property (the library's own run object). ``main_process_only``
    (default True) runs the tracker on the main process only; False runs it on every process.

    ``start()`` opens the run (called by ``init_trackers``, so the library is imported only
    when the tracker is used), ``store_init_configuration(values)`` records the configuration,
    ``log(values, step)`` records values, ``finish()`` closes the run.
    """

    main_process_only: bool = True

    def __init__(self, _blank: bool = False) -> None:
        if _blank:
            return
        missing = [
            f"`{attribute}`"
            for attribute in ("name", "requires_logging_directory", "tracker")
            if attribute not in dir(self)
        ]
        if missing:
            raise NotImplementedError(
                f"{type(self).__qualname__} is missing the tracker attributes {', '.join(missing)}"
                "; define them in the class (see accelerate_core.tracking.GeneralTracker)"
            )

    def start(self) -> None:
        """Open the run; the library is imported here, not at construction."""

    def store_init_configuration(self, values: dict[str, Any]) -> None:
        """Record ``values`` as the run's configuration (hyperparameters)."""

    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        """Record ``values`` (numbers, strings, dicts of numbers) at ``step``."""

    def finish(self) -> None:
        """Close the run and flush what is buffered."""


class ProjectRunTracker(GeneralTracker):
    """A tracker whose library opens one run as ``library.init(project=run_name, **kwargs)`` and
    logs through ``run.log(values, step=step)`` / ``run.finish()`` (W&B, trackio, SwanLab).

    Subclasses set ``name`` and ``library`` (the module imported at ``start``).
    """

    library: str = ""
    requires_logging_directory = False

    def __init__(self, run_name: str, **kwargs: Any) -> None:
        super().__init__()
        self.run_name = run_name
        self.init_kwargs = kwargs
        self.run: Any = None

    def start(self) -> None:
        module = importlib.import_module(self.library)
        self.run = module.init(project=self.run_name, **self.init_kwargs)

    @property
    def tracker(self) -> Any:
        return self.run

    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        self.run.log(values, step=step, **kwargs)

    def finish(self) -> None:
        self.run.finish()


class NoOpTracker(GeneralTracker):
    """What ``get_tracker`` returns on a process that runs no tracker: every call does nothing.

    Scripts call ``accelerator.get_tracker("wandb").log_images(...)`` on every process; the
    trackers run on the main process only, so elsewhere the call must be harmless.
    """

    requires_logging_directory = False

    def __init__(self, name: str = "no-op") -> None:
        super().__init__(_blank=True)
        self.name = name

    @property
    def tracker(self) -> NoOpTracker:
        return self

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return _do_nothing

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        return None

    def __repr__(self) -> str:
        return f"NoOpTracker({self.name!r})"


def _do_nothing(*args: Any, **kwargs: Any) -> None:
    return None
