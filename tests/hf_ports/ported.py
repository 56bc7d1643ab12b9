"""Hugging Face Accelerate's own examples, run with ``accelerate`` renamed in their imports.

The scripts come from a Hugging Face Accelerate source tree (``HF_ACCELERATE_SOURCE``: a checkout
or a bare git repository; default: the mirror this project's machines hold) and are not copied
into this repository. ``port`` replaces the module name in import lines and changes nothing
else. ``shims/`` stands in, offline, for the libraries and downloads the scripts need
(transformers, datasets, evaluate, timm, torchvision, schedulefree, scikit-learn); the image
example reads JPEGs generated here. ``CASES`` are the runs of HF's own example tests
(``tests/test_examples.py``) plus each top-level example, on 1 and 2 processes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = Path(os.environ.get("HF_ACCELERATE_SOURCE", "/work/.mirror/huggingface+accelerate/repo"))
IMPORT_LINE = re.compile(r"^(\s*)(from|import) accelerate(?=[\s.])", re.MULTILINE)


def hf_file(path: str) -> str | None:
    """A file of the HF source tree, or ``None`` when there is no source tree."""
    if (SOURCE / path).is_file():
        return (SOURCE / path).read_text()
    done = subprocess.run(["git", "-C", str(SOURCE), "show", f"HEAD:{path}"],
                          capture_output=True, text=True)  # fmt: skip
    return done.stdout if done.returncode == 0 else None


def port(text: str) -> str:
    """Rename the module in import lines; nothing else changes."""
    return IMPORT_LINE.sub(r"\1\2 accelerate_core", text)


def make_images(directory: Path, count: int = 24) -> None:
    """JPEGs named like the Oxford pets (``<breed>_<n>.jpg``): two classes told apart by colour."""
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        label = ("beagle", "sphynx")[index % 2]
        colour = (200, 40, 40) if label == "beagle" else (40, 40, 200)
        Image.new("RGB", (32, 32), colour).save(directory / f"{label}_{index}.jpg")


@dataclass(frozen=True)
class Run:
    """One invocation: arguments (``{dir}`` is the case's directory) and what its output needs."""

    args: tuple[str, ...] = ()
    expect: tuple[str, ...] = ("epoch 0:",)
    refuse: tuple[str, ...] = ()


@dataclass(frozen=True)
class Case:
    name: str
    script: str
    runs: tuple[Run, ...] = (Run(),)
    processes: tuple[int, ...] = (1, 2)
    setup: Callable[[Path], None] | None = None
    cpu_flag: bool = True
    env: dict[str, str] = field(default_factory=dict)


# Trackers (log_with="all") write offline, under the run's directory.
TRACKER_ENV = {
    "WANDB_MODE": "offline", "WANDB_DIR": "{dir}", "WANDB_SILENT": "true",
    "MLFLOW_TRACKING_URI": "file:{dir}/mlruns", "MLFLOW_ALLOW_FILE_STORE": "true",
    "TRACKIO_DIR": "{dir}/trackio",
}  # fmt: skip
EX, BF = "examples", "examples/by_feature"
DEEPSPEED_EXAMPLE_ARGS = (
    "--dataset_name", "wikitext", "--dataset_config_name", "wikitext-2-raw-v1",
    "--model_name_or_path", "tiny", "--block_size", "8", "--num_train_epochs", "1",
    "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "2",
    "--output_dir", "{dir}/out",
)  # fmt: skip
CASES = [
    Case("nlp_example", f"{EX}/nlp_example.py"),
    Case("complete_nlp_example", f"{EX}/complete_nlp_example.py"),
    Case(
        "complete_nlp_example checkpoints",
        f"{EX}/complete_nlp_example.py",
        (
            Run(("--checkpointing_steps", "epoch", "--output_dir", "{dir}/out")),
            Run(("--resume_from_checkpoint", "{dir}/out/epoch_0"), ("epoch 1:",), ("epoch 0:",)),
        ),
    ),
    Case(
        "cv_example",
        f"{EX}/cv_example.py",
        (Run(("--data_dir", "{dir}/images")),),
        setup=lambda d: make_images(d / "images"),
    ),
    Case(
        "complete_cv_example",
        f"{EX}/complete_cv_example.py",
        (Run(("--data_dir", "{dir}/images")),),
        setup=lambda d: make_images(d / "images"),
    ),
    Case(
        "checkpointing by epoch, then resume",
        f"{BF}/checkpointing.py",
        (
            Run(("--checkpointing_steps", "epoch", "--output_dir", "{dir}")),
            Run(("--resume_from_checkpoint", "{dir}/epoch_0"), ("epoch 1:",), ("epoch 0:",)),
        ),
    ),
    Case(
        "checkpointing by steps, then resume",
        f"{BF}/checkpointing.py",
        (
            Run(("--checkpointing_steps", "1", "--output_dir", "{dir}")),
            Run(("--resume_from_checkpoint", "{dir}/step_2"), ("epoch 1:",)),
        ),
    ),
    Case("cross_validation", f"{BF}/cross_validation.py", (Run(("--num_folds", "2")),)),
    Case("multi_process_metrics", f"{BF}/multi_process_metrics.py"),
    Case("schedule_free", f"{BF}/schedule_free.py"),
    Case("tracking", f"{BF}/tracking.py", (Run(("--with_tracking", "--project_dir", "{dir}")),)),
    Case("gradient_accumulation", f"{BF}/gradient_accumulation.py"),
    Case(
        "gradient_accumulation_for_autoregressive_models",
        f"{BF}/gradient_accumulation_for_autoregressive_models.py",
        (Run(("--gradient_accumulation_steps", "2"), ("epoch 0::",)),),
    ),
    Case("local_sgd", f"{BF}/local_sgd.py"),
    Case("early_stopping", f"{BF}/early_stopping.py"),
    Case("profiler", f"{BF}/profiler.py", (Run(("--output_trace_dir", "{dir}/trace")),)),
    Case("ddp_comm_hook", f"{BF}/ddp_comm_hook.py", (Run(("--ddp_comm_hook", "fp16")),)),
    Case("memory", f"{BF}/memory.py"),
    Case("automatic_gradient_accumulation", f"{BF}/automatic_gradient_accumulation.py"),
    Case(
        "fsdp_with_peak_mem_tracking",
        f"{BF}/fsdp_with_peak_mem_tracking.py",
        (Run(("--model_name_or_path", "tiny")),),
    ),
    Case(
        "deepspeed_with_config_support",
        f"{BF}/deepspeed_with_config_support.py",
        (Run(DEEPSPEED_EXAMPLE_ARGS, expect=()),),  # it logs its epochs (stderr)
        cpu_flag=False,
    ),
    Case("megatron_lm_gpt_pretraining", f"{BF}/megatron_lm_gpt_pretraining.py", cpu_flag=False),
]


@dataclass
class Outcome:
    case: str
    processes: int
    ok: bool
    seconds: float
    detail: str = ""


def run_case(case: Case, processes: int, directory: Path, timeout: float = 600) -> Outcome:
    """Port the script, run each of its invocations in ``directory``; ``ok`` when all pass."""
    start = time.monotonic()
    source = hf_file(case.script)
    if source is None:
        return Outcome(case.name, processes, False, 0.0, f"no HF source tree at {SOURCE}")
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / Path(case.script).name
    script.write_text(port(source))
    if case.setup is not None:
        case.setup(directory)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ACCELERATE_", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_"))
    }
    env.update(PYTHONPATH=str(HERE / "shims"), OMP_NUM_THREADS="1")
    env.update(
        {k: v.replace("{dir}", str(directory)) for k, v in {**TRACKER_ENV, **case.env}.items()}
    )
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone",
                     f"--nproc-per-node={processes}"]  # fmt: skip
    for run in case.runs:
        args = [a.replace("{dir}", str(directory)) for a in run.args]
        command = [*launcher, str(script), *(["--cpu"] if case.cpu_flag else []), *args]
        try:
            done = subprocess.run(command, env=env, cwd=directory, capture_output=True, text=True,
                                  timeout=timeout)  # fmt: skip
        except subprocess.TimeoutExpired:
            return Outcome(case.name, processes, False, time.monotonic() - start, "timed out")
        output = done.stdout + done.stderr
        missing = [text for text in run.expect if text not in done.stdout]
        unwanted = [text for text in run.refuse if text in done.stdout]
        if done.returncode != 0 or missing or unwanted:
            return Outcome(case.name, processes, False, time.monotonic() - start,
                           _reason(output, done.returncode, missing, unwanted))  # fmt: skip
    return Outcome(case.name, processes, True, time.monotonic() - start)


def _reason(output: str, code: int, missing: list[str], unwanted: list[str]) -> str:
    if code != 0:
        errors = re.findall(r"^\s*(?:\[rank\d+\]:\s*)?(\w+(?:Error|Exception)\b.*)$", output, re.M)
        lines = [line for line in output.splitlines() if line.strip(" =")]
        return errors[0] if errors else (lines[-1] if lines else f"exit code {code}")
    return f"output lacks {missing}" if missing else f"output has {unwanted}"


def matrix() -> list[tuple[Case, int]]:
    """Every (case, number of processes) to run."""
    return [(case, n) for case in CASES for n in case.processes]
