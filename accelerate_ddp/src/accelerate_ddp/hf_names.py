"""The DDP names Hugging Face Accelerate exports from ``accelerate.utils`` (defined here; the
core reaches them through ``accelerate_core_exported_names``)."""

from __future__ import annotations

from accelerate_core.enums import BaseEnum


class DDPCommunicationHookType(str, BaseEnum):
    """Gradient communication hooks of ``DistributedDataParallelKwargs(comm_hook=...)``.

    ``FP16``/``BF16`` compress gradients before the all-reduce; ``POWER_SGD`` and
    ``BATCHED_POWER_SGD`` use PowerSGD (``comm_state_option`` holds its ``PowerSGDState``
    arguments). As ``comm_wrapper``, ``FP16``/``BF16`` compress what PowerSGD sends.
    """

    NO = "no"
    FP16 = "fp16"
    BF16 = "bf16"
    POWER_SGD = "power_sgd"
    BATCHED_POWER_SGD = "batched_power_sgd"
