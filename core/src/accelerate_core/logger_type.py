"""``LoggerType``: the names of the built-in experiment trackers (Hugging Face's enum).

A records-level module (it imports nothing from the package) so that ``tracking`` and ``utils``
can both re-export it. Third-party trackers have names outside the enum; ``log_with`` takes
plain strings as well.
"""

from __future__ import annotations

import enum


class _EnumWithContains(enum.EnumMeta):
    """``"wandb" in LoggerType`` is True: membership by value, as in Hugging Face Accelerate."""

    def __contains__(cls, item: object) -> bool:
        try:
            cls(item)
        except ValueError:
            return False
        return True


class LoggerType(enum.Enum, metaclass=_EnumWithContains):
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

    def __str__(self) -> str:
        return self.value

    @classmethod
    def list(cls) -> list[str]:
        """Every value, as strings."""
        return [str(member) for member in cls]
