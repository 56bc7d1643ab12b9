"""trackio (``log_with="trackio"``): a local-first tracker (SQLite under ``TRACKIO_DIR``)."""

from __future__ import annotations

from typing import Any

from ..tracker_base import ProjectRunTracker


class TrackioTracker(ProjectRunTracker):
    """One trackio run; ``run_name`` is the trackio project.

    Args:
        run_name: the trackio project.
        **kwargs: passed to ``trackio.init`` (``name``, ``space_id``, ``config``, ...).
    """

    name = "trackio"
    library = "trackio"

    def store_init_configuration(self, values: dict[str, Any]) -> None:
        import trackio

        trackio.config.update(values, allow_val_change=True)
