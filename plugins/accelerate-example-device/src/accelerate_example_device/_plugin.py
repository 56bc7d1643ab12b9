"""Hook implementations of the ``example`` device (the entry point: keep it tiny).

A vendor's device plugin answers the discovery hook with a ``DeviceSpec`` and then the device
hooks, which the core asks only of the plugin that registered the device in use. This device runs
on the CPU (``device_type="cpu"``) so that it trains for real anywhere; where a vendor would call
its runtime (set the current device, read the allocator, wait for the queue), it says so.

Select it with ``accel launch --device example`` (the config key ``device: example``, or
``ACCELERATE_CORE_DEVICE=example``) or ``PartialState(device="example")``. Its random numbers come
from a generator of its own (``generator.py``), seeded, saved and restored through the hooks.
"""

from __future__ import annotations

from typing import Any

from accelerate_core import DeviceSpec, EnvironmentInfo, hookimpl

from . import trace

NAME = "example"


@hookimpl
def accelerate_core_devices() -> list[DeviceSpec]:
    """The device record: asked of every plugin when the registry is built (cheap, no imports)."""
    return [
        DeviceSpec(
            name=NAME,
            device_type="cpu",  # the torch.device type tensors live on
            dist_backend="gloo",  # the process-group backend for several processes
            precisions=frozenset({"bf16"}),  # fp16 is refused on this device, with a message
            autocast_type="cpu",  # the device_type given to torch.autocast
        )
    ]


@hookimpl
def accelerate_core_setup_device(device: Any, environment: EnvironmentInfo) -> bool:
    """Make ``device`` current for this process (a vendor: ``myruntime.set_device(local_rank)``)."""
    trace.record("setup_device", device=device, local_rank=environment.local_rank)
    return True


@hookimpl
def accelerate_core_seed_device(device: Any, seed: int) -> bool:
    """Seed the device's own generator (``set_seed``; a vendor: ``myruntime.manual_seed``)."""
    from .generator import generator

    trace.record("seed_device", device=device, seed=seed)
    generator().manual_seed(seed)
    return True


@hookimpl
def accelerate_core_device_rng_state(device: Any) -> Any:
    """The device generator's state for checkpoints (weights_only-safe: a tensor, a string)."""
    from .generator import generator

    trace.record("device_rng_state", device=device)
    return {"generator": generator().get_state(), "device": NAME}


@hookimpl
def accelerate_core_set_device_rng_state(device: Any, rng_state: Any) -> bool:
    """Restore what ``accelerate_core_device_rng_state`` returned."""
    from .generator import generator

    trace.record("set_device_rng_state", device=device)
    generator().set_state(rng_state["generator"])
    return True


@hookimpl
def accelerate_core_device_memory_stats(device: Any) -> dict[str, int]:
    """Allocated/reserved/peak bytes (a vendor reads its allocator; here: this process's RSS)."""
    import psutil

    from accelerate_core.memory_tracker import exact_cpu_peak

    trace.record("device_memory_stats", device=device)
    rss = int(psutil.Process().memory_info().rss)
    peak = exact_cpu_peak() or rss
    return {"allocated": rss, "reserved": rss, "max_allocated": max(peak, rss)}


@hookimpl
def accelerate_core_synchronize(device: Any) -> bool:
    """Wait for queued work (a vendor: ``myruntime.synchronize()``; the CPU has no queue)."""
    trace.record("synchronize", device=device)
    return True
