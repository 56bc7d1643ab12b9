"""A device selected by name: the launch option and its sources, the seeding hook, the restore
rule of checkpoints and the name in memory metadata, with a device plugin registered in this
process (the installed example device is tested in plugins/accelerate-example-device)."""

from __future__ import annotations

import io

import pytest
import torch
import yaml

from accelerate_core import (
    Accelerator,
    CheckpointError,
    ConfigurationError,
    DeviceSpec,
    MemoryTracker,
    PartialState,
    hookimpl,
    set_seed,
)
from accelerate_core.cli.main import main
from accelerate_core.launch_settings import resolve_launch_config
from accelerate_core.plugins import collect_launch_options, get_plugin_manager
from accelerate_core.state import reset_state


@pytest.fixture(autouse=True)
def private_home(tmp_path, monkeypatch):
    """Never read the real ~/.cache: the default config lives in the test's tmp dir."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


class VendorDevice:
    """A device with a generator of its own, as a vendor runtime has one."""

    def __init__(self, restores: bool = True) -> None:
        self.generator = torch.Generator()
        self.restores = restores
        self.seeds: list[int] = []

    @hookimpl
    def accelerate_core_devices(self):
        return [
            DeviceSpec("vendor", device_type="cpu", precisions=frozenset({"bf16"})),
            DeviceSpec("vendor-low-power", device_type="cpu"),  # the same torch type
        ]

    @hookimpl
    def accelerate_core_seed_device(self, device, seed):
        self.seeds.append(seed)
        self.generator.manual_seed(seed)
        return True

    @hookimpl
    def accelerate_core_device_rng_state(self, device):
        return {"generator": self.generator.get_state()}

    @hookimpl
    def accelerate_core_set_device_rng_state(self, device, rng_state):
        if self.restores:
            self.generator.set_state(rng_state["generator"])
        return self.restores

    @hookimpl
    def accelerate_core_device_memory_stats(self, device):
        return {"allocated": 1, "reserved": 2, "max_allocated": 3}


@pytest.fixture
def vendor() -> VendorDevice:
    plugin = VendorDevice()
    get_plugin_manager().register(plugin, "accelerate-vendor 1.0")
    return plugin


# --------------------------------------------------------------------------- launch


def test_the_device_comes_from_the_command_line_then_the_shell_then_the_config_file(tmp_path):
    options = collect_launch_options()
    config_file = tmp_path / "cfg.yaml"
    config_file.write_text("device: from-file\n")
    shell = {"ACCELERATE_CORE_DEVICE": "from-shell"}

    def resolved(command_line, path, environ):
        config = resolve_launch_config(command_line, path, options, environ=environ)
        return config.device, config.sources["device"], config.environment()

    device, source, env = resolved({"device": "from-cli"}, config_file, shell)
    assert (device, source) == ("from-cli", "command line")
    assert env["ACCELERATE_CORE_DEVICE"] == "from-cli"
    assert resolved({}, config_file, shell)[:2] == (
        "from-shell", "environment ACCELERATE_CORE_DEVICE"
    )  # fmt: skip
    assert resolved({}, config_file, {})[:2] == ("from-file", f"config file {config_file}")
    device, source, env = resolved({}, None, {"ACCELERATE_CORE_DEVICE": " "})
    assert (device, source) == (None, "default")
    assert "ACCELERATE_CORE_DEVICE" not in env
    with pytest.raises(ConfigurationError, match="is empty; name a device"):
        resolve_launch_config({"device": ""}, None, options, environ={})


@pytest.mark.parametrize(
    ("command_line", "config", "shell", "message"),
    [
        ({"cpu": True, "device": "vendor"}, "", {},
         "--cpu contradicts --device 'vendor' (the CPU is the device 'cpu')"),
        ({"device": "vendor"}, "cpu: true\n", {},
         "cpu (config file {path}) contradicts --device 'vendor'"),
        ({"cpu": True}, "", {"ACCELERATE_CORE_DEVICE": "vendor"},
         "--cpu contradicts device (environment ACCELERATE_CORE_DEVICE) 'vendor'"),
        # HF Accelerate's config keys meaning the CPU reach the same check once translated
        ({"device": "vendor"}, "use_cpu: true\n", {},
         "cpu (config file {path}) contradicts --device 'vendor'"),
        ({"device": "vendor"}, "distributed_type: MULTI_CPU\nnum_processes: 2\n", {},
         "cpu (config file {path}) contradicts --device 'vendor'"),
    ],
)  # fmt: skip
def test_cpu_with_another_device_is_refused_whatever_the_sources(
    tmp_path, command_line, config, shell, message
):
    path = tmp_path / "cfg.yaml"
    path.write_text(config)
    with pytest.raises(ConfigurationError) as info:
        resolve_launch_config(command_line, path, collect_launch_options(), environ=shell)
    assert message.format(path=path) in str(info.value)
    assert resolve_launch_config(
        {"cpu": True, "device": "cpu"}, None, collect_launch_options(), environ={}
    )


def test_the_launched_device_reaches_the_process_state(vendor, monkeypatch):
    config = resolve_launch_config({"device": "vendor"}, None, collect_launch_options(), environ={})
    for name, value in config.environment().items():
        monkeypatch.setenv(name, value)
    state = PartialState()
    assert (state.device_name, state.device, state.device_owner) == (
        "vendor", torch.device("cpu"), vendor
    )  # fmt: skip
    assert "device=vendor (cpu)" in repr(state)


def _device_name() -> str:
    return PartialState().device_name


def test_notebook_launcher_keeps_the_device_exported_in_the_kernel(vendor, monkeypatch):
    from accelerate_core import notebook_launcher

    monkeypatch.setenv("ACCELERATE_CORE_DEVICE", "vendor")
    assert notebook_launcher(_device_name, num_processes=1) == ["vendor"]


def test_the_questionnaire_asks_for_a_device_when_a_plugin_offers_one(
    vendor, tmp_path, monkeypatch
):
    answers = ["1", "no", "vendor", "1", "auto", "no", "1", "0"]
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(f"{a}\n" for a in answers)))
    monkeypatch.setattr("accelerate_core.cli.config.default_num_processes", lambda cpu: 1)
    path = tmp_path / "cfg.yaml"
    assert main(["config", "--config-file", str(path)]) == 0
    assert yaml.safe_load(path.read_text())["device"] == "vendor"


def test_one_module_may_register_a_device_and_a_backend(make_distribution):
    make_distribution(
        "accelerate-both",
        {"both_plugin": """
            from accelerate_core import BackendSpec, DeviceSpec, hookimpl

            @hookimpl
            def accelerate_core_backends():
                return [BackendSpec("bothbackend", distributed=False)]

            @hookimpl
            def accelerate_core_devices():
                return [DeviceSpec("bothdevice", device_type="cpu")]
        """},
        {"both": "both_plugin"},
        requires=("accelerate-core>=0.1,<0.2",),
    )  # fmt: skip
    registry = get_plugin_manager().registry()
    assert registry["backend"]["bothbackend"].distribution == "accelerate-both 1.0"
    assert registry["device"]["bothdevice"].plugin is registry["backend"]["bothbackend"].plugin
    PartialState(device="bothdevice", backend="bothbackend")
    accelerator = Accelerator()
    assert (accelerator.backend, accelerator.state.device_name) == ("bothbackend", "bothdevice")


# --------------------------------------------------------------------------- seeding


def test_set_seed_asks_the_device_now_or_once_it_is_set_up(vendor):
    set_seed(3)  # no process state yet
    assert vendor.seeds == []
    PartialState(device="vendor")
    assert vendor.seeds == [3]
    expected = torch.rand(2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.rand(2, generator=vendor.generator), expected)
    set_seed(4)
    assert vendor.seeds == [3, 4]
    reset_state()  # forgets a seed that was never applied
    set_seed(5)
    reset_state()
    PartialState(device="vendor")
    assert vendor.seeds == [3, 4]


def test_set_seed_on_the_builtin_cpu_asks_the_default_and_changes_nothing_else():
    accelerator = Accelerator(cpu=True)
    set_seed(9)
    first = torch.rand(3)
    set_seed(9)
    assert torch.equal(torch.rand(3), first)
    assert accelerator.state.device_name == "cpu"


# --------------------------------------------------------------------------- checkpoints


def test_a_device_that_cannot_restore_its_generator_stops_load_state_before_any_change(
    tmp_path,
):
    plugin = VendorDevice(restores=False)
    get_plugin_manager().register(plugin, "accelerate-vendor 1.0")
    PartialState(device="vendor")
    accelerator = Accelerator()
    model = accelerator.prepare(torch.nn.Linear(3, 1))
    checkpoint = accelerator.save_state(str(tmp_path / "ckpt"))
    with torch.no_grad():
        model.weight.fill_(7.0)
    python_state = torch.get_rng_state()
    with pytest.raises(CheckpointError) as info:
        accelerator.load_state(checkpoint)
    assert str(info.value) == (
        f"device 'vendor' could not restore the RNG state saved in {checkpoint} "
        "(accelerate_core_set_device_rng_state answered False); nothing was restored. Update "
        "the device plugin, or load the weights alone"
    )
    assert torch.equal(model.weight, torch.full_like(model.weight, 7.0))
    assert torch.equal(torch.get_rng_state(), python_state)


class PlainCpuDevice:
    """A device on the CPU with no RNG hooks: it draws from torch's CPU generator."""

    @hookimpl
    def accelerate_core_devices(self):
        return [DeviceSpec("plaincpu", device_type="cpu")]


@pytest.mark.parametrize(("saved_on", "loaded_on"), [("plaincpu", None), (None, "plaincpu")])
def test_a_device_that_draws_from_the_cpu_generator_loses_nothing_across_devices(
    tmp_path, saved_on, loaded_on
):
    import warnings

    get_plugin_manager().register(PlainCpuDevice(), "accelerate-plaincpu 1.0")

    def run(device: str | None) -> Accelerator:
        reset_state()
        if device is not None:
            PartialState(device=device)
        accelerator = Accelerator(cpu=device is None)
        accelerator.prepare(torch.nn.Linear(3, 1))
        return accelerator

    checkpoint = run(saved_on).save_state(str(tmp_path / "ckpt"))
    expected = torch.rand(4)
    accelerator = run(loaded_on)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about: the CPU generator is restored
        accelerator.load_state(checkpoint)
    assert torch.equal(torch.rand(4), expected)


def test_the_manifest_and_rng_files_name_the_device(vendor, tmp_path):
    from pathlib import Path

    from accelerate_core.checkpoint_io import read_manifest, read_object

    PartialState(device="vendor")
    accelerator = Accelerator()
    accelerator.prepare(torch.nn.Linear(3, 1))
    checkpoint = Path(accelerator.save_state(str(tmp_path / "ckpt")))
    assert read_manifest(checkpoint)["device"] == {"name": "vendor", "type": "cpu"}
    rng = read_object(checkpoint / "random_states_0.bin")
    assert rng["device_name"] == "vendor"
    assert torch.equal(rng["device"]["generator"], vendor.generator.get_state())


# --------------------------------------------------------------------------- memory metadata


def test_memory_metadata_names_the_selected_device(vendor, tmp_path):
    PartialState(device="vendor-low-power")  # not the first name its plugin registers
    with MemoryTracker(tmp_path / "from-state", 0.05) as tracker:
        pass
    meta = tracker.to_dict()["metadata"]
    assert (meta["device"], meta["device_name"]) == ("cpu", "vendor-low-power")
    assert "device=vendor-low-power (cpu)" in repr(tracker)
    explicit = MemoryTracker(
        tmp_path / "explicit", 0.05, rank=0, world_size=1, device="cpu", device_owner=vendor
    )
    assert explicit.device_name == "vendor"
    builtin = MemoryTracker(tmp_path / "builtin", 0.05, rank=0, world_size=1, device="cpu")
    assert builtin.device_name == "cpu"
