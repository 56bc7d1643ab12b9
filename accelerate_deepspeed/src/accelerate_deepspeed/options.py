"""The user options of the ``deepspeed`` backend and the ``accel launch`` flags that set them.

Pure Python (no DeepSpeed import): options are checked once, at ``Accelerator`` creation, so a
typo fails before any model is built, on every rank.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from accelerate_core import ConfigurationError, LaunchOption
from accelerate_core.option_checks import check_option_names

NAME = "deepspeed"
OFFLOAD_DEVICES = ("none", "cpu", "nvme")
ZERO_STAGES = (0, 1, 2, 3)
# Without a DeepSpeed config, this stage is used (Hugging Face Accelerate's default too).
DEFAULT_ZERO_STAGE = 2


@dataclass(frozen=True)
class DeepSpeedOptions:
    """What ``Accelerator(backend="deepspeed", backend_options={...})`` may set.

    Attributes:
        config: a DeepSpeed config: a path to a JSON file or a dict. ``"auto"`` values in it are
            filled from what the library knows (see ``config.resolve_config``).
        zero_stage: ZeRO stage 0-3 (``accel launch --zero-stage N``). Without a config and
            without this option: stage 2.
        offload_optimizer_device: ``"none"``, ``"cpu"`` or ``"nvme"`` (ZeRO stage >= 1).
        offload_optimizer_nvme_path: directory for the NVMe optimizer offload.
        offload_param_device: ``"none"``, ``"cpu"`` or ``"nvme"`` (ZeRO stage 3 only).
        offload_param_nvme_path: directory for the NVMe parameter offload.
        gradient_clipping: clip the global gradient norm to this value in every step.
        print_config: the main process prints the resolved DeepSpeed config at ``prepare``.
        cast_inputs: under fp16/bf16 the engine's module runs in that dtype; cast floating-point
            inputs to it and return floating-point outputs in fp32 (what the core's autocast
            does), so a script written for fp32 inputs runs unchanged. ``False``: DeepSpeed's
            own behaviour (inputs must already have the module's dtype).
    """

    config: str | dict[str, Any] | None = None
    zero_stage: int | None = None
    offload_optimizer_device: str | None = None
    offload_optimizer_nvme_path: str | None = None
    offload_param_device: str | None = None
    offload_param_nvme_path: str | None = None
    gradient_clipping: float | None = None
    print_config: bool = False
    cast_inputs: bool = True

    @classmethod
    def from_mapping(cls, options: dict[str, Any]) -> DeepSpeedOptions:
        """Check ``backend_options``: unknown keys and bad values name the valid ones."""
        check_option_names("deepspeed", options, (f.name for f in fields(cls)))
        parsed = cls(**options)
        parsed._check()
        return parsed

    def _check(self) -> None:
        if self.config is not None and not isinstance(self.config, (str, Path, dict)):
            raise ConfigurationError(
                "deepspeed option config must be a path to a DeepSpeed JSON file or a dict, got "
                f"{type(self.config).__name__}"
            )
        if self.zero_stage is not None and (
            isinstance(self.zero_stage, bool) or self.zero_stage not in ZERO_STAGES
        ):
            raise ConfigurationError(
                f"deepspeed option zero_stage must be one of 0, 1, 2, 3, got {self.zero_stage!r}"
            )
        for what in ("optimizer", "param"):
            device = getattr(self, f"offload_{what}_device")
            path = getattr(self, f"offload_{what}_nvme_path")
            if device is not None and device not in OFFLOAD_DEVICES:
                raise ConfigurationError(
                    f"deepspeed option offload_{what}_device must be one of "
                    f"{', '.join(OFFLOAD_DEVICES)}, got {device!r}"
                )
            if device == "nvme" and not path:
                raise ConfigurationError(
                    f"offload_{what}_device='nvme' needs offload_{what}_nvme_path: a directory "
                    f"on the NVMe drive (accel launch --deepspeed-offload-{what}-nvme-path DIR)"
                )
        if self.gradient_clipping is not None and (
            isinstance(self.gradient_clipping, bool)
            or not isinstance(self.gradient_clipping, (int, float))
            or self.gradient_clipping < 0
        ):
            raise ConfigurationError(
                "deepspeed option gradient_clipping must be a number >= 0 (0 turns clipping "
                f"off), got {self.gradient_clipping!r}"
            )

    def load_config(self) -> tuple[dict[str, Any], str]:
        """The user's DeepSpeed config (a fresh copy) and a name for it in error messages."""
        if self.config is None:
            return {}, "no DeepSpeed config"
        if isinstance(self.config, dict):
            return json.loads(json.dumps(self.config)), "backend_options['config']"
        path = Path(self.config).expanduser()
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read the DeepSpeed config {str(path)!r}: {exc}; pass an existing JSON "
                "file (accel launch --deepspeed-config FILE) or a dict"
            ) from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(
                f"the DeepSpeed config {str(path)!r} is not valid JSON: {exc}"
            ) from exc
        if not isinstance(data, dict):
            raise ConfigurationError(
                f"the DeepSpeed config {str(path)!r} must hold a JSON object, got "
                f"{type(data).__name__}"
            )
        return data, f"DeepSpeed config {str(path)!r}"


def launch_options() -> list[LaunchOption]:
    """``accel launch --zero-stage N --deepspeed-config FILE ...`` (reach ``backend_options``)."""

    def option(name: str, help: str, type: str, key: str, **kwargs: Any) -> LaunchOption:
        return LaunchOption(name, help, type, backend=NAME, key=key, **kwargs)

    return [
        option("zero-stage", "DeepSpeed ZeRO stage 0-3", "int", "zero_stage", choices=ZERO_STAGES),
        option("deepspeed-config", "DeepSpeed JSON config file ('auto' values filled)", "str",
               "config"),
        option("deepspeed-offload-optimizer", "offload optimizer state: none, cpu or nvme",
               "str", "offload_optimizer_device", choices=OFFLOAD_DEVICES),
        option("deepspeed-offload-optimizer-nvme-path", "NVMe directory of the optimizer "
               "offload", "str", "offload_optimizer_nvme_path"),
        option("deepspeed-offload-param", "offload parameters (ZeRO-3): none, cpu or nvme",
               "str", "offload_param_device", choices=OFFLOAD_DEVICES),
        option("deepspeed-offload-param-nvme-path", "NVMe directory of the parameter offload",
               "str", "offload_param_nvme_path"),
        option("deepspeed-gradient-clipping", "clip the global gradient norm (DeepSpeed "
               "gradient_clipping)", "float", "gradient_clipping"),
        option("deepspeed-print-config", "print the resolved DeepSpeed config at prepare",
               "bool", "print_config"),
        option("deepspeed-cast-inputs", "fp16/bf16: cast float inputs to the engine's dtype, "
               "outputs to fp32 (default on)", "bool", "cast_inputs"),
    ]  # fmt: skip
