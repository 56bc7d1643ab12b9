"""HF Accelerate's enum base: membership by value and ``str(member)`` giving the value.

``"wandb" in LoggerType`` and ``str(LoggerType.WANDB) == "wandb"`` are how HF scripts use its
enums; every enum of HF's API here (trackers, DDP communication hooks, dynamo backends...) shares
this base so they behave alike.
"""

from __future__ import annotations

import enum


class EnumWithContains(enum.EnumMeta):
    """``"value" in SomeEnum`` is True for a valid value (HF's metaclass)."""

    def __contains__(cls, item: object) -> bool:
        try:
            cls(item)
        except ValueError:
            return False
        return True


class BaseEnum(enum.Enum, metaclass=EnumWithContains):
    """``str(member)`` is its value; ``list()`` lists every value (HF's base enum)."""

    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def list(cls) -> list[str]:
        """Every value, as strings."""
        return [str(member) for member in cls]
