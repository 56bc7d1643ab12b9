"""Comet (``log_with="comet_ml"``); the API key comes from Comet's own configuration."""

from __future__ import annotations

from typing import Any

from ..tracker_base import GeneralTracker


class CometMLTracker(GeneralTracker):
    """One Comet experiment, started with ``comet_ml.start(project_name=run_name, **kwargs)``.

    Numbers are metrics, strings ``log_other``, dicts of numbers ``log_metrics``.
    """

    name = "comet_ml"
    requires_logging_directory = False

    def __init__(self, run_name: str, **kwargs: Any) -> None:
        super().__init__()
        self.run_name = run_name
        self.init_kwargs = kwargs
        self.writer: Any = None

    def start(self) -> None:
        import comet_ml

        if hasattr(comet_ml, "start"):  # comet_ml >= 3.41
            self.writer = comet_ml.start(project_name=self.run_name, **self.init_kwargs)
        else:
            self.writer = comet_ml.Experiment(project_name=self.run_name, **self.init_kwargs)

    @property
    def tracker(self) -> Any:
        return self.writer

    def store_init_configuration(self, values: dict[str, Any]) -> None:
        self.writer.log_parameters(values)

    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        if step is not None:
            self.writer.set_step(step)
        for key, value in values.items():
            if isinstance(value, (int, float)):
                self.writer.log_metric(key, value, step=step, **kwargs)
            elif isinstance(value, str):
                self.writer.log_other(key, value, **kwargs)
            elif isinstance(value, dict):
                self.writer.log_metrics(value, step=step, **kwargs)

    def finish(self) -> None:
        self.writer.end()
