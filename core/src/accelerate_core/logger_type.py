"""``LoggerType``: the names of the built-in experiment trackers (Hugging Face's enum).

A records-level module (it imports only the enum base) so that ``tracking`` and ``utils``
can both re-export it. Third-party trackers have names outside the enum; ``log_with`` takes
plain strings as well.
"""

from __future__ import annotations

from .enums import BaseEnum


class LoggerType(BaseEnum):
    """A built-in experiment tracker; ``str(LoggerType.WANDB) == "wandb"``.

    ``ALL`` selects every tracker whose library is installed.
    """

    ALL = "all"
    AIM = "aim"
    TENSORBOARD = "tensorboard"
    WANDB = "wandb"
    TRACKIO = "trackio"
    COMETML = "comet_ml"
    MLFLOW = "mlflow"
    CLEARML = "clearml"
    DVCLIVE = "dvclive"
    SWANLAB = "swanlab"
