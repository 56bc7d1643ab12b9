"""Weights & Biases (``log_with="wandb"``); ``WANDB_MODE=offline`` works without a network."""

from __future__ import annotations

from typing import Any

from ..tracker_base import ProjectRunTracker


class WandBTracker(ProjectRunTracker):
    """One ``wandb`` run per training run.

    Args:
        run_name: the W&B project.
        **kwargs: passed to ``wandb.init`` (``name``, ``entity``, ``tags``, ``dir``, ``mode``...).

    Runs on the main process only (Hugging Face's class says ``main_process_only = False`` but
    its ``Accelerator`` only ever starts trackers on the main process; here the attribute means
    what it says, so it is True and two processes write one run).
    """

    name = "wandb"
    library = "wandb"

    def store_init_configuration(self, values: dict[str, Any]) -> None:
        self.run.config.update(values, allow_val_change=True)

    def log_images(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        """Log ``{name: list of images}`` (arrays or PIL images) as ``wandb.Image``."""
        import wandb

        for key, images in values.items():
            self.log({key: [wandb.Image(image) for image in images]}, step=step, **kwargs)

    def log_table(
        self,
        table_name: str,
        columns: list[str] | None = None,
        data: list[list[Any]] | None = None,
        dataframe: Any = None,
        step: int | None = None,
        **kwargs: Any,
    ) -> None:
        """Log a ``wandb.Table`` from ``columns`` and ``data`` or from a ``dataframe``."""
        import wandb

        table = wandb.Table(columns=columns, data=data, dataframe=dataframe)
        self.log({table_name: table}, step=step, **kwargs)
