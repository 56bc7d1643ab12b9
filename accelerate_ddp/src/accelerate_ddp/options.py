"""The user options of the ddp backend, checked once at ``Accelerator`` creation."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from accelerate_core import ConfigurationError
from accelerate_core.option_checks import check_option_names

COMM_HOOKS = ("fp16", "bf16", "powersgd", "batched_powersgd")


@dataclass(frozen=True)
class DDPOptions:
    """What ``Accelerator(backend_options={...})`` may set for ``ddp``."""

    find_unused_parameters: bool = False
    static_graph: bool = False
    gradient_as_bucket_view: bool = False
    bucket_cap_mb: float | None = None
    broadcast_buffers: bool = True
    comm_hook: str | None = None
    comm_hook_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, options: dict[str, Any]) -> DDPOptions:
        check_option_names("ddp", options, (f.name for f in fields(cls)))
        parsed = cls(**options)
        if parsed.comm_hook is not None and parsed.comm_hook not in COMM_HOOKS:
            raise ConfigurationError(
                f"unknown ddp comm_hook {parsed.comm_hook!r}; valid: {', '.join(COMM_HOOKS)}"
            )
        return parsed

    def ddp_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "find_unused_parameters": self.find_unused_parameters,
            "static_graph": self.static_graph,
            "gradient_as_bucket_view": self.gradient_as_bucket_view,
        }
        # Buffers are broadcast unless told otherwise; torch >= 2.13 warns (FutureWarning, on
        # every rank) whenever the argument is passed, so it is passed only to turn it off.
        if not self.broadcast_buffers:
            kwargs["broadcast_buffers"] = False
        if self.bucket_cap_mb is not None:
            kwargs["bucket_cap_mb"] = self.bucket_cap_mb
        return kwargs
