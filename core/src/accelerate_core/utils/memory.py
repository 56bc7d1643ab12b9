"""Out-of-memory helpers: ``find_executable_batch_size`` retries with a smaller batch.

HF's names and behaviour (the batch shrinks to 90 % after each out-of-memory error, or by the
function you give). Memory is released between tries: garbage is collected and the device's cache
emptied, so the next try starts from what the failed one left behind.
"""

from __future__ import annotations

import functools
import gc
import inspect
from collections.abc import Callable
from typing import Any

import torch

from ..memory import release_memory

# Messages of the allocation failures a smaller batch can cure (torch's own wording).
OUT_OF_MEMORY_MESSAGES = (
    " out of memory.",  # CUDA, HIP, XPU ("CUDA out of memory. Tried to allocate ...")
    "MPS backend out of memory",
    "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED.",  # what cuDNN says for too large a batch
    "DefaultCPUAllocator: can't allocate memory",  # CPU
    "FATAL ERROR :: MODULE:PT_DEVMEM Allocation failed",  # HPU
)


def clear_device_cache(garbage_collection: bool = False) -> None:
    """Empty the caching allocator of the accelerator torch drives (after ``gc`` if asked)."""
    if garbage_collection:
        gc.collect()
    if torch.accelerator.is_available():
        torch.accelerator.empty_cache()


def should_reduce_batch_size(exception: BaseException) -> bool:
    """True when ``exception`` is a device or CPU allocation failure."""
    if isinstance(exception, torch.OutOfMemoryError):
        return True
    if isinstance(exception, RuntimeError) and len(exception.args) == 1:
        message = str(exception.args[0])
        return any(text in message for text in OUT_OF_MEMORY_MESSAGES)
    return False


def find_executable_batch_size(
    function: Callable[..., Any] | None = None,
    starting_batch_size: int = 128,
    reduce_batch_size_fn: Callable[[], int] | None = None,
) -> Any:
    """Decorator: call ``function(batch_size, ...)``, retrying with a smaller batch on OOM.

    ``function`` takes the batch size as its first argument; call the decorated function without
    it. After an out-of-memory error (``should_reduce_batch_size``) memory is released and the
    batch size becomes ``int(batch_size * 0.9)`` (or ``reduce_batch_size_fn()``); other errors
    propagate. Reaching 0 raises ``RuntimeError``.
    """
    if function is None:
        return functools.partial(
            find_executable_batch_size,
            starting_batch_size=starting_batch_size,
            reduce_batch_size_fn=reduce_batch_size_fn,
        )
    batch_size = starting_batch_size
    if reduce_batch_size_fn is None:

        def reduce_batch_size_fn() -> int:
            return int(batch_size * 0.9)

    @functools.wraps(function)
    def decorator(*args: Any, **kwargs: Any) -> Any:
        nonlocal batch_size
        clear_device_cache(garbage_collection=True)
        params = list(inspect.signature(function).parameters)
        if len(params) < len(args) + 1:
            given = ", ".join(f"{name}={value}" for name, value in zip(params[1:], args[1:]))
            raise TypeError(
                f"Batch size was passed into `{function.__name__}` as the first argument when "
                f"called. Remove this as the decorator already does so: "
                f"`{function.__name__}({given})`"
            )
        while True:
            if batch_size == 0:
                raise RuntimeError("No executable batch size found, reached zero.")
            try:
                return function(batch_size, *args, **kwargs)
            except Exception as error:
                if not should_reduce_batch_size(error):
                    raise
            # Outside the except block: the error's traceback (and the failed try's tensors it
            # holds) is gone before memory is released.
            clear_device_cache(garbage_collection=True)
            batch_size = reduce_batch_size_fn()

    return decorator


__all__ = [
    "clear_device_cache",
    "find_executable_batch_size",
    "release_memory",
    "should_reduce_batch_size",
]
