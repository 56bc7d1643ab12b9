"""The example out-of-tree device: discovered only because it is installed, used through its hooks.

It is installed here the way a user installs a vendor's package (pip, from its folder) but into a
temporary directory that only these tests put on the path: scripts/setup.sh leaves
``plugins/accelerate-example-*`` out of the development environment, so no other test sees it.
It is selected as users select it (``accel launch --device example``, the config key, the
variable, ``PartialState(device=...)``) and seeded with ``set_seed``. The conformance suite runs
against it from ``plugins/README.md``'s device block (``tests/test_plugin_docs.py``).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from accelerate_core.plugins import reset_plugin_manager
from accelerate_core.state import reset_state

# pip installs and launches in fresh processes: minutes on a busy 2-core machine.
pytestmark = pytest.mark.timeout(300)
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
def importable(site: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """The example device importable in this process (not selected), its hook calls traced."""
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    trace = tmp_path / "calls.jsonl"
    monkeypatch.setenv(TRACE_ENV, str(trace))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no user config file is read
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    reset_plugin_manager()
    yield trace
    for name in [m for m in sys.modules if m.startswith("accelerate_example_device")]:
        del sys.modules[name]


@pytest.fixture
def installed(importable: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The example device importable and selected (``ACCELERATE_CORE_DEVICE=example``)."""
    monkeypatch.setenv("ACCELERATE_CORE_DEVICE", "example")
    return importable


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
    from accelerate_example_device.generator import rand

    from accelerate_core import Accelerator, set_seed
    from accelerate_core.checkpoint_io import read_manifest, read_object

    accelerator = Accelerator(
        mixed_precision="bf16", gradient_accumulation_steps=2, project_dir=str(tmp_path),
        track_memory=True,
    )  # fmt: skip
    assert accelerator.state.device_spec.name == accelerator.state.device_name == "example"
    assert accelerator.device == torch.device("cpu")
    assert accelerator.state.device_owner.__name__ == "accelerate_example_device._plugin"
    assert "device=example (cpu)" in repr(accelerator)

    set_seed(0)
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
                noise = 0.01 * rand(*x.shape)  # drawn on the device, from its own generator
                loss = torch.nn.functional.mse_loss(model(x + noise), y)
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()

    epoch()
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    checkpoint = accelerator.save_state()
    epoch()
    after_second_epoch = {k: v.clone() for k, v in model.state_dict().items()}
    assert any(not torch.equal(saved[k], v) for k, v in after_second_epoch.items())
    accelerator.load_state()
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    epoch()  # the device's noise stream was restored too: the same second epoch
    assert all(torch.equal(after_second_epoch[k], v) for k, v in model.state_dict().items())
    memory_file = accelerator.memory_tracker.stop()

    assert dtypes == {torch.bfloat16}  # autocast through DeviceSpec.autocast_type on the CPU
    calls = hooks_called(installed)
    assert calls["setup_device"] == 1
    assert calls["seed_device"] == 1  # set_seed reached the device's own generator
    assert calls["synchronize"] == 1  # save_state waits for the device before reading state
    assert calls["device_rng_state"] == 1 and calls["set_device_rng_state"] == 1
    assert calls["device_memory_stats"] >= 2  # MemoryTracker's first and last samples
    rng = read_object(Path(checkpoint) / "random_states_0.bin")
    assert rng["device"]["device"] == "example" and rng["device_name"] == "example"
    assert read_manifest(Path(checkpoint))["device"] == {"name": "example", "type": "cpu"}
    samples = json.loads(memory_file.read_text())
    assert samples["metadata"]["device_name"] == "example"
    assert samples["metadata"]["device"] == "cpu"
    assert len(samples["series"]["device_allocated"]) >= 2
    assert min(samples["series"]["device_allocated"]) > 0


def test_fp16_is_refused_on_the_example_device_by_name(installed):
    from accelerate_core import Accelerator, ConfigurationError

    with pytest.raises(ConfigurationError) as info:
        Accelerator(mixed_precision="fp16")
    assert str(info.value) == (
        "mixed_precision='fp16' is not supported on device 'example' (cpu) (supported there: "
        "bf16); choose another mixed_precision, or run on a device that supports fp16"
    )


# --------------------------------------------------------------------------- seeding


def test_set_seed_seeds_the_devices_own_generator_before_and_after_the_accelerator(installed):
    from accelerate_example_device.generator import rand

    from accelerate_core import Accelerator, set_seed

    def reference(seed: int) -> torch.Tensor:
        return torch.rand(4, generator=torch.Generator().manual_seed(seed))

    set_seed(7)  # no process state yet: the device is seeded once it is set up
    assert hooks_called(installed).get("seed_device") is None
    Accelerator()
    assert torch.equal(rand(4), reference(7))
    set_seed(7)
    assert torch.equal(rand(4), reference(7))
    set_seed(8)
    assert torch.equal(rand(4), reference(8))
    seeds = [json.loads(line) for line in installed.read_text().splitlines()]
    assert [c["seed"] for c in seeds if c["hook"] == "seed_device"] == ["7", "7", "8"]


# --------------------------------------------------------------------------- launch


def test_accel_launch_device_option_dry_run_config_file_and_shell_variable(
    importable, tmp_path, monkeypatch, capsys
):
    from accelerate_core.cli.main import main

    def dry_run(*args: str) -> str:
        assert main(["launch", "--dry-run", *args, "train.py"]) == 0
        return capsys.readouterr().out

    out = dry_run("--device", "example")
    assert re.search(r"^  device: +example +# command line$", out, flags=re.MULTILINE)
    assert "  ACCELERATE_CORE_DEVICE=example\n" in out
    assert json.loads(_variable(out, "ACCELERATE_CORE_LAUNCH_SOURCES"))["device"] == "command line"
    config = tmp_path / "cfg.yaml"
    config.write_text("device: example\nnum_processes: 2\n")
    out = dry_run("--config-file", str(config))
    assert re.search(rf"^  device: +example +# config file {config}$", out, flags=re.MULTILINE)
    assert "ACCELERATE_CORE_DEVICE=example" in out
    monkeypatch.setenv("ACCELERATE_CORE_DEVICE", "example")  # the shell of the launch
    out = dry_run("--config-file", str(config))
    assert re.search(
        r"^  device: +example +# environment ACCELERATE_CORE_DEVICE$", out, flags=re.MULTILINE
    )
    out = dry_run("--device", "cpu")  # the command line beats the shell
    assert "ACCELERATE_CORE_DEVICE=cpu" in out
    monkeypatch.delenv("ACCELERATE_CORE_DEVICE")
    out = dry_run("--device", "example", "--num-machines", "2", "--main-process-ip", "10.0.0.1",
                  "--main-process-port", "29500", "--num-processes", "4")  # fmt: skip
    assert "every machine runs this launch with the same settings (device, backend, ...)" in out


def _variable(dry_run_output: str, name: str) -> str:
    (line,) = [x for x in dry_run_output.splitlines() if x.startswith(f"  {name}=")]
    return line.split("=", 1)[1]


@pytest.mark.parametrize(
    ("arguments", "config", "message"),
    [
        (["--cpu", "--device", "example"], None,
         "--cpu contradicts --device 'example' (the CPU is the device 'cpu'); drop the cpu "
         "setting to train on 'example', or select the device cpu"),
        (["--device", "example"], "cpu: true\n",
         "cpu (config file {config}) contradicts --device 'example'"),
        (["--device", "exampel"], None,
         "device 'exampel' is not installed; install the package that provides it (accel env "
         "lists installed plugins) (installed devices: cpu, cuda, example, mps, xpu)"),
    ],
)  # fmt: skip
def test_launch_refuses_a_contradicting_or_unknown_device(
    importable, tmp_path, capsys, arguments, config, message
):
    from accelerate_core.cli.main import main

    path = tmp_path / "cfg.yaml"
    if config is not None:
        path.write_text(config)
        arguments = [*arguments, "--config-file", str(path)]
    assert main(["launch", *arguments, "train.py"]) == 2
    assert message.format(config=path) in capsys.readouterr().err


def test_a_script_that_contradicts_the_launchs_device_is_an_error(importable, monkeypatch):
    from accelerate_core import Accelerator, ConfigurationError, PartialState
    from accelerate_core.launch_settings import resolve_launch_config
    from accelerate_core.plugins import collect_launch_options

    config = resolve_launch_config(
        {"device": "example"}, None, collect_launch_options(), environ={}
    )
    for name, value in config.environment().items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match="contradicts `accel launch --device example`"):
        PartialState(device="cpu")
    with pytest.raises(ConfigurationError, match="cpu=True contradicts the selected device"):
        PartialState(cpu=True)
    assert PartialState().device_name == "example"
    with pytest.raises(ConfigurationError, match="already created on device 'example'"):
        PartialState(device="cpu")
    with pytest.raises(ConfigurationError, match=r"already created on device 'example' \(cpu\)"):
        Accelerator(cpu=True)  # the device computes on the CPU, but it is not the core's cpu


def test_accel_test_trains_on_the_device_it_is_given(importable, capsys):
    from accelerate_core.cli.main import main

    assert main(["test", "--device", "example"]) == 0
    out = capsys.readouterr().out
    assert "backend none, mixed precision no, device example (cpu), accumulation 1" in out
    assert "accel test: passed" in out
    assert hooks_called(importable)["setup_device"] == 1


def test_accel_env_names_the_device_this_process_would_use(site):
    text = accel_env(PYTHONPATH=str(site), ACCELERATE_CORE_DEVICE="example")
    assert f"device example (cpu, from {DISTRIBUTION} 0.1.0)" in text  # this process
    assert "cpu False, device example, backend none" in text  # what accel launch would pass on
    info = json.loads(accel_env("--json", PYTHONPATH=str(site), ACCELERATE_CORE_DEVICE="example",
                                ACCELERATE_CORE_USE_CPU="1"))  # fmt: skip
    assert "cpu=True contradicts the selected device 'example'" in info["selection"]["error"]


LAUNCHED_SCRIPT = """
import json
from pathlib import Path

import torch
import torch.distributed as dist

from accelerate_core import Accelerator, set_seed
from accelerate_example_device.generator import rand

set_seed(0)  # before the Accelerator: the device generator is seeded when the device is set up
accelerator = Accelerator()
model = torch.nn.Linear(4, 1)
model, optimizer = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1))
inputs = torch.full((2, 4), float(accelerator.process_index + 1))  # different on each rank
accelerator.backward(model(inputs).sum())
optimizer.step()
weights = [None] * accelerator.num_processes
dist.all_gather_object(weights, accelerator.unwrap_model(model).weight.detach())
Path(f"result-{accelerator.process_index}.json").write_text(json.dumps({
    "rank": accelerator.process_index,
    "device": accelerator.state.device_name,
    "process_group": dist.get_backend(),
    "backend": accelerator.backend,
    "wrapped": type(model).__name__,
    "same_weights": all(torch.equal(w, weights[0]) for w in weights),
    "draws": rand(3).tolist(),
}))  # one file per rank: the ranks' printed lines may interleave
"""


@pytest.mark.multiprocess
def test_accel_launch_device_reaches_every_rank(site, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(LAUNCHED_SCRIPT)
    trace = tmp_path / "calls.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "accelerate_core", "launch", "--num-processes", "2", "--device",
         "example", str(script)],
        env=clean_env(PYTHONPATH=str(site), **{TRACE_ENV: str(trace)}), capture_output=True,
        text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = [json.loads((tmp_path / f"result-{rank}.json").read_text()) for rank in (0, 1)]
    seeded = torch.rand(3, generator=torch.Generator().manual_seed(0)).tolist()
    assert results == [
        {"rank": rank, "device": "example", "process_group": "gloo", "backend": "ddp",
         "wrapped": "DistributedDataParallel", "same_weights": True, "draws": seeded}
        for rank in (0, 1)
    ]  # fmt: skip
    calls = [json.loads(line) for line in trace.read_text().splitlines()]
    assert sorted(c["local_rank"] for c in calls if c["hook"] == "setup_device") == ["0", "1"]
    assert sorted(c["rank"] for c in calls if c["hook"] == "seed_device") == ["0", "1"]


# --------------------------------------------------------------------------- across devices


def _small_run(device: str | None, seed: int, tmp_path: Path) -> tuple[Any, Any]:
    """An Accelerator on ``device`` (``None``: the core's cpu) with a prepared model and
    optimizer, seeded with ``seed``."""
    from accelerate_core import Accelerator, PartialState, set_seed

    reset_state()
    if device is not None:
        PartialState(device=device)
    accelerator = Accelerator(cpu=device is None, project_dir=str(tmp_path))
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 2)
    model, optimizer = accelerator.prepare(model, torch.optim.AdamW(model.parameters()))
    accelerator.backward(model(torch.ones(3, 4)).sum())
    optimizer.step()
    set_seed(seed)
    return accelerator, model


def test_a_checkpoint_from_the_example_device_loads_on_cpu_and_says_what_it_left(
    importable, tmp_path
):
    from accelerate_core.checkpoint import CheckpointDeviceWarning
    from accelerate_core.checkpoint_io import read_manifest

    accelerator, model = _small_run("example", 5, tmp_path)
    checkpoint = accelerator.save_state(str(tmp_path / "saved-on-example"))
    assert read_manifest(Path(checkpoint))["device"] == {"name": "example", "type": "cpu"}
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    cpu_stream = torch.rand(3)  # what the CPU generator draws next, after the save

    accelerator, model = _small_run(None, 6, tmp_path)
    assert accelerator.state.device_name == "cpu"
    with pytest.warns(CheckpointDeviceWarning) as caught:
        accelerator.load_state(str(checkpoint))
    assert [str(w.message) for w in caught] == [
        f"{checkpoint} was saved on device 'example' and this run uses device 'cpu': weights, "
        "optimizer and the Python, NumPy and torch CPU random states were restored; the RNG "
        "state of device 'example' does not apply here and was not restored"
    ]
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.rand(3), cpu_stream)
    assert "set_device_rng_state" not in hooks_called(importable)


def test_a_cpu_checkpoint_loads_on_the_example_device_and_leaves_its_generator(
    importable, tmp_path
):
    from accelerate_example_device.generator import rand

    from accelerate_core.checkpoint import CheckpointDeviceWarning

    accelerator, model = _small_run(None, 5, tmp_path)
    checkpoint = accelerator.save_state(str(tmp_path / "saved-on-cpu"))
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    cpu_stream = torch.rand(3)

    accelerator, model = _small_run("example", 11, tmp_path)  # set_seed(11) seeds the device
    with pytest.warns(CheckpointDeviceWarning) as caught:
        accelerator.load_state(str(checkpoint))
    assert [str(w.message) for w in caught] == [
        f"{checkpoint} was saved on device 'cpu' and this run uses device 'example': weights, "
        "optimizer and the Python, NumPy and torch CPU random states were restored; the "
        "generator of device 'example' keeps its current state (call set_seed after load_state "
        "for reproducible draws)"
    ]
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.rand(3), cpu_stream)
    assert torch.equal(rand(3), torch.rand(3, generator=torch.Generator().manual_seed(11)))
    assert "set_device_rng_state" not in hooks_called(importable)
