"""The conformance checks of a device plugin (``--accelerate-device NAME``).

They run in this process, on one process and the built-in backend ``none``: what they check is the
device's hooks as the core uses them, not a backend. Each reads the device's generator through the
plugin's own ``accelerate_core_device_rng_state``, so a generator torch does not know (a vendor
runtime's) is checked as well as a torch one.

    pytest --accelerate-device NAME --pyargs accelerate_conformance
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from .fixtures import _fresh_process_state, plugins, registered, target
from .target import Target

pytestmark = pytest.mark.accelerate_conformance
__all__ = ["_fresh_process_state", "plugins", "target"]  # shared fixtures (fixtures.py)

SEED, OTHER_SEED = 1234, 4321
MEMORY_KEYS = ("allocated", "reserved", "max_allocated")
PROBE_BYTES = 64 * 2**20  # a tensor the memory statistics must see
HOOKS_AROUND_SAVE = (
    "accelerate_core_synchronize",
    "accelerate_core_device_rng_state",
    "accelerate_core_save_state",
)


class Device:
    """An ``Accelerator`` on the device under check and its owner's hooks, called as the core
    calls them (owner first, then the core's defaults)."""

    def __init__(self, name: str, project_dir: Path) -> None:
        from accelerate_core import Accelerator, PartialState
        from accelerate_core.plugins import get_plugin_manager

        PartialState(device=name, backend="none")
        self.accelerator = Accelerator(backend="none", project_dir=str(project_dir))
        self.state = self.accelerator.state
        self.manager = get_plugin_manager()
        self.name = name

    def call(self, hook: str, **kwargs: Any) -> Any:
        return self.manager.call_owner(
            hook, self.state.device_owner, device=self.state.device, **kwargs
        )

    def rng_state(self) -> Any:
        return self.call("accelerate_core_device_rng_state")


def _device(target: Target, plugins: dict[str, Any], directory: Path) -> Device:
    if target.device is None:
        pytest.skip("device checks run with --accelerate-device NAME")
    registered(plugins, "device", target.device)
    return Device(target.device, directory)


def _rng_or_skip(device: Device) -> Any:
    if device.state.device_spec.name == "cpu":
        pytest.skip("the core's cpu device: its generator is torch's CPU one (training checks)")
    value = device.rng_state()
    if value is None:
        pytest.skip(
            f"device '{device.name}' has no generator of its own "
            "(accelerate_core_device_rng_state answered None): nothing to seed or restore"
        )
    return value


def same(a: Any, b: Any) -> bool:
    """Equal RNG states: tensors bit for bit, containers element by element."""
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and torch.equal(a.cpu(), b.cpu())
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return bool(a == b)


# --------------------------------------------------------------------------- checks


def test_device_seeding_is_reproducible(
    target: Target, plugins: dict[str, Any], tmp_path: Path
) -> None:
    """set_seed puts the device's generator in one state per seed, before or after creation"""
    from accelerate_core import set_seed
    from accelerate_core.state import reset_state

    device = _device(target, plugins, tmp_path)
    _rng_or_skip(device)
    set_seed(SEED)
    first = device.rng_state()
    set_seed(OTHER_SEED)
    other = device.rng_state()
    set_seed(SEED)
    again = device.rng_state()
    assert not same(first, other), (
        f"set_seed({SEED}) and set_seed({OTHER_SEED}) leave the generator of device "
        f"'{target.device}' in the same state: accelerate_core_seed_device must seed the "
        "device's own generator (torch.manual_seed seeds only the generators torch ships)"
    )
    assert same(first, again), (
        f"set_seed({SEED}) twice gives two different states of the generator of device "
        f"'{target.device}': accelerate_core_seed_device must seed it deterministically"
    )
    reset_state()
    set_seed(SEED)  # before the process state exists: applied when the device is set up
    early = _device(target, plugins, tmp_path).rng_state()
    assert same(early, first), (
        f"set_seed({SEED}) called before the Accelerator was created left the generator of "
        f"device '{target.device}' in another state than set_seed({SEED}) after: the core asks "
        "accelerate_core_seed_device once the device is set up; does accelerate_core_setup_device "
        "reset the generator?"
    )


def test_device_rng_state_round_trips_through_a_checkpoint(
    target: Target, plugins: dict[str, Any], tmp_path: Path
) -> None:
    """load_state gives the device's generator back the state save_state saved"""
    import torch

    from accelerate_core import set_seed

    device = _device(target, plugins, tmp_path)
    _rng_or_skip(device)
    device.accelerator.prepare(torch.nn.Linear(2, 1))
    set_seed(SEED)
    saved = device.rng_state()
    checkpoint = device.accelerator.save_state(str(tmp_path / "checkpoint"))
    native = device.state.device.type != "cpu"  # torch draws from the device's generator
    expected = torch.rand(8, device=device.state.device).cpu() if native else None
    set_seed(OTHER_SEED)
    moved = device.rng_state()
    assert not same(moved, saved), (
        f"set_seed({OTHER_SEED}) did not change the generator of device '{target.device}', so "
        "a restore cannot be told from no restore (see the check 'device seeding is "
        "reproducible': accelerate_core_seed_device)"
    )
    device.accelerator.load_state(str(checkpoint))
    restored = device.rng_state()
    assert same(restored, saved), (
        f"after load_state the generator of device '{target.device}' is not in the state "
        "save_state saved"
        + (" (it kept the state it had before load_state)" if same(restored, moved) else "")
        + ": accelerate_core_set_device_rng_state must restore what "
        "accelerate_core_device_rng_state returned"
    )
    if expected is not None:
        drawn = torch.rand(8, device=device.state.device).cpu()
        assert torch.equal(drawn, expected), (
            f"after load_state, torch.rand on {device.state.device} draws other numbers than "
            "after save_state: the restored state is not the generator torch draws from"
        )


def test_device_memory_stats_have_the_documented_shape(
    target: Target, plugins: dict[str, Any], tmp_path: Path
) -> None:
    """memory statistics are byte counts that see an allocation, from any thread"""
    import torch

    device = _device(target, plugins, tmp_path)
    hook = "accelerate_core_device_memory_stats"
    before = device.call(hook)
    if before is None:
        pytest.skip(
            f"device '{target.device}' reports no memory statistics ({hook} answered None): "
            "memory tracking records CPU memory only"
        )
    _check_stats(before, target.device)
    from_thread: list[Any] = []
    thread = threading.Thread(target=lambda: from_thread.append(device.call(hook)))
    thread.start()
    thread.join(60)
    assert from_thread, f"{hook} did not answer within 60 s when called from another thread"
    _check_stats(from_thread[0], target.device, where=" from a background thread")
    probe = torch.ones(PROBE_BYTES // 4, device=device.state.device)
    device.call("accelerate_core_synchronize")
    during = device.call(hook)
    _check_stats(during, target.device)
    grown = during["allocated"] - before["allocated"]
    assert grown >= PROBE_BYTES // 2, (
        f"allocating {PROBE_BYTES // 2**20} MiB on device '{target.device}' changed "
        f"'allocated' by {grown} bytes: report the device allocator's bytes in use"
    )
    del probe


def _check_stats(stats: Any, name: str | None, where: str = "") -> None:
    hook = "accelerate_core_device_memory_stats"
    assert isinstance(stats, dict), f"{hook} returned {type(stats).__name__}{where}, not a dict"
    missing = [key for key in MEMORY_KEYS if key not in stats]
    assert not missing, (
        f"{hook} of device '{name}' returned {sorted(stats)}{where}; missing {missing} "
        f"(expected {{{', '.join(repr(k) + ': bytes' for k in MEMORY_KEYS)}}})"
    )
    wrong = {k: stats[k] for k in MEMORY_KEYS if type(stats[k]) is not int or stats[k] < 0}
    assert not wrong, f"{hook}{where}: byte counts must be ints >= 0, got {wrong}"
    assert stats["max_allocated"] >= stats["allocated"], (
        f"{hook}{where}: max_allocated {stats['max_allocated']} is below allocated "
        f"{stats['allocated']}; it is the peak of allocated"
    )
    assert stats["reserved"] >= stats["allocated"], (
        f"{hook}{where}: reserved {stats['reserved']} is below allocated {stats['allocated']}; "
        "reserved counts what the allocator holds, allocated included"
    )


def test_device_is_synchronized_before_save_state_reads_it(
    target: Target, plugins: dict[str, Any], tmp_path: Path
) -> None:
    """save_state waits for the device (accelerate_core_synchronize) before reading any state"""
    import torch

    device = _device(target, plugins, tmp_path)
    device.accelerator.prepare(torch.nn.Linear(2, 1))
    calls: list[tuple[str, Any]] = []

    def after(outcome: Any, hook_name: str, hook_impls: Any, kwargs: dict[str, Any]) -> None:
        if hook_name in HOOKS_AROUND_SAVE:
            calls.append((hook_name, outcome.get_result() if outcome.exception is None else None))

    undo = device.manager.pm.add_hookcall_monitoring(lambda *args: None, after)
    try:
        device.accelerator.save_state(str(tmp_path / "checkpoint"))
    finally:
        undo()
    names = [name for name, _ in calls]
    synchronized = [result for name, result in calls if name == "accelerate_core_synchronize"]
    assert len(synchronized) == 1, (
        f"save_state asked accelerate_core_synchronize {len(synchronized)} times (expected "
        f"once); hooks around the save: {names}"
    )
    first = names.index("accelerate_core_synchronize")
    assert first == 0, f"device state was read before the device was synchronised: {names}"
    assert synchronized[0] is True, (
        f"accelerate_core_synchronize of device '{target.device}' answered {synchronized[0]!r}: "
        "wait for the device's queued work, then return True"
    )
