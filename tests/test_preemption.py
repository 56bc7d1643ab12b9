"""Preemption: SIGTERM/SIGUSR1 at a random step -> every rank saves -> rerun -> bit-identical
weights to a run that never stopped (issue 17, items 6 and 7's auto-resume).

Real processes and real signals: ``tests/preemptible_train.py`` under ``python`` (one process)
and under ``accel launch`` (two, DDP over gloo). The step to signal at is drawn at random; the
seed is in every assertion message.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from accelerate_core import Accelerator, CheckpointError, ConfigurationError
from accelerate_core.cli import worker
from accelerate_core.preemption import LAUNCH_DIR_ENV, PREEMPTED_EXIT_CODE, REPORT_PREFIX

pytestmark = pytest.mark.multiprocess

SCRIPT = str(Path(__file__).with_name("preemptible_train.py"))
STEPS = {1: 39, 2: 21}  # batches per rank over the 3 epochs of resume_recipe
SEED = int(os.environ.get("PREEMPTION_TEST_SEED", time.time_ns() % 10_000))


def command(processes: int) -> list[str]:
    if processes == 1:
        return [sys.executable, SCRIPT]
    launch = [sys.executable, "-m", "accelerate_core", "launch", "--cpu"]
    return [*launch, "--num-processes", str(processes), SCRIPT]


def run(
    processes: int,
    project: Path,
    out: Path,
    stop: tuple[int, int, signal.Signals] | None = None,
    delay: float = 0.0,
) -> tuple[int, str, str]:
    """Run the script; with ``stop=(step, rank, signal)`` send ``signal`` once that rank printed
    that step (``rank`` -1: to the launcher). Returns the exit code and the output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [*command(processes), str(project), str(out), str(delay)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if stop is not None and line.startswith("STEP "):
                rank, count, pid = map(int, line.split()[1:4])
                if count == stop[0] and (stop[1] == -1 or rank == stop[1]):
                    os.kill(process.pid if stop[1] == -1 else pid, stop[2])
                    stop = None
        err = process.stderr.read()
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode, "".join(lines), err


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[int, dict[str, torch.Tensor]]:
    """The weights of uninterrupted runs on one process (``resume_recipe.train``, the same
    recipe, in this process) and on two (the script under ``accel launch``)."""
    import resume_recipe

    found = {1: resume_recipe.train(str(tmp_path_factory.mktemp("unused")))["weights"]}
    root = tmp_path_factory.mktemp("reference2")
    code, out, err = run(2, root / "project", root / "weights.safetensors")
    assert code == 0, err
    assert f"DONE {STEPS[2]}" in out
    found[2] = load_file(root / "weights.safetensors")
    return found


def same(weights: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> bool:
    return weights.keys() == expected.keys() and all(
        torch.equal(weights[k], expected[k]) for k in weights
    )


@pytest.mark.timeout(300)  # the first one also runs the reference; 2 cores may be busy
@pytest.mark.parametrize(
    ("processes", "target", "sig"),
    [
        (1, 0, signal.SIGTERM),  # python script.py, the process itself
        (2, -1, signal.SIGTERM),  # accel launch gets SIGTERM (a scheduler, Kubernetes)
        (2, 1, signal.SIGUSR1),  # one rank gets SIGUSR1 (SLURM --signal): every rank stops
    ],
    ids=["one process SIGTERM", "two processes SIGTERM to accel launch", "SIGUSR1 to rank 1"],
)
def test_preempted_at_a_random_step_resumes_bit_identical(
    tmp_path, reference, processes, target, sig
):
    rng = random.Random(f"{SEED}-{processes}-{target}")
    step = rng.randint(2, STEPS[processes] - 4)
    context = f"(seed {SEED}: signal {sig.name} after step {step})"
    project, out = tmp_path / "project", tmp_path / "weights.safetensors"
    code, _, err = run(processes, project, out, (step, target, sig), delay=0.05)
    assert code == PREEMPTED_EXIT_CODE, f"{context}\n{err}"
    assert not out.exists(), context  # it stopped before the end
    saved = sorted(p.name for p in (project / "checkpoints").iterdir())
    assert saved == ["checkpoint_0"], context
    stopped = [line for line in err.splitlines() if "preempted by" in line and "[rank" in line]
    assert len(stopped) == processes, f"{context}\n{err}"
    at = {line.split("training step ")[1].split()[0] for line in stopped}
    assert len(at) == 1, f"the ranks stopped at different steps {at} {context}"
    stop_step = int(at.pop())
    # The step under way when the signal came, or a later one: without a syncing backward (the
    # micro-steps of accumulation 3) a rank runs ahead of the one that got the signal.
    assert step <= stop_step <= step + 3, context
    if processes > 1:
        assert f"accel launch: preempted: 2 rank(s) stopped after training step {stop_step}" in err
        assert f"exiting with {PREEMPTED_EXIT_CODE}. Run the same command again" in err
        assert "(received by rank" in err or target == -1  # the other rank learnt it by store
    code, output, err = run(processes, project, out)
    assert code == 0, f"{context}\n{err}"
    assert f"auto_resume: resumed from {project / 'checkpoints' / 'checkpoint_0'}" in err
    first = int(output.split("STEP 0 ", 1)[1].split()[0])
    assert first == stop_step + 1, context  # it went on with the next batch
    assert same(load_file(out), reference[processes]), f"weights differ {context}"


FAILS = """
import sys, time, torch
from accelerate_core import Accelerator
accelerator = Accelerator(cpu=True, project_dir=sys.argv[1], handle_preemption=True)
model = accelerator.prepare(torch.nn.Linear(2, 2))
if accelerator.process_index == 1:
    raise ValueError("boom from rank 1")
time.sleep(60)
"""


def test_a_failing_rank_still_ends_the_launch_at_once(tmp_path):
    """The SIGTERM with which the launch stops the other ranks is not taken for a preemption."""
    script = tmp_path / "fails.py"
    script.write_text(FAILS)
    started = time.monotonic()
    result = subprocess.run(
        [*command(2)[:-1], str(script), str(tmp_path / "project")],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert time.monotonic() - started < 40
    assert "ValueError: boom from rank 1" in result.stderr
    assert "preempted" not in result.stderr and "SIGTERM received" not in result.stderr
    assert not (tmp_path / "project" / "checkpoints").exists()


def test_the_worker_spells_the_constants_as_the_core_does():
    assert worker.PREEMPTED_EXIT_CODE == PREEMPTED_EXIT_CODE
    assert (worker.LAUNCH_DIR_ENV, worker.REPORT_PREFIX) == (LAUNCH_DIR_ENV, REPORT_PREFIX)


def test_preemption_and_auto_resume_need_a_project_dir():
    with pytest.raises(ConfigurationError, match=r"handle_preemption/auto_resume=True writes"):
        Accelerator(cpu=True, handle_preemption=True, auto_resume=True)


def test_auto_resume_refuses_to_start_next_to_a_checkpoint_it_cannot_load(tmp_path):
    first = Accelerator(cpu=True, project_dir=str(tmp_path))
    model = torch.nn.Linear(2, 1)
    first.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1))
    first.save_state()
    from accelerate_core.state import reset_state

    reset_state()
    again = Accelerator(cpu=True, project_dir=str(tmp_path), auto_resume=True)
    loader = again.prepare(torch.utils.data.DataLoader(torch.ones(4, 2), batch_size=2))
    again.prepare(torch.nn.Linear(2, 1))  # no optimizer this time: never matches
    with pytest.raises(CheckpointError) as error:
        for _ in loader:
            pass
    assert str(error.value) == (
        f"auto_resume: the latest checkpoint {tmp_path / 'checkpoints' / 'checkpoint_0'} was "
        "never loaded: the run reached its first batch holding other objects than it (saved vs "
        "prepared: models 1 vs 1, optimizers 1 vs 0, schedulers 0 vs 0, dataloaders 0 vs 1, "
        "custom 0 vs 0). Prepare and register_for_checkpointing the same objects before the "
        "training loop, or start afresh in another project_dir"
    )
