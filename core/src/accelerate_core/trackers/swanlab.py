"""SwanLab (``log_with="swanlab"``)."""

from __future__ import annotations

from typing import Any

from ..tracker_base import ProjectRunTracker


class SwanLabTracker(ProjectRunTracker):
    """One SwanLab run; ``run_name`` is the project, ``**kwargs`` go to ``swanlab.init``."""

    name = "swanlab"
    library = "swanlab"

    def store_init_configuration(self, values: dict[str, Any]) -> None:
        import swanlab

        swanlab.config.update(values, allow_val_change=True)

    def log_images(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        """Log ``{name: list of images}`` as ``swanlab.Image``."""
        import swanlab

        for key, images in values.items():
            self.log({key: [swanlab.Image(image) for image in images]}, step=step, **kwargs)
