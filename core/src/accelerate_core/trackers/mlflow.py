"""MLflow (``log_with="mlflow"``): params and metric history in the tracking store.

The store is MLflow's own choice (``MLFLOW_TRACKING_URI``, e.g. ``file:/path/mlruns``);
``mlflow-skinny`` is enough.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..tracker_base import GeneralTracker
from ..tracker_values import flat_config, report


class MLflowTracker(GeneralTracker):
    """One MLflow run in the experiment ``experiment_name`` (the ``init_trackers`` project).

    Args, as in Hugging Face Accelerate (each environment variable wins over its argument):
        experiment_name: ``MLFLOW_EXPERIMENT_NAME``.
        logging_dir: the experiment's artifact location when it is created.
        run_id: resume this run (``MLFLOW_RUN_ID``).
        tags: dict or JSON string (``MLFLOW_TAGS``).
        nested_run: start a nested run (``MLFLOW_NESTED_RUN``).
        run_name, description: of a new run.

    The configuration is flattened (``optimizer/lr``); values longer than MLflow accepts are
    left out and reported. Metrics must be numbers; dicts of numbers become ``key/sub``
    metrics; other values are reported and left out.
    """

    name = "mlflow"
    requires_logging_directory = False

    def __init__(
        self,
        experiment_name: str | None = None,
        logging_dir: str | os.PathLike[str] | None = None,
        run_id: str | None = None,
        tags: dict[str, Any] | str | None = None,
        nested_run: bool | None = False,
        run_name: str | None = None,
        description: str | None = None,
    ) -> None:
        super().__init__()
        tags = os.environ.get("MLFLOW_TAGS", tags)
        self.experiment_name = os.environ.get("MLFLOW_EXPERIMENT_NAME", experiment_name)
        self.logging_dir = logging_dir
        self.run_id = os.environ.get("MLFLOW_RUN_ID", run_id)
        self.tags = json.loads(tags) if isinstance(tags, str) else tags
        nested = os.environ.get("MLFLOW_NESTED_RUN", nested_run)
        self.nested_run = nested.lower() in {"1", "true"} if isinstance(nested, str) else nested
        self.run_name = run_name
        self.description = description
        self.active_run: Any = None

    def start(self) -> None:
        import mlflow

        found = mlflow.search_experiments(filter_string=f"name = '{self.experiment_name}'")
        if found:
            experiment_id = found[0].experiment_id
        else:
            experiment_id = mlflow.create_experiment(
                name=self.experiment_name,
                artifact_location=None if self.logging_dir is None else str(self.logging_dir),
                tags=self.tags,
            )
        self.active_run = mlflow.start_run(
            run_id=self.run_id,
            experiment_id=experiment_id,
            run_name=self.run_name,
            nested=bool(self.nested_run),
            tags=self.tags,
            description=self.description,
        )

    @property
    def tracker(self) -> Any:
        return self.active_run

    def store_init_configuration(self, values: dict[str, Any]) -> None:
        import mlflow
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        params = {}
        for key, value in flat_config(values).items():
            if len(str(value)) > MAX_PARAM_VAL_LENGTH:
                report(
                    f"mlflow: config value {key!r} is longer than the {MAX_PARAM_VAL_LENGTH} "
                    "characters MLflow stores and was left out"
                )
            else:
                params[key] = value
        items = list(params.items())
        for start in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            mlflow.log_params(dict(items[start : start + MAX_PARAMS_TAGS_PER_BATCH]))

    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        import mlflow

        metrics: dict[str, float] = {}
        for key, value in values.items():
            if isinstance(value, dict):
                for sub, inner in value.items():
                    self._add(metrics, f"{key}/{sub}", inner)
            else:
                self._add(metrics, key, value)
        mlflow.log_metrics(metrics, step=step, **kwargs)

    @staticmethod
    def _add(metrics: dict[str, float], key: str, value: Any) -> None:
        if isinstance(value, (int, float)):
            metrics[key] = value
        else:
            report(f"mlflow: value of {key!r} ({type(value).__name__}) is not a number; left out")

    def log_figure(self, figure: Any, artifact_file: str, **save_kwargs: Any) -> None:
        """Log a matplotlib or plotly figure as an artifact."""
        import mlflow

        mlflow.log_figure(figure=figure, artifact_file=artifact_file, **save_kwargs)

    def log_artifacts(self, local_dir: str, artifact_path: str | None = None) -> None:
        """Log every file of ``local_dir`` as artifacts."""
        import mlflow

        mlflow.log_artifacts(local_dir=local_dir, artifact_path=artifact_path)

    def log_artifact(self, local_path: str, artifact_path: str | None = None) -> None:
        """Log one file as an artifact."""
        import mlflow

        mlflow.log_artifact(local_path=local_path, artifact_path=artifact_path)

    def finish(self) -> None:
        import mlflow

        mlflow.end_run()
