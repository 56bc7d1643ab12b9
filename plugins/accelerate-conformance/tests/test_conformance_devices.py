"""The device checks of the conformance suite bite: fake device plugins (real installed
distributions, run as a plugin author runs the suite) with one mistake each fail the check that
names it, and only that one."""

from __future__ import annotations

import pytest
from accelerate_conformance.runner import run_conformance

# Each check runs the suite in a fresh process (about 15 s; minutes on a busy machine).
pytestmark = pytest.mark.timeout(300)
REQUIRES = ("accelerate-core>=0.1,<0.2",)
DEVICE_CHECKS = "registration or device or typo"  # -k: the checks that need no training run

# A device with a generator of its own (as a vendor runtime has), written correctly. The broken
# variants below change one hook each.
GOOD_DEVICE = """
import torch
from accelerate_core import DeviceSpec, hookimpl

GENERATOR = torch.Generator()
BLOCKS = []  # held tensors: what the allocator has in use


@hookimpl
def accelerate_core_devices():
    return [DeviceSpec("vendorx", device_type="cpu", precisions=frozenset({"bf16"}))]


@hookimpl
def accelerate_core_seed_device(device, seed):
    GENERATOR.manual_seed(seed)
    return True


@hookimpl
def accelerate_core_device_rng_state(device):
    return {"generator": GENERATOR.get_state()}


@hookimpl
def accelerate_core_set_device_rng_state(device, rng_state):
    GENERATOR.set_state(rng_state["generator"])  # RESTORE
    return True


@hookimpl
def accelerate_core_device_memory_stats(device):
    import psutil

    rss = psutil.Process().memory_info().rss
    return {"allocated": rss, "reserved": rss, "max_allocated": rss}


@hookimpl
def accelerate_core_synchronize(device):
    return True
"""

# The restore hook claims success and does nothing: the generator keeps the state it had.
DO_NOTHING_RESTORE = GOOD_DEVICE.replace(
    '    GENERATOR.set_state(rng_state["generator"])  # RESTORE\n', "    pass  # forgot it\n"
)
# No seeding hook (torch.manual_seed never reaches GENERATOR), statistics under other names,
# a synchronize that says it did not wait.
SLOPPY_DEVICE = (
    GOOD_DEVICE.replace("def accelerate_core_seed_device", "def _unused_seed")
    .replace('{"allocated": rss, "reserved": rss, "max_allocated": rss}', '{"used": rss}')
    .replace(
        "def accelerate_core_synchronize(device):\n    return True",
        "def accelerate_core_synchronize(device):\n    return False",
    )
)


def _run(make_distribution, source: str, requires: tuple[str, ...] = REQUIRES):
    root = make_distribution(
        "accelerate-vendorx", {"vendorx_plugin": source}, {"vendorx": "vendorx_plugin"},
        requires=requires,
    )  # fmt: skip
    return run_conformance(
        ["--accelerate-device", "vendorx", "-k", DEVICE_CHECKS], python_path=[root], timeout=300
    )


def test_a_correct_device_with_its_own_generator_conforms(make_distribution):
    result = _run(make_distribution, GOOD_DEVICE)
    assert result.returncode == 0, result.output[-3000:]
    assert result.with_outcome("passed") == [
        "test_device_is_synchronized_before_save_state_reads_it",
        "test_device_memory_stats_have_the_documented_shape",
        "test_device_rng_state_round_trips_through_a_checkpoint",
        "test_device_seeding_is_reproducible",
        "test_name_typo_names_the_installed_ones",
        "test_registration",
    ]
    assert "accelerate-core conformance: backend 'none', precision 'no', device 'vendorx'" in (
        result.report
    )
    assert "CONFORMS: 0 of 6 checks that ran failed" in result.report


def test_a_device_whose_restore_hook_does_nothing_fails_the_round_trip_check(make_distribution):
    result = _run(make_distribution, DO_NOTHING_RESTORE)
    assert result.returncode == 1, result.output[-3000:]
    assert result.with_outcome("failed") == [
        "test_device_rng_state_round_trips_through_a_checkpoint"
    ]
    report = result.report
    assert "FAILED   device rng state round trips through a checkpoint" in report
    assert (
        "after load_state the generator of device 'vendorx' is not in the state save_state "
        "saved (it kept the state it had before load_state): "
        "accelerate_core_set_device_rng_state must restore what "
        "accelerate_core_device_rng_state returned"
    ) in report
    assert "DOES NOT CONFORM: 1 of 6 checks that ran failed" in report


def test_a_sloppy_device_fails_the_checks_that_name_each_mistake(make_distribution):
    result = _run(make_distribution, SLOPPY_DEVICE, requires=())  # no accelerate-core range
    assert result.returncode == 1, result.output[-3000:]
    assert result.with_outcome("failed") == [
        "test_device_is_synchronized_before_save_state_reads_it",
        "test_device_memory_stats_have_the_documented_shape",
        "test_device_rng_state_round_trips_through_a_checkpoint",  # set_seed cannot move it
        "test_device_seeding_is_reproducible",
        "test_registration",
    ]
    report = result.report
    assert "accelerate-vendorx declares no accelerate-core version range" in report
    assert (
        "set_seed(1234) and set_seed(4321) leave the generator of device 'vendorx' in the same "
        "state: accelerate_core_seed_device must seed the device's own generator"
    ) in report
    assert "set_seed(4321) did not change the generator of device 'vendorx'" in report
    assert "returned ['used']; missing ['allocated', 'reserved', 'max_allocated']" in report
    assert "accelerate_core_synchronize of device 'vendorx' answered False" in report
