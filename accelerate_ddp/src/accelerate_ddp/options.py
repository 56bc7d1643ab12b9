"""The user options of the ddp backend, checked once at ``Accelerator`` creation."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from accelerate_core import ConfigurationError
from accelerate_core.option_checks import check_option_names

COMM_HOOKS = ("fp16", "bf16", "powersgd", "batched_powersgd")
COMM_WRAPPERS = ("fp16", "bf16")
# Hugging Face's spellings (DDPCommunicationHookType values) of the same hooks.
HF_HOOK_NAMES = {"no": None, "power_sgd": "powersgd", "batched_power_sgd": "batched_powersgd"}


def _hook_name(value: Any) -> str | None:
    """``None``, a name of ``COMM_HOOKS`` or an HF spelling / enum member -> our name."""
    value = getattr(value, "value", value)  # DDPCommunicationHookType members
    if isinstance(value, str):
        return HF_HOOK_NAMES.get(value, value)
    return value


@dataclass(frozen=True)
class DDPOptions:
    """What ``Accelerator(backend_options={...})`` may set for ``ddp``.

    ``DistributedDataParallelKwargs`` fills the same options under Hugging Face's names:
    ``comm_state_option`` is ``comm_hook_options``, hooks may be given by HF's spellings
    (``"power_sgd"``) or ``DDPCommunicationHookType`` members, and ``comm_wrapper`` compresses
    what a PowerSGD hook sends (``"fp16"``/``"bf16"``).
    """

    find_unused_parameters: bool = False
    static_graph: bool = False
    gradient_as_bucket_view: bool = False
    bucket_cap_mb: float | None = None
    broadcast_buffers: bool = True
    comm_hook: str | None = None
    comm_hook_options: dict[str, Any] = field(default_factory=dict)
    comm_wrapper: str | None = None
    dim: int = 0
    check_reduction: bool = False

    @classmethod
    def from_mapping(cls, options: dict[str, Any]) -> DDPOptions:
        values = dict(options)
        if "comm_state_option" in values:  # HF's name (DistributedDataParallelKwargs)
            state = values.pop("comm_state_option")
            values["comm_hook_options"] = {**values.get("comm_hook_options", {}), **state}
        check_option_names("ddp", values, (f.name for f in fields(cls)))
        for key in ("comm_hook", "comm_wrapper"):
            if key in values:
                values[key] = _hook_name(values[key])
        parsed = cls(**values)
        if parsed.comm_hook is not None and parsed.comm_hook not in COMM_HOOKS:
            raise ConfigurationError(
                f"unknown ddp comm_hook {parsed.comm_hook!r}; valid: {', '.join(COMM_HOOKS)}"
            )
        if parsed.comm_wrapper is not None:
            if parsed.comm_wrapper not in COMM_WRAPPERS:
                raise ConfigurationError(
                    f"unknown ddp comm_wrapper {parsed.comm_wrapper!r}; valid: "
                    f"{', '.join(COMM_WRAPPERS)}"
                )
            if parsed.comm_hook not in ("powersgd", "batched_powersgd"):
                raise ConfigurationError(
                    f"ddp comm_wrapper={parsed.comm_wrapper!r} compresses what a PowerSGD hook "
                    f"sends; it needs comm_hook='powersgd' or 'batched_powersgd', got "
                    f"{parsed.comm_hook!r}"
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
        if self.dim != 0:
            kwargs["dim"] = self.dim
        if self.check_reduction:
            kwargs["check_reduction"] = self.check_reduction
        return kwargs
