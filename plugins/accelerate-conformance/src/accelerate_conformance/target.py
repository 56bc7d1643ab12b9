"""What the conformance suite checks, from the pytest options (no torch import: the pytest plugin
is loaded by every pytest run of an environment that has accelerate-conformance installed)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Target:
    """A backend and/or a precision, on the default device (CPU) or a named one; or a device
    alone (checked on the built-in backend ``none``).

    Attributes:
        backend: the backend name (``--accelerate-backend``); ``None`` checks a precision alone,
            on the built-in single-process backend ``none``.
        precision: the precision name (``--accelerate-precision``); ``None`` means ``no``.
        device: a registered device name (``--accelerate-device``): its own checks run, and the
            training checks train on it; else the CPU.
        tolerance: the largest allowed ``max |ours - reference| / max |reference|`` of the
            weights; ``None`` uses the defaults (see ``test_conformance.tolerance_for``).
        timeout: seconds a multi-process run may take before it counts as a hang.
    """

    backend: str | None = None
    precision: str | None = None
    device: str | None = None
    tolerance: float | None = None
    timeout: float = 600.0

    @property
    def backend_name(self) -> str:
        return self.backend or "none"

    @property
    def precision_name(self) -> str:
        return self.precision or "no"

    def describe(self) -> str:
        parts = [f"backend '{self.backend_name}'", f"precision '{self.precision_name}'"]
        parts.append(f"device '{self.device}'" if self.device else "device cpu")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
