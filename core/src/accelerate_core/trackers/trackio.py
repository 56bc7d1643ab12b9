"""trackio (``log_with="trackio"``): a local-first tracker (SQLite under ``TRACKIO_DIR``)."""

from __future__ import annotations

from typing import Any

from ..tracker_base import GeneralTracker


class TrackioTracker(GeneralTracker):
    """One trackio run; ``run_name`` is the trackio project.

    Args:
        run_name: the trackio project.
        **kwargs: passed to ``trackio.init`` (``name``, ``space_id``, ``config``, ...).
    """

    name = "trackio"
    requires_logging_directory = False

    def __init__(self, run_name: str, **kwargs: Any) -> None:
        super().__init__()
        self.run_name = run_name
        self.init_kwargs = kwargs
        self.run: Any = None

    def start(self) -> None:
        import trackio

        self.run = trackio.init(project=self.run_name, **self.init_kwargs)

    @property
    def tracker(self) -> Any:
        return self.run

    def store_init_configuration(self, values: dict[str, Any]) -> None:
        import trackio

        trackio.config.update(values, allow_val_change=True)

    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        self.run.log(values, step=step, **kwargs)

    def finish(self) -> None:
        self.run.finish()
