"""Is the selected fp8 backend installed, and can this device run it? Errors say how to fix it.

There is no fallback: a run that asked for fp8 with one backend either gets it or stops with an
error naming the pip command or the hardware it needs.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType

import torch

from .errors import FP8BackendNotInstalledError, FP8HardwareError

LIBRARIES = {"torchao": "torchao", "te": "transformer_engine", "msamp": "msamp"}
INSTALL_HINTS = {
    "torchao": 'pip install "accelerate-fp8[torchao]"',
    "te": 'pip install "accelerate-fp8[te]"',
    "msamp": (
        'pip install "accelerate-fp8[msamp]" and MS-AMP itself, which is not on PyPI: build it '
        "from source (https://github.com/Azure/MS-AMP, docs/getting-started/installation) or "
        "use its container image ghcr.io/azure/msamp"
    ),
}
# Lowest NVIDIA compute capability with what each backend needs (fp8 tensor cores: Ada sm89).
MIN_CAPABILITY = {"torchao": (8, 9), "te": (8, 9), "msamp": (8, 0)}
GPU_NAMES = {(8, 9): "Ada/Hopper/Blackwell", (8, 0): "Ampere or newer"}


def import_library(backend: str) -> ModuleType:
    """Import the backend's library, or raise an error naming the pip command."""
    name = LIBRARIES[backend]
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] != name:
            raise _broken(backend, name, exc) from exc
        raise FP8BackendNotInstalledError(
            f"fp8 backend {backend!r} needs {name}, which is not installed; "
            f"{INSTALL_HINTS[backend]} (or select another FP8Recipe(backend=...): torchao, te, "
            "msamp)"
        ) from exc
    except Exception as exc:  # installed but broken (CUDA/ABI mismatch): still no fallback
        raise _broken(backend, name, exc) from exc


def _broken(backend: str, name: str, exc: BaseException) -> FP8BackendNotInstalledError:
    return FP8BackendNotInstalledError(
        f"fp8 backend {backend!r}: {name} is installed but fails to import "
        f"({type(exc).__name__}: {exc}); reinstall it for this torch build "
        f"({INSTALL_HINTS[backend]})"
    )


def cuda_capability(device: torch.device) -> tuple[int, int] | None:
    """Compute capability of an NVIDIA ``device``; ``None`` for CPUs and other vendors."""
    if device.type != "cuda" or torch.version.hip is not None or not torch.cuda.is_available():
        return None
    return tuple(torch.cuda.get_device_capability(device))  # type: ignore[return-value]


@functools.cache
def scaled_mm_error(device: str) -> str | None:
    """Why ``torch._scaled_mm`` (the fp8 matmul torchao calls) fails on ``device``, or None.

    A 16x16 probe is the only reliable answer on CPUs, ROCm and other vendors' devices.
    """
    from torchao.float8.config import e4m3_dtype

    try:
        a = torch.zeros(16, 16, device=device).to(e4m3_dtype)
        b = torch.zeros(16, 16, device=device).to(e4m3_dtype).t()
        one = torch.ones((), device=device)
        torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
    return None


def check_hardware(backend: str, device: torch.device) -> None:
    """Raise ``FP8HardwareError`` when ``device`` cannot run fp8 with ``backend``."""
    capability = cuda_capability(device)
    minimum = MIN_CAPABILITY[backend]
    version = f"{minimum[0]}.{minimum[1]}"
    needs = f"an NVIDIA GPU with compute capability >= {version} ({GPU_NAMES[minimum]})"
    if capability is not None:
        if capability < minimum:
            raise FP8HardwareError(
                f"fp8 backend {backend!r} needs {needs}, but {device} has compute capability "
                f"{capability[0]}.{capability[1]}; use mixed_precision='bf16' on this GPU"
            )
        return
    if backend in ("te", "msamp"):
        raise FP8HardwareError(
            f"fp8 backend {backend!r} runs on CUDA only and needs {needs}; this process runs on "
            f"{device}. Use FP8Recipe(backend='torchao') (CPU and GPUs) or mixed_precision='bf16'"
        )
    reason = scaled_mm_error(str(device))
    if reason is not None:
        raise FP8HardwareError(
            f"fp8 backend 'torchao' cannot run on {device}: torch._scaled_mm fails there "
            f"({reason}). fp8 needs {needs}, an AMD MI300 or newer, or a PyTorch build with an fp8 "
            "CPU kernel; use mixed_precision='bf16' on this device"
        )
