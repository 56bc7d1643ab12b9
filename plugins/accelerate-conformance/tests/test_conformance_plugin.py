"""The conformance suite itself: harmless without options, and a broken backend fails it with a
report that names the failed check (fake distributions, run as a plugin author runs the suite)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from accelerate_conformance.runner import run_conformance

REQUIRES = ("accelerate-core>=0.1,<0.2",)

# Registers a distributed backend whose wrap hook returns the models as they are: every process
# trains on its own batches and nothing synchronises the gradients. It also accepts any option
# (it claims to have checked them).
NO_SYNC_BACKEND = """
from accelerate_core import BackendSpec, hookimpl

@hookimpl
def accelerate_core_backends():
    return [BackendSpec("nosync", "forgets to synchronise gradients")]

@hookimpl
def accelerate_core_validate_options(kind):
    return kind == "backend"  # checks nothing

@hookimpl
def accelerate_core_wrap(request, context):
    return request  # should wrap request.models in DistributedDataParallel
"""

# A DDP backend whose no_sync does nothing: the trained weights are right, but every accumulation
# micro-step all-reduces its gradients (the communication no_sync exists to save).
BUSY_BACKEND = """
import contextlib
from accelerate_core import BackendSpec, hookimpl

@hookimpl
def accelerate_core_backends():
    return [BackendSpec("busy", "all-reduces on every micro-step")]

@hookimpl
def accelerate_core_wrap(request, context):
    from torch.nn.parallel import DistributedDataParallel
    request.models = [DistributedDataParallel(m) for m in request.models]
    return request

@hookimpl
def accelerate_core_unwrap_model(model):
    return getattr(model, "module", model)

@hookimpl
def accelerate_core_no_sync(context):
    return lambda model: contextlib.nullcontext()  # should be model.no_sync()
"""

# A single-process backend whose wrap hook returns a copy of each model: the optimizer steps the
# original's parameters while the user trains the copy.
COPYING_BACKEND = """
import copy
from accelerate_core import BackendSpec, ConfigurationError, hookimpl

@hookimpl
def accelerate_core_backends():
    return [BackendSpec("copying", "returns the wrong objects", distributed=False)]

@hookimpl
def accelerate_core_wrap(request, context):
    if context.backend_options:
        raise ConfigurationError(f"unknown copying option(s) {sorted(context.backend_options)}")
    request.models = [copy.deepcopy(m) for m in request.models]
    return request
"""


def test_without_options_the_checks_skip_and_no_report_is_printed():
    result = run_conformance([])
    assert result.returncode == 0, result.output
    assert result.outcomes and set(result.outcomes.values()) == {"skipped"}
    assert "--accelerate-backend NAME" in result.output or "skipped" in result.output
    assert "accelerate-core conformance:" not in result.output


def test_the_options_are_in_pytest_help():
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--help"], capture_output=True, text=True, timeout=120
    )
    for option in ("--accelerate-backend", "--accelerate-precision", "--accelerate-device"):
        assert option in done.stdout


@pytest.mark.multiprocess
def test_a_backend_that_drops_gradient_sync_fails_with_a_readable_report(make_distribution):
    root = make_distribution(
        "accelerate-nosync", {"nosync_plugin": NO_SYNC_BACKEND}, {"nosync": "nosync_plugin"},
        requires=REQUIRES,
    )  # fmt: skip
    result = run_conformance(["--accelerate-backend", "nosync"], python_path=[root], timeout=300)
    assert result.returncode == 1, result.output[-3000:]
    assert result.outcomes["test_registration"] == "passed"
    assert result.outcomes["test_multi_process_ranks_hold_the_same_weights"] == "failed"
    assert result.outcomes["test_multi_process_training_matches_hand_written_ddp"] == "failed"
    assert result.outcomes["test_unknown_option_is_a_clear_error_on_every_rank"] == "failed"
    report = result.report
    assert "accelerate-core conformance: backend 'nosync', precision 'no', device cpu" in report
    assert "FAILED   multi process ranks hold the same weights" in report
    assert "gradients are not synchronised between processes" in report
    assert "rank 0's weights differ from hand-written DDP" in report
    assert "FAILED   unknown option is a clear error on every rank" in report
    assert "was accepted without an error" in report
    assert "PASSED   registration" in report
    assert "DOES NOT CONFORM" in report


@pytest.mark.multiprocess
def test_a_backend_whose_no_sync_still_communicates_fails(make_distribution):
    root = make_distribution(
        "accelerate-busy", {"busy_plugin": BUSY_BACKEND}, {"busy": "busy_plugin"},
        requires=REQUIRES,
    )  # fmt: skip
    result = run_conformance(
        ["--accelerate-backend", "busy", "-k", "registration or micro_steps or same_weights"],
        python_path=[root], timeout=300,
    )  # fmt: skip
    assert result.returncode == 1, result.output[-3000:]
    assert result.outcomes["test_registration"] == "passed"
    assert result.outcomes["test_multi_process_ranks_hold_the_same_weights"] == "passed"
    assert result.outcomes["test_accumulation_micro_steps_do_not_communicate"] == "failed"
    assert "FAILED   accumulation micro steps do not communicate" in result.report
    assert "micro-step that does not sync ran" in result.report
    assert "accelerate_core_no_sync must return a context" in result.report


def test_a_backend_that_returns_the_wrong_objects_fails_with_a_readable_report(make_distribution):
    root = make_distribution(
        "accelerate-copying", {"copying_plugin": COPYING_BACKEND}, {"copying": "copying_plugin"},
        requires=REQUIRES,
    )  # fmt: skip
    result = run_conformance(["--accelerate-backend", "copying"], python_path=[root], timeout=300)
    assert result.returncode == 1, result.output[-3000:]
    # The optimizer keeps the parameters of the model the backend copied: prepare refuses it
    # (issue 17: an optimizer that would train nothing is an error), so every check that trains
    # fails with that reason instead of with weights that differ.
    assert result.with_outcome("failed") == [
        "test_preparing_a_prepared_model_returns_it",
        "test_resume_continues_identically",
        "test_save_load_round_trip_restores_weights_exactly",
        "test_single_process_training_matches_reference",
    ]
    assert result.outcomes["test_unknown_option_is_a_clear_error_on_every_rank"] == "passed"
    report = result.report
    assert "FAILED   single process training matches reference" in report
    assert (
        "ConfigurationError: prepare(): AdamW holds 8 of its 8 parameter(s) outside every "
        "prepared model" in report
    )
    assert "DOES NOT CONFORM: 4 of 7 checks that ran failed" in report


def test_a_plugin_without_a_core_range_fails_registration(make_distribution):
    source = COPYING_BACKEND.replace('"copying"', '"unpinned"')
    root = make_distribution(
        "accelerate-unpinned", {"unpinned_plugin": source}, {"unpinned": "unpinned_plugin"}
    )
    result = run_conformance(
        ["--accelerate-backend", "unpinned", "-k", "registration"], python_path=[root]
    )
    assert result.outcomes["test_registration"] == "failed"
    assert "declares no accelerate-core version range" in result.report
