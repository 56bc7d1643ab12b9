"""Hugging Face's ``DeepSpeedPlugin``, mapped onto this backend's options.

``Accelerator(deepspeed_plugin=DeepSpeedPlugin(...))`` selects ``deepspeed`` and passes
``backend_options()`` on, where ``DeepSpeedOptions`` checks them like any other option. Like HF's,
``deepspeed_config`` is the DeepSpeed config dict (with ``"auto"`` values until ``prepare`` fills
them); loading it never imports DeepSpeed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerate_core import ConfigurationError

from .options import DEFAULT_ZERO_STAGE

NAME = "deepspeed"


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return None if value in (None, "", "none") else value


@dataclass
class DeepSpeedPlugin:
    """HF's DeepSpeed configuration (its field names and defaults; ``ACCELERATE_DEEPSPEED_*``)."""

    hf_ds_config: Any = None
    gradient_accumulation_steps: int | str | None = None
    gradient_clipping: float | str | None = None
    zero_stage: int | None = None
    is_train_batch_min: bool = True
    offload_optimizer_device: str | None = None
    offload_param_device: str | None = None
    offload_optimizer_nvme_path: str | None = None
    offload_param_nvme_path: str | None = None
    zero3_init_flag: bool | None = None
    zero3_save_16bit_model: bool | None = None
    transformer_moe_cls_names: str | None = None
    enable_msamp: bool | None = None
    msamp_opt_level: str | None = None

    __accelerate_core_backend__ = NAME

    def __post_init__(self) -> None:
        if self.hf_ds_config is None:
            self.hf_ds_config = _env("ACCELERATE_DEEPSPEED_CONFIG_FILE")
        if self.zero_stage is None and _env("ACCELERATE_DEEPSPEED_ZERO_STAGE"):
            self.zero_stage = int(os.environ["ACCELERATE_DEEPSPEED_ZERO_STAGE"])
        for field_name in ("offload_optimizer_device", "offload_param_device",
                           "offload_optimizer_nvme_path", "offload_param_nvme_path"):  # fmt: skip
            if getattr(self, field_name) is None:
                setattr(self, field_name, _env(f"ACCELERATE_DEEPSPEED_{field_name.upper()}"))
        if self.gradient_clipping is None and _env("ACCELERATE_GRADIENT_CLIPPING"):
            self.gradient_clipping = os.environ["ACCELERATE_GRADIENT_CLIPPING"]
        if self.enable_msamp:
            raise ConfigurationError(
                "DeepSpeedPlugin(enable_msamp=True): fp8 is Accelerator(mixed_precision='fp8') "
                "with accelerate-fp8 installed (pip install 'accelerate-fp8[msamp]')"
            )
        self.deepspeed_config = self._config()

    def _config(self) -> dict[str, Any]:
        config = self.hf_ds_config
        if config is None:
            return {"zero_optimization": {"stage": self.zero_stage or DEFAULT_ZERO_STAGE}}
        config = getattr(config, "config", config)  # HF's HfDeepSpeedConfig holds .config
        if isinstance(config, dict):
            return json.loads(json.dumps(config))
        try:
            return json.loads(Path(config).expanduser().read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ConfigurationError(
                f"DeepSpeedPlugin(hf_ds_config={config!r}): cannot read a JSON DeepSpeed config "
                f"there ({error})"
            ) from error

    def backend_options(self) -> dict[str, Any]:
        """These settings as ``deepspeed`` backend options (checked by ``DeepSpeedOptions``)."""
        options: dict[str, Any] = {}
        if self.hf_ds_config is not None:
            config = getattr(self.hf_ds_config, "config", self.hf_ds_config)
            options["config"] = str(config) if isinstance(config, Path) else config
        if self.zero_stage is not None:
            options["zero_stage"] = int(self.zero_stage)
        for key in ("offload_optimizer_device", "offload_param_device",
                    "offload_optimizer_nvme_path", "offload_param_nvme_path"):  # fmt: skip
            if getattr(self, key) is not None:
                options[key] = getattr(self, key)
        if self.gradient_clipping not in (None, "auto"):
            options["gradient_clipping"] = float(self.gradient_clipping)
        return options

    def accumulation_steps(self) -> int | None:
        """The plugin's ``gradient_accumulation_steps`` when it sets a number (else ``None``)."""
        steps = self.gradient_accumulation_steps
        if isinstance(steps, str) and steps.isdigit():
            steps = int(steps)
        return steps if isinstance(steps, int) and not isinstance(steps, bool) else None
