"""ClearML (``log_with="clearml"``): one ClearML task, or the one the script already started."""

from __future__ import annotations

import os
from typing import Any

from ..tracker_base import GeneralTracker
from ..tracker_values import report

SERIES_PREFIXES = ("eval", "test", "train")


def title_and_series(name: str) -> tuple[str, str]:
    """``eval_loss`` -> ``("loss", "eval")``; names without such a prefix go to ``train``."""
    for prefix in SERIES_PREFIXES:
        if name.startswith(prefix + "_"):
            return name[len(prefix) + 1 :], prefix
    return name, "train"


class ClearMLTracker(GeneralTracker):
    """Reports scalars (``eval_``/``test_``/``train_`` prefixes pick the series), images, tables.

    Args:
        run_name: project and task name (``CLEARML_PROJECT``/``CLEARML_TASK`` win).
        **kwargs: passed to ``Task.init``.
    """

    name = "clearml"
    requires_logging_directory = False

    def __init__(self, run_name: str | None = None, **kwargs: Any) -> None:
        super().__init__()
        self.user_provided_run_name = run_name
        self._initialized_externally = False
        self.init_kwargs = kwargs
        self.task: Any = None

    def start(self) -> None:
        from clearml import Task

        current = Task.current_task()
        if current:
            self._initialized_externally = True
            self.task = current
            return
        arguments = dict(self.init_kwargs)
        run_name = self.user_provided_run_name
        arguments.setdefault("project_name", os.environ.get("CLEARML_PROJECT", run_name))
        arguments.setdefault("task_name", os.environ.get("CLEARML_TASK", run_name))
        self.task = Task.init(**arguments)

    @property
    def tracker(self) -> Any:
        return self.task

    def store_init_configuration(self, values: dict[str, Any]) -> Any:
        return self.task.connect_configuration(values)

    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        logger = self.task.get_logger()
        for key, value in values.items():
            if not isinstance(value, (int, float)):
                report(f"clearml: value of {key!r} ({type(value).__name__}) is not a number")
                continue
            if step is None:
                logger.report_single_value(name=key, value=value, **kwargs)
                continue
            title, series = title_and_series(key)
            logger.report_scalar(title=title, series=series, value=value, iteration=step, **kwargs)

    def log_images(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        """Report ``{name: image}`` with ``Logger.report_image``."""
        logger = self.task.get_logger()
        for key, value in values.items():
            title, series = title_and_series(key)
            logger.report_image(title=title, series=series, iteration=step, image=value, **kwargs)

    def log_table(
        self,
        table_name: str,
        columns: list[str] | None = None,
        data: list[list[Any]] | None = None,
        dataframe: Any = None,
        step: int | None = None,
        **kwargs: Any,
    ) -> None:
        """Report a table from ``columns`` and ``data`` or from a ``dataframe``."""
        table = dataframe
        if dataframe is None:
            if data is None:
                raise ValueError("ClearMLTracker.log_table needs data= or dataframe=")
            table = [columns, *data] if columns else data
        title, series = title_and_series(table_name)
        self.task.get_logger().report_table(
            title=title, series=series, table_plot=table, iteration=step, **kwargs
        )

    def finish(self) -> None:
        if self.task and not self._initialized_externally:
            self.task.close()
