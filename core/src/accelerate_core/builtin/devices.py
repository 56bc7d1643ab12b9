"""Device records for CPU and the accelerators PyTorch ships (CUDA/ROCm, XPU, MPS).

Which device a process uses is decided through ``torch.accelerator``; these records only add what
torch does not say: the process-group backend and the mixed-precision modes each device runs.
Device behaviour (current device, RNG, memory, synchronisation) uses ``torch.accelerator`` through
the core's defaults, so a vendor plugin only overrides what differs for its hardware.
"""

from __future__ import annotations

from ..hookspecs import hookimpl
from ..specs import DeviceSpec

HALF_PRECISIONS = frozenset({"fp16", "bf16"})


@hookimpl
def accelerate_core_devices() -> list[DeviceSpec]:
    return [
        DeviceSpec(name="cpu", dist_backend="gloo", precisions=HALF_PRECISIONS),
        DeviceSpec(name="cuda", dist_backend="nccl", precisions=HALF_PRECISIONS),
        DeviceSpec(name="xpu", dist_backend="xccl", precisions=HALF_PRECISIONS),
        DeviceSpec(name="mps", dist_backend="gloo", precisions=HALF_PRECISIONS),
    ]
