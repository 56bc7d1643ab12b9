"""DVCLive (``log_with="dvclive"``): metrics files DVC reads."""

from __future__ import annotations

from typing import Any

from ..tracker_base import GeneralTracker
from ..tracker_values import report


class DVCLiveTracker(GeneralTracker):
    """One ``dvclive.Live``; ``run_name`` is ignored (pass ``dir=`` in ``init_kwargs``).

    Args:
        run_name: ignored, as in Hugging Face Accelerate.
        live: an existing ``Live`` to log into.
        **kwargs: passed to ``dvclive.Live``.
    """

    name = "dvclive"
    requires_logging_directory = False

    def __init__(self, run_name: str | None = None, live: Any = None, **kwargs: Any) -> None:
        super().__init__()
        self.live = live
        self.init_kwargs = kwargs

    def start(self) -> None:
        from dvclive import Live

        if self.live is None:
            self.live = Live(**self.init_kwargs)

    @property
    def tracker(self) -> Any:
        return self.live

    def store_init_configuration(self, values: dict[str, Any]) -> None:
        self.live.log_params(values)

    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        from dvclive.plots import Metric

        if step is not None:
            self.live.step = step
        for key, value in values.items():
            if Metric.could_log(value):
                self.live.log_metric(key, value, **kwargs)
            else:
                report(f"dvclive: value of {key!r} ({type(value).__name__}) is not a metric")
        self.live.next_step()

    def finish(self) -> None:
        self.live.end()
