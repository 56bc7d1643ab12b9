"""``notebook_launcher``: a function on N CPU processes, and clear refusals."""

from __future__ import annotations

import os

import pytest
import torch

from accelerate_core import ConfigurationError, PartialState, notebook_launcher
from accelerate_core.launchers import LaunchFailedError
from accelerate_core.state import detect_environment


def where_am_i(tag: str) -> tuple:
    environment = detect_environment()
    return (
        tag,
        environment.rank,
        environment.world_size,
        os.environ.get("ACCELERATE_CORE_MIXED_PRECISION"),
        os.environ.get("ACCELERATE_CORE_NUM_PROCESSES"),
    )


def fails_on_rank_one() -> None:
    import time

    if detect_environment().rank == 1:
        raise RuntimeError("notebook cell failed on rank 1")
    time.sleep(60)


@pytest.mark.multiprocess
def test_runs_the_function_on_two_processes():
    results = notebook_launcher(where_am_i, ("x",), num_processes=2, mixed_precision="bf16")
    assert results == [("x", 0, 2, "bf16", "2"), ("x", 1, 2, "bf16", "2")]
    assert "ACCELERATE_CORE_MIXED_PRECISION" not in os.environ  # restored afterwards


@pytest.mark.multiprocess
def test_a_failing_process_stops_the_others_and_is_reported():
    with pytest.raises(LaunchFailedError) as err:
        notebook_launcher(fails_on_rank_one, num_processes=2)
    message = str(err.value)
    assert message.startswith("notebook_launcher: rank 1")
    assert "RuntimeError: notebook cell failed on rank 1" in message


def test_one_process_runs_here_with_the_settings():
    assert notebook_launcher(where_am_i, ("y",), num_processes=1, mixed_precision="bf16") == [
        ("y", 0, 1, "bf16", "1")
    ]


def test_refused_once_cuda_is_initialised(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.raises(ConfigurationError, match="CUDA is already initialised in this process"):
        notebook_launcher(where_am_i, ("z",), num_processes=2)


def test_refused_after_an_accelerator_was_created_here():
    PartialState(cpu=True)
    with pytest.raises(ConfigurationError, match="create the Accelerator inside the launched"):
        notebook_launcher(where_am_i, ("z",), num_processes=2)
