"""Aim (``log_with="aim"``): a local Aim repository in the logging directory."""

from __future__ import annotations

import os
from typing import Any

from ..tracker_base import GeneralTracker


class AimTracker(GeneralTracker):
    """One ``aim.Run`` in the repository at ``logging_dir``, named ``run_name``.

    Args:
        run_name: the run's name.
        logging_dir: the Aim repository (default: the current directory).
        **kwargs: passed to ``aim.Run``.
    """

    name = "aim"
    requires_logging_directory = True

    def __init__(
        self, run_name: str, logging_dir: str | os.PathLike[str] | None = ".", **kwargs: Any
    ) -> None:
        super().__init__()
        self.run_name = run_name
        self.aim_repo_path = logging_dir
        self.init_kwargs = kwargs
        self.writer: Any = None

    def start(self) -> None:
        from aim import Run

        self.writer = Run(repo=self.aim_repo_path, **self.init_kwargs)
        self.writer.name = self.run_name

    @property
    def tracker(self) -> Any:
        return self.writer

    def store_init_configuration(self, values: dict[str, Any]) -> None:
        self.writer["hparams"] = values

    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        for key, value in values.items():
            self.writer.track(value, name=key, step=step, **kwargs)

    def log_images(
        self,
        values: dict[str, Any],
        step: int | None = None,
        kwargs: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        """Log ``{name: image or (image, caption)}`` as ``aim.Image``.

        ``kwargs`` may hold ``{"aim_image": {...}, "track": {...}}`` for ``aim.Image`` and
        ``Run.track``.
        """
        import aim

        image_kwargs = (kwargs or {}).get("aim_image", {})
        track_kwargs = (kwargs or {}).get("track", {})
        for key, value in values.items():
            image, caption = value if isinstance(value, tuple) else (value, "")
            picture = aim.Image(image, caption=caption, **image_kwargs)
            self.writer.track(picture, name=key, step=step, **track_kwargs)

    def finish(self) -> None:
        self.writer.close()
