"""``DistributedType``: the kind of run, as Hugging Face scripts test it.

Its value comes from the selected backend's record (``BackendSpec.distributed_type``), so the core
names no backend: a new backend brings its own value.
"""

from __future__ import annotations

import enum


class DistributedType(str, enum.Enum):
    """The kind of run, as HF scripts test it (``accelerator.distributed_type``).

    The value comes from the selected backend's record (``BackendSpec.distributed_type``); a
    backend that names a value HF does not know gets a member of that name, so comparisons with
    strings keep working for third-party backends.
    """

    NO = "NO"
    MULTI_CPU = "MULTI_CPU"
    MULTI_GPU = "MULTI_GPU"
    MULTI_NPU = "MULTI_NPU"
    MULTI_MLU = "MULTI_MLU"
    MULTI_SDAA = "MULTI_SDAA"
    MULTI_MUSA = "MULTI_MUSA"
    MULTI_XPU = "MULTI_XPU"
    DEEPSPEED = "DEEPSPEED"
    FSDP = "FSDP"
    XLA = "XLA"
    MEGATRON_LM = "MEGATRON_LM"
    MULTI_HPU = "MULTI_HPU"
    MULTI_NEURON = "MULTI_NEURON"

    @classmethod
    def _missing_(cls, value: object) -> DistributedType | None:
        if not (isinstance(value, str) and value and value.replace("_", "").isalnum()):
            return None
        member = str.__new__(cls, value)
        member._name_ = value
        member._value_ = value
        cls._value2member_map_[value] = member
        return member


# torch device type -> the word HF uses in MULTI_<WORD>.
DEVICE_WORDS = {"cuda": "GPU", "cpu": "CPU"}


def distributed_type_for(
    template: str, distributed: bool, world_size: int, device_type: str
) -> str:
    """The ``DistributedType`` value of a run: the backend's template, ``{device}`` filled in.

    An empty template means a data-parallel backend: ``MULTI_<device>`` when it is distributed,
    ``NO`` otherwise. A data-parallel run of one process is ``NO``, as in HF.
    """
    if not template:
        template = "MULTI_{device}" if distributed else "NO"
    value = template.format(device=DEVICE_WORDS.get(device_type, device_type.upper()))
    if world_size == 1 and value.startswith("MULTI_"):
        return "NO"
    return value
