"""Device records for CPU and the accelerators PyTorch ships (CUDA/ROCm, XPU, MPS).

Which device a process uses is decided through ``torch.accelerator``; these records only add what
torch does not say: the process-group backend and the mixed-precision modes each device runs.
Device behaviour (current device, RNG, memory, synchronisation) uses ``torch.accelerator`` through
the core's defaults, so a vendor plugin only overrides what differs for its hardware.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..hookspecs import hookimpl
from ..specs import DeviceSpec

if TYPE_CHECKING:
    import torch

HALF_PRECISIONS = frozenset({"fp16", "bf16"})


@hookimpl
def accelerate_core_devices() -> list[DeviceSpec]:
    return [
        DeviceSpec(name="cpu", dist_backend="gloo", precisions=HALF_PRECISIONS),
        DeviceSpec(name="cuda", dist_backend="nccl", precisions=HALF_PRECISIONS),
        DeviceSpec(name="xpu", dist_backend="xccl", precisions=HALF_PRECISIONS),
        DeviceSpec(name="mps", dist_backend="gloo", precisions=HALF_PRECISIONS),
    ]


@hookimpl
def accelerate_core_device_memory_info(device: torch.device) -> tuple[int, int] | None:
    """(free, total) bytes: the host's available memory for CPU and MPS (unified), else torch's."""
    import torch

    if device.type in ("cpu", "mps"):
        import psutil

        memory = psutil.virtual_memory()
        return int(memory.available), int(memory.total)
    module = {"cuda": getattr(torch, "cuda", None), "xpu": getattr(torch, "xpu", None)}.get(
        device.type
    )
    reader = getattr(module, "mem_get_info", None)
    if reader is None:
        return None
    free, total = reader(device)
    return int(free), int(total)
