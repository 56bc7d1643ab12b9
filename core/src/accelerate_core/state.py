"""Process state: who this process is (rank, world, device) and what it runs (backend, precision).

Created once per process and shared by every ``PartialState()``/``AcceleratorState()`` (the Borg
pattern Hugging Face Accelerate uses), so any module can ask for it cheaply. Tests reset it with
``reset_state()``. The environment is detected by plugins; when it says there are several
processes the state never falls back to one.
"""

from __future__ import annotations

import atexit
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from datetime import timedelta
from functools import wraps
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch

from . import hang_watch
from .collectives import run_collective
from .distributed_type import DistributedType, distributed_type_for
from .errors import ConfigurationError, EnvironmentDetectionError, PluginNotInstalledError
from .gradient_state import GradientState  # noqa: F401 - HF imports it from accelerate.state
from .launch_options import SETTING_VARIABLES, canonical_precision
from .plugins import KNOWN_DISTRIBUTIONS, Registered, get_plugin_manager
from .process_settings import check_world_size, launch_setting
from .specs import BackendSpec, DeviceSpec, EnvironmentInfo, PrecisionSpec

SINGLE_PROCESS_BACKEND = "none"
DEFAULT_DISTRIBUTED_BACKEND = "ddp"
DEFAULT_PROCESS_GROUP_TIMEOUT = timedelta(minutes=10)
DEVICE_ENV = SETTING_VARIABLES["device"]  # ACCELERATE_CORE_DEVICE, set by accel launch --device
CPU_DEVICE = "cpu"
# Seconds the exit hook lets collective worker threads finish (``teardown_process_group``).
GIL_RELEASE_AT_EXIT = 0.05

F = TypeVar("F", bound=Callable[..., Any])


def detect_environment(environ: Mapping[str, str] | None = None) -> EnvironmentInfo:
    """Ask every environment detector; the answer with the highest priority wins."""
    environ = dict(os.environ if environ is None else environ)
    answers: list[EnvironmentInfo] = [
        a
        for a in get_plugin_manager().call_all(
            "accelerate_core_detect_environment", environ=environ
        )
        if a is not None
    ]
    if not answers:
        raise EnvironmentDetectionError("no environment detector answered; is the core installed?")
    top = max(a.priority for a in answers)
    best = [a for a in answers if a.priority == top]
    if len({(a.rank, a.world_size, a.local_rank) for a in best}) > 1:
        described = "; ".join(f"{a.source}: rank {a.rank} of {a.world_size}" for a in best)
        raise EnvironmentDetectionError(f"launch environments disagree ({described})")
    return best[0]


def choose_named_device(name: str, cpu: bool) -> Registered:
    """The device record selected by name (``--device``, ``ACCELERATE_CORE_DEVICE``,
    ``PartialState(device=...)``), checked against cpu.

    ``cpu=True`` means the core's own ``cpu`` device: any other name contradicts it, even a
    plugin device that computes on the CPU (its hooks would still run).
    """
    chosen = get_plugin_manager().select("device", name)
    if cpu and name != CPU_DEVICE:
        raise ConfigurationError(
            f"cpu=True contradicts the selected device '{name}' (the CPU is the device "
            f"'{CPU_DEVICE}'); drop cpu=True (--cpu) to train on '{name}', or select no device "
            f"(--device / {DEVICE_ENV} / PartialState(device=...))"
        )
    return chosen


def describe_device(name: str, device: torch.device, quote: str = "") -> str:
    """A device as messages show it: its registered name, with the torch device when they
    differ: ``example (cpu)``, ``cuda:0``; with ``quote="'"``, ``'example' (cpu)``."""
    if name == device.type:
        return f"{quote}{device}{quote}"
    return f"{quote}{name}{quote} ({device})"


def choose_device(cpu: bool, environment: EnvironmentInfo) -> torch.device:
    """CPU when asked or when no accelerator is present, else the accelerator of the local rank."""
    if cpu or not torch.accelerator.is_available():
        return torch.device("cpu")
    accelerator = torch.accelerator.current_accelerator()
    assert accelerator is not None  # is_available() said there is one
    count = torch.accelerator.device_count()
    if environment.local_rank >= count:
        raise EnvironmentDetectionError(
            f"local rank {environment.local_rank} has no {accelerator.type} device: this machine "
            f"has {count}; start at most {count} processes per machine, or pass cpu=True"
        )
    return torch.device(accelerator.type, environment.local_rank)


def choose_backend(name: str | None, environment: EnvironmentInfo) -> Registered:
    """Select the backend once, by name or by the documented default, and check it fits."""
    manager = get_plugin_manager()
    world = environment.world_size
    if name is None:
        if world == 1:
            name = SINGLE_PROCESS_BACKEND
        else:
            name = DEFAULT_DISTRIBUTED_BACKEND
            if name not in manager.registry()["backend"]:
                raise PluginNotInstalledError(
                    f"the environment ({environment.source}) says this run has {world} processes "
                    "but no distributed backend is installed; pip install "
                    f"{KNOWN_DISTRIBUTIONS[name]} (or select an installed one with "
                    "Accelerator(backend=...))"
                )
    chosen = manager.select("backend", name)
    spec: BackendSpec = chosen.spec
    if world > 1 and not spec.distributed:
        raise ConfigurationError(
            f"backend '{spec.name}' runs a single process but the environment "
            f"({environment.source}) has {world} processes; select a distributed backend "
            f"(pip install {KNOWN_DISTRIBUTIONS[DEFAULT_DISTRIBUTED_BACKEND]})"
        )
    if world < spec.min_processes:
        raise ConfigurationError(
            f"backend '{spec.name}' needs at least {spec.min_processes} processes but this run "
            f"has {world}; launch it with `accel launch --num-processes {spec.min_processes} ...`"
        )
    return chosen


class PartialState:
    """Rank, world size, local rank, device and backend of this process (created once).

    Args:
        cpu: train on the CPU even when an accelerator is present.
        backend: name of an installed backend; default ``none`` for one process and ``ddp``
            for several.
        timeout: process-group timeout when the run has several processes.
        device: the name of a registered device to use instead of the one torch reports
            (``accel launch --device``, the config key ``device``, ``ACCELERATE_CORE_DEVICE``);
            for devices a plugin provides. ``device_spec.name`` is the selected device's name.
    """

    _shared_state: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        cpu: bool | None = None,
        backend: str | None = None,
        timeout: timedelta | None = None,
        device: str | None = None,
    ) -> None:
        self.__dict__ = self._shared_state
        # Explicit arguments > accel launch (environment) > defaults; see process_settings.py.
        cpu = bool(launch_setting("cpu", cpu))
        backend = launch_setting("backend", backend) or None
        if self.__dict__.get("initialized"):
            self._check_matches(cpu, backend, device)
            return
        manager = get_plugin_manager()
        environment = detect_environment()
        check_world_size(environment.world_size, environment.source, environment.rank)
        chosen = choose_backend(backend, environment)
        device_name = launch_setting("device", device or None) or None
        registered_device: Registered | None
        if device_name is not None:
            registered_device = choose_named_device(device_name, cpu)
            torch_type = registered_device.spec.torch_type
            if torch_type == "cpu":
                torch_device = torch.device(torch_type)
            else:
                torch_device = torch.device(torch_type, environment.local_rank)
        else:
            torch_device = choose_device(cpu, environment)
            registered_device = manager.registry()["device"].get(torch_device.type)
        device_owner = registered_device.plugin if registered_device else manager.defaults
        device_spec = registered_device.spec if registered_device else DeviceSpec(torch_device.type)
        manager.call_owner(
            "accelerate_core_setup_device",
            device_owner,
            device=torch_device,
            environment=environment,
        )
        if _PENDING_DEVICE_SEED:  # set_seed ran before the process state existed
            _seed(device_owner, torch_device, _PENDING_DEVICE_SEED.pop())
        self.environment = environment
        self.device = torch_device
        self.device_spec = device_spec
        self.device_owner = device_owner
        self.backend = chosen.spec.name
        self.backend_spec = chosen.spec
        self.backend_owner = chosen.plugin
        self.cpu = cpu
        self.timeout = timeout or DEFAULT_PROCESS_GROUP_TIMEOUT
        self.initialized = True
        if environment.world_size > 1 and chosen.spec.distributed:
            self._init_process_group()

    def _check_matches(self, cpu: bool, backend: str | None, device: str | None) -> None:
        if device and device != self.device_spec.name:
            raise ConfigurationError(
                f"the process state was already created on device '{self.device_spec.name}', now "
                f"device '{device}' is asked for; select the device in the first "
                "PartialState/Accelerator of the process (or with accel launch --device)"
            )
        if backend is not None and backend != self.backend:
            raise ConfigurationError(
                f"the process state was already created with backend '{self.backend}', now "
                f"'{backend}' is asked for; create one Accelerator per process with one backend"
            )
        if cpu and self.device_name != CPU_DEVICE:  # a plugin device on the CPU included
            shown = describe_device(self.device_name, self.device, quote="'")
            raise ConfigurationError(
                f"the process state was already created on device {shown}; cpu=True must be "
                "passed to the first Accelerator/PartialState of the process"
            )

    def _init_process_group(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            return
        env = self.environment
        for var, value in (("MASTER_ADDR", env.master_addr), ("MASTER_PORT", env.master_port)):
            if value is None and var not in os.environ:
                raise EnvironmentDetectionError(
                    f"{env.source} started {env.world_size} processes but {var} is not set; "
                    "set MASTER_ADDR/MASTER_PORT or start with torchrun / `accel launch`"
                )
            if value is not None:
                os.environ.setdefault(var, str(value))
        hang_watch.configure(self.timeout)
        dist.init_process_group(
            backend=self.device_spec.dist_backend,
            rank=env.rank,
            world_size=env.world_size,
            timeout=self.timeout,
            store=attempt_store(env.world_size, self.timeout),
        )
        atexit.register(teardown_process_group)

    # ------------------------------------------------------------------ identity

    @property
    def process_index(self) -> int:
        return self.environment.rank

    @property
    def num_processes(self) -> int:
        return self.environment.world_size

    @property
    def local_process_index(self) -> int:
        return self.environment.local_rank

    @property
    def device_name(self) -> str:
        """The selected device's registered name (``example``, ``cuda``), in every message."""
        return self.device_spec.name

    @property
    def use_distributed(self) -> bool:
        return self.num_processes > 1

    @property
    def distributed_type(self) -> DistributedType:
        """HF's ``DistributedType`` of this run, from the selected backend's record."""
        spec = self.backend_spec
        value = distributed_type_for(
            spec.distributed_type, spec.distributed, self.num_processes, self.device.type
        )
        return DistributedType(value)

    @property
    def is_main_process(self) -> bool:
        return self.process_index == 0

    @property
    def is_local_main_process(self) -> bool:
        return self.local_process_index == 0

    @property
    def is_last_process(self) -> bool:
        return self.process_index == self.num_processes - 1

    # ------------------------------------------------------------------ coordination

    def wait_for_everyone(self) -> None:
        """Barrier across all processes (nothing to wait for with one)."""
        if self.num_processes > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                run_collective("wait_for_everyone", dist.barrier)

    @contextmanager
    def _goes_first(self, first: bool) -> Iterator[None]:
        if not first:
            self.wait_for_everyone()
        yield
        if first:
            self.wait_for_everyone()

    def main_process_first(self) -> AbstractContextManager[None]:
        """The main process runs the block first (say, to download), then the others."""
        return self._goes_first(self.is_main_process)

    def local_main_process_first(self) -> AbstractContextManager[None]:
        """The main process of each machine runs the block first, then the others."""
        return self._goes_first(self.is_local_main_process)

    def _only_on(self, predicate: str, function: F) -> F:
        @wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if getattr(self, predicate):
                return function(*args, **kwargs)
            return None

        return wrapper  # type: ignore[return-value]

    def on_main_process(self, function: F) -> F:
        """Decorator: run ``function`` on the main process only (returns None elsewhere)."""
        return self._only_on("is_main_process", function)

    def on_local_main_process(self, function: F) -> F:
        """Decorator: run ``function`` on each machine's main process only."""
        return self._only_on("is_local_main_process", function)

    def print(self, *args: Any, **kwargs: Any) -> None:
        """``print`` on the local main process only."""
        if self.is_local_main_process:
            print(*args, **kwargs)

    @contextmanager
    def split_between_processes(self, inputs: Any, apply_padding: bool = False) -> Iterator[Any]:
        """Yield this process's contiguous share of ``inputs`` (list, tuple, dict, tensor).

        Shares differ by at most one item, the first processes taking the extra ones. With
        ``apply_padding`` every share has the same length, padded by repeating its last item.
        """
        yield split_for_process(inputs, self.process_index, self.num_processes, apply_padding)

    def __repr__(self) -> str:
        if not self.__dict__.get("initialized"):
            return "PartialState(uninitialised)"
        return (
            f"PartialState(backend={self.backend!r}, process {self.process_index} of "
            f"{self.num_processes}, local {self.local_process_index}, "
            f"device={describe_device(self.device_name, self.device)}, "
            f"environment={self.environment.source!r})"
        )

    @classmethod
    def _reset_state(cls) -> None:
        cls._shared_state.clear()


def split_for_process(inputs: Any, index: int, count: int, apply_padding: bool = False) -> Any:
    """The ``index``-th of ``count`` contiguous shares of ``inputs`` (split_between_processes)."""
    if count == 1:
        return inputs
    if isinstance(inputs, Mapping):
        lengths = {len(v) for v in inputs.values()}
        if len(lengths) > 1:
            raise ConfigurationError(
                "split_between_processes needs every value of the dict to have the same length, "
                f"got lengths {sorted(lengths)}"
            )
        mapping_type: Any = type(inputs)  # dict, OrderedDict, ...: rebuilt as the same type
        return mapping_type(
            {k: split_for_process(v, index, count, apply_padding) for k, v in inputs.items()}
        )
    length = len(inputs)
    per, extra = divmod(length, count)
    start = index * per + min(index, extra)
    end = start + per + (1 if index < extra else 0)
    share = inputs[start:end]
    if apply_padding and extra and index >= extra and length:
        last = share[-1:] if len(share) else inputs[-1:]  # as HF: repeat the share's last item
        share = torch.cat([share, last]) if isinstance(share, torch.Tensor) else share + last
    return share


class AcceleratorState:
    """The process state plus the selected mixed precision (shared like ``PartialState``)."""

    _shared_state: ClassVar[dict[str, Any]] = {}
    partial: PartialState
    mixed_precision: str
    precision_spec: PrecisionSpec
    precision_owner: object
    initialized: bool
    if TYPE_CHECKING:  # read from PartialState through __getattr__; declared for type checkers
        environment: EnvironmentInfo
        device: torch.device
        device_spec: DeviceSpec
        device_owner: object
        backend: str
        backend_spec: BackendSpec
        backend_owner: object
        cpu: bool
        timeout: timedelta
        process_index: int
        num_processes: int
        local_process_index: int
        use_distributed: bool
        is_main_process: bool
        is_local_main_process: bool
        is_last_process: bool

        def wait_for_everyone(self) -> None: ...
        def main_process_first(self) -> AbstractContextManager[None]: ...
        def local_main_process_first(self) -> AbstractContextManager[None]: ...
        def on_main_process(self, function: F) -> F: ...
        def on_local_main_process(self, function: F) -> F: ...
        def split_between_processes(
            self, inputs: Any, apply_padding: bool = False
        ) -> AbstractContextManager[Any]: ...
        def print(self, *args: Any, **kwargs: Any) -> None: ...

    def __init__(
        self,
        mixed_precision: str | None = None,
        cpu: bool | None = None,
        backend: str | None = None,
        timeout: timedelta | None = None,
    ) -> None:
        self.__dict__ = self._shared_state
        requested = launch_setting("mixed_precision", mixed_precision or None)
        if self.__dict__.get("initialized"):
            PartialState(cpu=cpu, backend=backend)
            if requested is not None and canonical_precision(requested) != self.mixed_precision:
                raise ConfigurationError(
                    f"the process state already uses mixed_precision='{self.mixed_precision}', "
                    f"now '{requested}' is asked for; create one Accelerator per process"
                )
            return
        chosen = select_precision(requested or "no")
        name = chosen.spec.name
        partial = PartialState(cpu=cpu, backend=backend, timeout=timeout)
        needed = chosen.spec.requires_device_support
        if needed is not None and needed not in partial.device_spec.precisions:
            supported = ", ".join(sorted(partial.device_spec.precisions)) or "none"
            raise ConfigurationError(
                f"mixed_precision='{name}' is not supported on device "
                f"{describe_device(partial.device_name, partial.device, quote=chr(39))} "
                f"(supported there: {supported}); choose another mixed_precision, or run on a "
                f"device that supports {needed}"
            )
        self.partial = partial
        self.mixed_precision = name
        self.precision_spec = chosen.spec
        self.precision_owner = chosen.plugin
        self.initialized = True

    @property
    def deepspeed_plugin(self) -> Any:
        """The ``DeepSpeedPlugin`` of this run (HF's attribute); ``None`` without DeepSpeed."""
        return self.__dict__.get("_deepspeed_plugin")

    @deepspeed_plugin.setter
    def deepspeed_plugin(self, plugin: Any) -> None:
        self.__dict__["_deepspeed_plugin"] = plugin

    def __getattr__(self, name: str) -> Any:
        # Everything about the process is PartialState's; delegate so both read the same.
        if name.startswith("__") or "partial" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["partial"], name)

    @classmethod
    def _reset_state(cls) -> None:
        cls._shared_state.clear()


def select_precision(name: Any) -> Registered:
    """The registered precision called ``name`` (case-insensitive), or an error listing them."""
    manager = get_plugin_manager()
    name = canonical_precision(name)
    precisions = manager.registry()["precision"]
    if name in precisions:
        return precisions[name]
    if name in KNOWN_DISTRIBUTIONS or any(r.name == name for r in manager.entry_points):
        return manager.select("precision", name)  # raises, naming the pip install or load error
    hint = "" if "fp8" in precisions else f" (fp8: pip install {KNOWN_DISTRIBUTIONS['fp8']})"
    raise ConfigurationError(
        f"unknown mixed_precision '{name}'; valid values: {', '.join(sorted(precisions))}{hint}"
    )


def attempt_store(world_size: int, timeout: timedelta) -> Any:
    """Under torchrun's agent store, a view of it private to this restart attempt; else None.

    torchrun's workers reach the agent's key-value store, which outlives a restart, under no
    prefix of their attempt: the ranks of attempt 2 can read the gloo addresses the ranks of
    attempt 1 published, connect to processes that are gone, and fail ("Gloo connectFullMesh
    failed ... Connection refused"). ``TORCHELASTIC_RESTART_COUNT`` keeps attempts apart.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    # torch.distributed re-exports these without declaring it (strict mypy): their home module
    from torch._C._distributed_c10d import PrefixStore, TCPStore

    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    store = TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
        is_master=False, timeout=timeout,
    )  # fmt: skip
    return PrefixStore(f"accelerate_core/attempt_{attempt}", store)


def teardown_process_group() -> None:
    """Tear down the process group this library created (at exit, if the script did not).

    First the GIL is let go for a moment: a gloo worker thread that just finished a collective
    drops it only once it holds the GIL (works made during backward carry a Python object), and
    a thread that asks for the GIL after the interpreter began to exit aborts the process
    ("terminate called without an active exception", SIGABRT, in about 1 of 10 two-process runs
    that exit right after a collective).
    """
    import torch.distributed as dist

    time.sleep(GIL_RELEASE_AT_EXIT)  # also when the script destroyed the group itself
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def seed_device(seed: int) -> None:
    """Seed the device's own generator through its owner's ``accelerate_core_seed_device``
    (``set_seed`` calls this). Before the process state exists the seed is kept and applied when
    the device is set up, as torch queues a seed for a device it has not initialised yet."""
    shared = PartialState._shared_state
    if not shared.get("initialized"):
        _PENDING_DEVICE_SEED[:] = [seed]
        return
    _seed(shared["device_owner"], shared["device"], seed)


_PENDING_DEVICE_SEED: list[int] = []


def _seed(owner: object, device: torch.device, seed: int) -> None:
    get_plugin_manager().call_owner("accelerate_core_seed_device", owner, device=device, seed=seed)


def reset_state(destroy_process_group: bool = True) -> None:
    """Forget the process state (tests); optionally tear down the process group too."""
    if destroy_process_group:
        teardown_process_group()
    _PENDING_DEVICE_SEED.clear()
    AcceleratorState._reset_state()
    PartialState._reset_state()


__all__ = ["AcceleratorState", "PartialState"]
