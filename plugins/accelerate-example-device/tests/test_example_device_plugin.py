"""The example out-of-tree device: discovered only because it is installed, used through its hooks.

It is installed here the way a user installs a vendor's package (pip, from its folder) but into a
temporary directory that only these tests put on the path: scripts/setup.sh leaves
``plugins/accelerate-example-*`` out of the development environment, so no other test sees it.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from accelerate_core.plugins import reset_plugin_manager

PACKAGE = Path(__file__).resolve().parents[1]
DISTRIBUTION = "accelerate-example-device"
TRACE_ENV = "ACCELERATE_EXAMPLE_DEVICE_TRACE"


def pip_install(source: Path, target: Path) -> Path:
    """``pip install --target``: a real installed distribution (dist-info, entry points)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-deps", "--no-build-isolation", "--target", str(target), str(source)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return target


def copy_package(destination: Path) -> Path:
    """The package's sources without build leftovers (pip builds in the folder it is given)."""
    ignore = shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "tests")
    return Path(shutil.copytree(PACKAGE, destination, ignore=ignore))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the installed example device (put it on PYTHONPATH to install it)."""
    root = tmp_path_factory.mktemp("example-device")
    return pip_install(copy_package(root / "src"), root / "site")


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without launch settings and PYTHONPATH, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ACCELERATE_CORE_") and k not in ("PYTHONPATH", TRACE_ENV)
    }
    return {**env, **extra}


def accel_env(*args: str, **extra: str) -> str:
    accel = Path(sys.executable).with_name("accel")
    command = [str(accel)] if accel.exists() else [sys.executable, "-m", "accelerate_core"]
    done = subprocess.run(
        [*command, "env", *args], env=clean_env(**extra), capture_output=True, text=True,
        timeout=120, check=True,
    )  # fmt: skip
    return done.stdout


@pytest.fixture
def installed(site: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """The example device importable in this process, selected, with its hook calls traced."""
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    trace = tmp_path / "calls.jsonl"
    monkeypatch.setenv(TRACE_ENV, str(trace))
    monkeypatch.setenv("ACCELERATE_CORE_DEVICE", "example")
    reset_plugin_manager()
    yield trace
    for name in [m for m in sys.modules if m.startswith("accelerate_example_device")]:
        del sys.modules[name]


def hooks_called(trace: Path) -> dict[str, int]:
    calls: dict[str, int] = {}
    for line in trace.read_text().splitlines() if trace.exists() else []:
        hook = json.loads(line)["hook"]
        calls[hook] = calls.get(hook, 0) + 1
    return calls


# --------------------------------------------------------------------------- discovery


def test_accel_env_lists_the_installed_device_and_forgets_it_when_removed(site):
    info = json.loads(accel_env("--json", PYTHONPATH=str(site)))
    plugin = next(p for p in info["plugins"] if p["name"] == "example")
    assert plugin == {
        "name": "example", "distribution": DISTRIBUTION, "version": "0.1.0",
        "status": "loaded", "error": None,
    }  # fmt: skip
    assert info["devices"]["example"] == f"{DISTRIBUTION} 0.1.0"
    text = accel_env(PYTHONPATH=str(site))
    assert f"    example: {DISTRIBUTION} 0.1.0 [loaded]" in text
    assert f"example ({DISTRIBUTION} 0.1.0)" in text

    removed = json.loads(accel_env("--json"))  # the same environment without the package
    assert not any(p["name"] == "example" for p in removed["plugins"])
    assert "example" not in removed["devices"]
    assert "cpu" in removed["devices"]


def test_the_package_declares_the_core_versions_it_supports(site, monkeypatch):
    from importlib.metadata import PathDistribution

    from accelerate_core.plugins import incompatibility

    (info,) = site.glob("accelerate_example_device-*.dist-info")
    requires = PathDistribution(info).requires or []
    assert "accelerate-core<0.2,>=0.1" in requires
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    assert incompatibility(DISTRIBUTION) is None
    assert incompatibility(DISTRIBUTION, core="0.2.0").startswith(
        f"{DISTRIBUTION} requires accelerate-core<0.2,>=0.1 but accelerate-core 0.2.0 is installed"
    )


def test_a_build_for_another_core_is_reported_incompatible_not_loaded(tmp_path):
    source = copy_package(tmp_path / "src")
    pyproject = source / "pyproject.toml"
    text = pyproject.read_text().replace('"accelerate-core>=0.1,<0.2"', '"accelerate-core>=9"')
    pyproject.write_text(text)
    site = pip_install(source, tmp_path / "site")
    trace = tmp_path / "calls.jsonl"
    info = json.loads(accel_env("--json", PYTHONPATH=str(site), **{TRACE_ENV: str(trace)}))
    plugin = next(p for p in info["plugins"] if p["name"] == "example")
    assert plugin["status"] == "incompatible"
    assert plugin["error"] == (
        f"{DISTRIBUTION} requires accelerate-core>=9 but accelerate-core 0.1.0 is installed; "
        f"upgrade one of them (pip install -U {DISTRIBUTION} accelerate-core)"
    )
    assert "example" not in info["devices"]
    text = accel_env(PYTHONPATH=str(site))
    assert f"    example: {DISTRIBUTION} 0.1.0 [incompatible] {DISTRIBUTION} requires" in text


# --------------------------------------------------------------------------- training


def test_training_runs_on_the_example_device_through_its_hooks(installed, tmp_path):
    from accelerate_core import Accelerator
    from accelerate_core.checkpoint_io import read_object

    accelerator = Accelerator(
        mixed_precision="bf16", gradient_accumulation_steps=2, project_dir=str(tmp_path),
        track_memory=True,
    )  # fmt: skip
    assert accelerator.state.device_spec.name == "example"
    assert accelerator.device == torch.device("cpu")
    assert accelerator.state.device_owner.__name__ == "accelerate_example_device._plugin"

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    data = torch.utils.data.TensorDataset(torch.randn(64, 8), torch.randn(64, 1))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    dtypes = set()
    model[0].register_forward_hook(lambda module, args, out: dtypes.add(out.dtype))

    def epoch() -> None:
        for x, y in loader:
            with accelerator.accumulate(model):
                loss = torch.nn.functional.mse_loss(model(x), y)
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()

    epoch()
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    checkpoint = accelerator.save_state()
    epoch()
    assert any(not torch.equal(saved[k], v) for k, v in model.state_dict().items())
    accelerator.load_state()
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    memory_file = accelerator.memory_tracker.stop()

    assert dtypes == {torch.bfloat16}  # autocast through DeviceSpec.autocast_type on the CPU
    calls = hooks_called(installed)
    assert calls["setup_device"] == 1
    assert calls["synchronize"] == 1  # save_state waits for the device before reading state
    assert calls["device_rng_state"] == 1 and calls["set_device_rng_state"] == 1
    assert calls["device_memory_stats"] >= 2  # MemoryTracker's first and last samples
    rng = read_object(Path(checkpoint) / "random_states_0.bin")
    assert rng["device"]["device"] == "example"
    samples = json.loads(memory_file.read_text())
    assert len(samples["series"]["device_allocated"]) >= 2
    assert min(samples["series"]["device_allocated"]) > 0


def test_fp16_is_refused_on_the_example_device(installed):
    from accelerate_core import Accelerator, ConfigurationError

    with pytest.raises(ConfigurationError, match=r"'fp16' is not supported on device.*bf16"):
        Accelerator(mixed_precision="fp16")


def two_process_training() -> dict[str, object]:
    import torch.distributed as dist

    from accelerate_core import Accelerator

    accelerator = Accelerator()
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    model, optimizer = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1))
    inputs = torch.full((2, 4), float(accelerator.process_index + 1))  # different on each rank
    accelerator.backward(model(inputs).sum())
    optimizer.step()
    weights = [None] * accelerator.num_processes
    dist.all_gather_object(weights, accelerator.unwrap_model(model).weight.detach())
    return {
        "same_weights": all(torch.equal(w, weights[0]) for w in weights),
        "device": accelerator.state.device_spec.name,
        "process_group": dist.get_backend(),
        "backend": accelerator.backend,
        "wrapped": type(model).__name__,
    }


@pytest.mark.multiprocess
def test_two_processes_use_the_device_records_process_group_backend(installed, site):
    from accelerate_core.testing import run_distributed

    env = {"PYTHONPATH": str(site), "ACCELERATE_CORE_DEVICE": "example", TRACE_ENV: str(installed)}
    for result in run_distributed(two_process_training, env=env):
        assert result == {
            "same_weights": True, "device": "example", "process_group": "gloo", "backend": "ddp",
            "wrapped": "DistributedDataParallel",
        }  # fmt: skip
    setups = [json.loads(line) for line in installed.read_text().splitlines()]
    assert sorted(c["local_rank"] for c in setups if c["hook"] == "setup_device") == ["0", "1"]


def test_the_example_device_passes_the_conformance_suite(site, tmp_path):
    runner = pytest.importorskip("accelerate_conformance.runner")
    trace = tmp_path / "calls.jsonl"
    result = runner.run_conformance(
        ["--accelerate-backend", "none", "--accelerate-device", "example"],
        python_path=[site], env={TRACE_ENV: str(trace)}, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.output[-3000:]
    assert "device 'example'" in result.report and "CONFORMS" in result.report
    assert result.outcomes["test_single_process_training_matches_reference"] == "passed"
    calls = hooks_called(trace)
    assert calls["setup_device"] >= 1 and calls["device_rng_state"] >= 1
    assert calls["set_device_rng_state"] >= 1 and calls["synchronize"] >= 1
