"""Device selection and checkpoints across devices on a real accelerator (issue 21); JSON to $OUT.

The CPU-only CI runs these paths with the example device (a CPU type with a generator of its
own); here the built-in ``cuda`` record is the device, so torch's own CUDA generator, allocator
and queue are what the hooks read:

1. ``accel launch --dry-run --device cuda`` passes ``ACCELERATE_CORE_DEVICE=cuda`` on;
   ``--cpu --device cuda`` is refused with the message the docs show.
2. ``PartialState(device="cuda")``: device ``cuda:0``, name ``cuda``; ``set_seed`` before the
   Accelerator gives the CUDA generator the state ``torch.cuda.manual_seed`` gives.
3. Same-device resume: after save_state, other draws and load_state, ``torch.rand`` on the GPU
   draws what it drew right after the save.
4. Across devices: a CUDA checkpoint loaded on ``cpu`` restores the weights and the CPU generator
   and warns that the CUDA RNG state does not apply; a CPU checkpoint loaded on ``cuda`` warns that
   the CUDA generator keeps its state, and it does.
5. The conformance suite's device checks against ``cuda`` (seeding, RNG round trip with draws,
   memory statistics that see a 64 MiB tensor, synchronize before save), when pytest is there.

    PYTHONPATH=core/src:plugins/accelerate-conformance/src python benchmarks/gpu/device_checks.py

Without a GPU every check reports "skipped: no CUDA device" (a smoke run of the script itself).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
RESULTS: dict[str, Any] = {}
CHECKS: dict[str, Callable[[], Any]] = {}


def check(name: str) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Register a check under ``name`` (``main`` runs them in order)."""

    def register(function: Callable[[], Any]) -> Callable[[], Any]:
        CHECKS[name] = function
        return function

    return register


def run_checks() -> None:
    """Run every check; record its result, ``skipped`` without CUDA, or the error."""
    for name, function in CHECKS.items():
        if not torch.cuda.is_available():
            RESULTS[name] = {"ok": None, "detail": "skipped: no CUDA device"}
            continue
        try:
            RESULTS[name] = {"ok": True, "detail": function()}
        except Exception as exc:  # one failing check must not hide the others
            RESULTS[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                             "traceback": traceback.format_exc()}  # fmt: skip
        print(f"{name}: {RESULTS[name]}", flush=True)


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCELERATE_CORE_")}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "core" / "src"), str(ROOT / "plugins" / "accelerate-conformance" / "src"),
         env.get("PYTHONPATH", "")]
    )  # fmt: skip
    return env


def accel(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "accelerate_core", *args], capture_output=True, text=True,
        timeout=300, env=environment(), cwd=ROOT,
    )  # fmt: skip


def fresh(device: str | None) -> Any:
    """An Accelerator on ``device`` (None: the core's cpu) with a prepared model and optimizer."""
    from accelerate_core import Accelerator, PartialState
    from accelerate_core.state import reset_state

    reset_state()
    if device is not None:
        PartialState(device=device)
    accelerator = Accelerator(cpu=device is None)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Dropout(0.5))
    optimizer = torch.optim.AdamW(model.parameters())
    model, optimizer = accelerator.prepare(model, optimizer)
    model(torch.ones(4, 16, device=accelerator.device)).sum().backward()
    optimizer.step()
    return accelerator, model


def weights(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


@check("launch_option")
def check_launch_option() -> Any:
    dry = accel("launch", "--dry-run", "--device", "cuda", "train.py")
    assert dry.returncode == 0, dry.stderr
    assert "ACCELERATE_CORE_DEVICE=cuda" in dry.stdout, dry.stdout
    refused = accel("launch", "--cpu", "--device", "cuda", "train.py")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "--cpu contradicts --device 'cuda'" in refused.stderr, refused.stderr
    return refused.stderr.strip()


@check("named_device_and_seeding")
def check_named_device_and_seeding() -> Any:
    from accelerate_core import Accelerator, set_seed
    from accelerate_core.state import reset_state

    reset_state()
    set_seed(123)  # before the Accelerator
    os.environ["ACCELERATE_CORE_DEVICE"] = "cuda"
    try:
        accelerator = Accelerator()
    finally:
        del os.environ["ACCELERATE_CORE_DEVICE"]
    assert accelerator.device == torch.device("cuda", 0), accelerator.device
    assert accelerator.state.device_name == "cuda"
    drawn = torch.rand(4, device="cuda").cpu()
    torch.cuda.manual_seed(123)
    assert torch.equal(drawn, torch.rand(4, device="cuda").cpu())
    return {"device": str(accelerator.device), "repr": repr(accelerator)}


@check("same_device_resume")
def check_same_device_resume() -> Any:
    with tempfile.TemporaryDirectory() as directory:
        accelerator, _ = fresh("cuda")
        checkpoint = accelerator.save_state(os.path.join(directory, "ckpt"))
        expected = torch.rand(8, device="cuda").cpu()
        torch.rand(100, device="cuda")
        accelerator.load_state(checkpoint)
        assert torch.equal(torch.rand(8, device="cuda").cpu(), expected)
        manifest = json.loads((Path(checkpoint) / "manifest.json").read_text())
        return {"manifest_device": manifest["device"]}


@check("cuda_checkpoint_on_cpu")
def check_cuda_checkpoint_on_cpu() -> Any:
    from accelerate_core.checkpoint import CheckpointDeviceWarning

    with tempfile.TemporaryDirectory() as directory:
        accelerator, model = fresh("cuda")
        saved = weights(model)
        checkpoint = accelerator.save_state(os.path.join(directory, "ckpt"))
        cpu_stream = torch.rand(3)
        accelerator, model = fresh(None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            accelerator.load_state(checkpoint)
        messages = [str(w.message) for w in caught if w.category is CheckpointDeviceWarning]
        assert messages and "the RNG state of device 'cuda' does not apply" in messages[0]
        assert all(torch.equal(saved[k], v) for k, v in weights(model).items())
        assert torch.equal(torch.rand(3), cpu_stream)
        return messages


@check("cpu_checkpoint_on_cuda")
def check_cpu_checkpoint_on_cuda() -> Any:
    from accelerate_core.checkpoint import CheckpointDeviceWarning

    with tempfile.TemporaryDirectory() as directory:
        accelerator, model = fresh(None)
        saved = weights(model)
        checkpoint = accelerator.save_state(os.path.join(directory, "ckpt"))
        accelerator, model = fresh("cuda")
        torch.cuda.manual_seed(7)
        state = torch.cuda.get_rng_state()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            accelerator.load_state(checkpoint)
        messages = [str(w.message) for w in caught if w.category is CheckpointDeviceWarning]
        assert messages and "the generator of device 'cuda' keeps its current state" in messages[0]
        assert torch.equal(torch.cuda.get_rng_state(), state)
        assert all(torch.equal(saved[k], v) for k, v in weights(model).items())
        return messages


@check("conformance_device_checks")
def check_conformance_device_checks() -> Any:
    try:
        import pytest  # noqa: F401
    except ImportError:
        return "skipped: pytest is not installed here"
    with tempfile.TemporaryDirectory() as directory:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--tb=short",
             "--accelerate-device", "cuda", "-k", "device or registration", "--pyargs",
             "accelerate_conformance"],
            capture_output=True, text=True, timeout=600, env=environment(), cwd=directory,
        )  # fmt: skip
    report = done.stdout[done.stdout.rfind("accelerate-core conformance:") :]
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    return report


def main() -> int:
    out = Path(os.environ.get("OUT", "."))
    out.mkdir(parents=True, exist_ok=True)
    run_checks()
    RESULTS["torch"] = torch.__version__
    RESULTS["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    (out / "device_checks.json").write_text(json.dumps(RESULTS, indent=1, default=str) + "\n")
    failed = [k for k, v in RESULTS.items() if isinstance(v, dict) and v.get("ok") is False]
    print(f"device checks: {len(failed)} failed {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
