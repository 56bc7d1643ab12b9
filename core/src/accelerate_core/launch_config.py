"""Launch configuration: config files, launch options, and how they reach the training processes.

One source of truth. ``accel launch`` resolves its settings (command line > config file > defaults)
and hands them to every process as ``ACCELERATE_CORE_*`` environment variables; ``PartialState``,
``AcceleratorState`` and ``Accelerator`` read them back through ``launch_setting`` and
``launch_plugin_options``. In a process the order is: explicit ``Accelerator(...)`` argument >
launch > config file > default. An explicit argument that contradicts an option given on the
``accel launch`` command line is a ``ConfigurationError`` naming both values; one that differs
from a config-file value simply wins (the file is a default, the script is specific).

Variables (all strings):

* ``ACCELERATE_CORE_BACKEND``, ``ACCELERATE_CORE_MIXED_PRECISION``, ``ACCELERATE_CORE_USE_CPU``,
  ``ACCELERATE_CORE_GRADIENT_ACCUMULATION_STEPS``: the settings of the same names.
* ``ACCELERATE_CORE_BACKEND_OPTIONS`` / ``ACCELERATE_CORE_PRECISION_OPTIONS``: JSON,
  ``{backend_or_precision_name: {key: value}}``; a process uses the entry of what it selected.
* ``ACCELERATE_CORE_NUM_PROCESSES``: the world size asked for; every rank checks the world it
  joined against it.
* ``ACCELERATE_CORE_LAUNCH_SOURCES``: JSON ``{setting: "command line" | "config file PATH"}``.
* ``ACCELERATE_CORE_CONFIG_FILE``: the config file ``accel`` reads when ``--config-file`` is not
  given (default ``$XDG_CACHE_HOME/accelerate_core/default_config.yaml``, ``XDG_CACHE_HOME``
  defaulting to ``~/.cache``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigurationError, EnvironmentDetectionError, PluginConflictError

BACKEND_ENV = "ACCELERATE_CORE_BACKEND"
MIXED_PRECISION_ENV = "ACCELERATE_CORE_MIXED_PRECISION"
USE_CPU_ENV = "ACCELERATE_CORE_USE_CPU"
GRADIENT_ACCUMULATION_STEPS_ENV = "ACCELERATE_CORE_GRADIENT_ACCUMULATION_STEPS"
BACKEND_OPTIONS_ENV = "ACCELERATE_CORE_BACKEND_OPTIONS"
PRECISION_OPTIONS_ENV = "ACCELERATE_CORE_PRECISION_OPTIONS"
NUM_PROCESSES_ENV = "ACCELERATE_CORE_NUM_PROCESSES"
LAUNCH_SOURCES_ENV = "ACCELERATE_CORE_LAUNCH_SOURCES"
CONFIG_FILE_ENV = "ACCELERATE_CORE_CONFIG_FILE"

# Every variable a launch owns: it sets those it resolved and clears the rest for its processes.
LAUNCH_ENV_VARS = (
    BACKEND_ENV,
    MIXED_PRECISION_ENV,
    USE_CPU_ENV,
    GRADIENT_ACCUMULATION_STEPS_ENV,
    BACKEND_OPTIONS_ENV,
    PRECISION_OPTIONS_ENV,
    NUM_PROCESSES_ENV,
    LAUNCH_SOURCES_ENV,
)
COMMAND_LINE = "command line"
NOTEBOOK_LAUNCHER = "notebook_launcher"
DEFAULT = "default"
# Sources an explicit Accelerator argument may not contradict (it may override the others).
STRICT_SOURCES = {COMMAND_LINE: "accel launch", NOTEBOOK_LAUNCHER: "notebook_launcher"}
OPTION_TYPES = ("bool", "int", "float", "str", "json")


@dataclass(frozen=True)
class LaunchOption:
    """One option of ``accel launch`` / ``accel config``, as a record (plugins return these).

    Attributes:
        name: the flag without dashes, dash-separated (``"ddp-find-unused-parameters"``). The
            command line accepts ``--name`` and ``--name_with_underscores``; the config-file key
            is the name with underscores. Plugin options should start with their backend's name.
        help: one line for ``--help`` and the ``accel config`` questionnaire.
        type: ``"bool"`` (a flag, with ``--no-NAME``), ``"int"``, ``"float"``, ``"str"`` or
            ``"json"`` (a JSON value on the command line, any YAML value in a config file).
        choices: the accepted values, when there is a fixed set.
        backend: for a plugin option, the backend whose ``backend_options`` receive the value;
            processes that selected another backend ignore it.
        precision: like ``backend``, for a precision's ``precision_options``.
        key: the key in those options; default the name without the ``backend-``/
            ``precision-`` prefix, with underscores (``find_unused_parameters``).
    """

    name: str
    help: str = ""
    type: str = "str"
    choices: tuple[Any, ...] | None = None
    backend: str | None = None
    precision: str | None = None
    key: str | None = None

    @property
    def dest(self) -> str:
        """The config-file key and argparse destination."""
        return self.name.replace("-", "_")

    @property
    def target(self) -> tuple[str, str] | None:
        """``("backend"|"precision", name)`` for a plugin option, ``None`` for a core one."""
        if self.backend is not None:
            return ("backend", self.backend)
        if self.precision is not None:
            return ("precision", self.precision)
        return None

    @property
    def option_key(self) -> str:
        if self.key is not None:
            return self.key
        target = self.target
        name = self.name
        if target is not None and name.startswith(target[1] + "-"):
            name = name[len(target[1]) + 1 :]
        return name.replace("-", "_")


CORE_OPTIONS: tuple[LaunchOption, ...] = (
    LaunchOption(
        "num-processes",
        "total number of processes over all machines (default: one per accelerator, else 1)",
        "int",
    ),
    LaunchOption("num-machines", "number of machines (default 1)", "int"),
    LaunchOption("machine-rank", "rank of this machine, 0 to num_machines-1 (default 0)", "int"),
    LaunchOption("main-process-ip", "address of the machine of rank 0 (several machines)", "str"),
    LaunchOption("main-process-port", "port on the machine of rank 0 (several machines)", "int"),
    LaunchOption("cpu", "train on the CPU even when an accelerator is present", "bool"),
    LaunchOption("mixed-precision", "no, fp16, bf16 or a plugin's (fp8)", "str"),
    LaunchOption("backend", "an installed backend (default: none for 1 process, ddp for more)"),
    LaunchOption("gradient-accumulation-steps", "micro-batches per optimizer step", "int"),
    LaunchOption("max-restarts", "restarts of the whole group after a failure (default 0)", "int"),
)
CORE_DEFAULTS: dict[str, Any] = {
    "num_machines": 1,
    "machine_rank": 0,
    "main_process_ip": None,
    "main_process_port": None,
    "cpu": False,
    "mixed_precision": None,
    "backend": None,
    "gradient_accumulation_steps": None,
    "max_restarts": 0,
}


# --------------------------------------------------------------------------- option records


def collect_launch_options(manager: Any = None) -> list[LaunchOption]:
    """The core's options followed by every installed plugin's, checked for clashes."""
    if manager is None:
        from .plugins import get_plugin_manager

        manager = get_plugin_manager()
    options = list(CORE_OPTIONS)
    owners = {o.dest: "accelerate-core" for o in CORE_OPTIONS}
    owners.update({"config_file": "accelerate-core", "dry_run": "accelerate-core"})
    hook = manager.pm.hook.accelerate_core_launch_options
    for impl in hook.get_hookimpls():
        dist = manager.distribution_of(impl.plugin)
        for option in impl.function() or ():
            if not isinstance(option, LaunchOption):
                raise PluginConflictError(
                    f"plugin {manager.pm.get_name(impl.plugin)!r} ({dist}) returned {option!r} "
                    "from accelerate_core_launch_options; expected LaunchOption records"
                )
            if option.type not in OPTION_TYPES or option.target is None:
                raise PluginConflictError(
                    f"launch option '--{option.name}' of {dist} needs a type among "
                    f"{', '.join(OPTION_TYPES)} and a backend= or precision= it applies to"
                )
            if option.dest in owners:
                raise PluginConflictError(
                    f"launch option '--{option.name}' is offered by both {owners[option.dest]} "
                    f"and {dist}; uninstall one of them"
                )
            owners[option.dest] = dist
            options.append(option)
    return options


def parse_bool(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on", "y"}:
        return True
    if text in {"0", "false", "no", "off", "n", ""}:
        return False
    raise ConfigurationError(f"{what}: expected true or false, got {value!r}")


def coerce(option: LaunchOption, value: Any, what: str) -> Any:
    """Check and convert a config-file (or questionnaire) value for ``option``."""
    if value is None:
        return None
    kind = option.type
    try:
        if kind == "bool":
            value = parse_bool(value, what)
        elif kind == "int":
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                raise ValueError
            value = int(value)
        elif kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise ValueError
            value = float(value)
        elif kind == "str":
            if isinstance(value, (dict, list, bool)):
                raise ValueError
            value = str(value)
        elif kind == "json" and isinstance(value, str):
            value = json.loads(value)
    except (ValueError, TypeError):
        raise ConfigurationError(f"{what}: expected a {kind} value, got {value!r}") from None
    if option.choices is not None and value not in option.choices:
        valid = ", ".join(str(c) for c in option.choices)
        raise ConfigurationError(f"{what}: {value!r} is not one of {valid}")
    return value


# --------------------------------------------------------------------------- config files


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where ``accel config`` writes and ``accel launch`` reads when no file is named."""
    environ = os.environ if environ is None else environ
    if environ.get(CONFIG_FILE_ENV):
        return Path(environ[CONFIG_FILE_ENV]).expanduser()
    cache = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "accelerate_core" / "default_config.yaml"


def config_file_to_read(
    explicit: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None
) -> Path | None:
    """The config file a launch reads: the named one (must exist), else the default if present."""
    environ = os.environ if environ is None else environ
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigurationError(
                f"config file {str(path)!r} does not exist; write one with `accel config "
                f"--config-file {path}` or drop --config-file"
            )
        return path
    path = default_config_path(environ)
    if environ.get(CONFIG_FILE_ENV) and not path.is_file():
        raise ConfigurationError(
            f"{CONFIG_FILE_ENV}={environ[CONFIG_FILE_ENV]} names no file; write it with "
            "`accel config` or unset the variable"
        )
    return path if path.is_file() else None


def load_config_file(path: str | os.PathLike[str], options: Iterable[LaunchOption]) -> dict:
    """Read and check a YAML config: unknown keys and wrong types are errors naming the fix."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigurationError(f"cannot read config file {str(path)!r}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"config file {str(path)!r} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigurationError(
            f"config file {str(path)!r} must be a mapping of option: value, got "
            f"{type(data).__name__}"
        )
    by_key = {o.dest: o for o in options}
    normalised = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(k for k in normalised if k not in by_key)
    if unknown:
        raise ConfigurationError(
            f"unknown key(s) {', '.join(unknown)} in config file {str(path)!r}; valid keys: "
            f"{', '.join(sorted(by_key))} (installed plugins add their own)"
        )
    return {k: coerce(by_key[k], v, f"{path}: {k}") for k, v in normalised.items()}


def write_config_file(path: str | os.PathLike[str], values: Mapping[str, Any]) -> Path:
    """Write ``values`` (None values left out) as YAML; creates the parent directory."""
    import yaml

    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {k: v for k, v in values.items() if v is not None}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- resolution


@dataclass
class LaunchConfig:
    """What one ``accel launch`` resolved, with where each value came from."""

    num_processes: int
    num_machines: int = 1
    machine_rank: int = 0
    main_process_ip: str | None = None
    main_process_port: int | None = None
    cpu: bool = False
    mixed_precision: str | None = None
    backend: str | None = None
    gradient_accumulation_steps: int | None = None
    max_restarts: int = 0
    plugin_values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    options: list[LaunchOption] = field(default_factory=list, repr=False)
    config_file: Path | None = None
    extra_backend_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def processes_per_machine(self) -> int:
        return self.num_processes // self.num_machines

    def values(self) -> dict[str, Any]:
        """Every setting by config-file key (core then plugin options), for display and files."""
        core = {o.dest: getattr(self, o.dest) for o in CORE_OPTIONS}
        return {**core, **self.plugin_values}

    def plugin_options(self, kind: str) -> dict[str, dict[str, Any]]:
        """``{backend_name: {key: value}}`` (kind "backend") or the same for precisions."""
        grouped: dict[str, dict[str, Any]] = {}
        for option in self.options:
            target = option.target
            if target is None or target[0] != kind or option.dest not in self.plugin_values:
                continue
            grouped.setdefault(target[1], {})[option.option_key] = self.plugin_values[option.dest]
        return grouped

    def environment(self) -> dict[str, str]:
        """The variables every process gets (see the module docstring); unset ones are absent."""
        env = {NUM_PROCESSES_ENV: str(self.num_processes)}
        given = {k for k, s in self.sources.items() if s != DEFAULT}
        if "cpu" in given or self.cpu:
            env[USE_CPU_ENV] = "1" if self.cpu else "0"
        for key, var in (
            ("backend", BACKEND_ENV),
            ("mixed_precision", MIXED_PRECISION_ENV),
            ("gradient_accumulation_steps", GRADIENT_ACCUMULATION_STEPS_ENV),
        ):
            if getattr(self, key) is not None:
                env[var] = str(getattr(self, key))
        for kind, var in (("backend", BACKEND_OPTIONS_ENV), ("precision", PRECISION_OPTIONS_ENV)):
            grouped = self.plugin_options(kind)
            if kind == "backend":
                for name, extra in self.extra_backend_options.items():
                    grouped[name] = {**grouped.get(name, {}), **extra}
            if grouped:
                env[var] = json.dumps(grouped, sort_keys=True)
        sources = {}
        by_dest = {o.dest: o for o in self.options}
        for key, source in self.sources.items():
            option = by_dest.get(key)
            if source == DEFAULT:
                continue
            if option is None or option.target is None:
                sources[key] = source
                continue
            kind, name = option.target
            detail = f"{COMMAND_LINE} --{option.name}" if source == COMMAND_LINE else source
            sources[plugin_source_key(kind, name, option.option_key)] = detail
        if sources:
            env[LAUNCH_SOURCES_ENV] = json.dumps(sources, sort_keys=True)
        return env


def default_num_processes(cpu: bool) -> int:
    """One process per accelerator of this machine, or one on CPU."""
    import torch

    if cpu or not torch.accelerator.is_available():
        return 1
    return max(1, torch.accelerator.device_count())


def resolve_launch_config(
    command_line: Mapping[str, Any],
    config_file: Path | None,
    options: list[LaunchOption],
) -> LaunchConfig:
    """Merge command line > config file > defaults and check the result."""
    from_file = load_config_file(config_file, options) if config_file is not None else {}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for option in options:
        key = option.dest
        if command_line.get(key) is not None:
            values[key], sources[key] = command_line[key], COMMAND_LINE
        elif from_file.get(key) is not None:
            values[key], sources[key] = from_file[key], f"config file {config_file}"
        elif option.target is None:
            values[key], sources[key] = CORE_DEFAULTS.get(key), DEFAULT
    if values.get("num_processes") is None:
        values["num_processes"] = default_num_processes(bool(values["cpu"])) * int(
            values["num_machines"]
        )
    core_keys = {o.dest for o in CORE_OPTIONS}
    config = LaunchConfig(
        **{k: v for k, v in values.items() if k in core_keys},
        plugin_values={k: v for k, v in values.items() if k not in core_keys},
        sources=sources,
        options=options,
        config_file=config_file,
    )
    if config.mixed_precision is not None:
        config.mixed_precision = config.mixed_precision.strip().lower()
    check_launch_config(config)
    return config


def _flag(config: LaunchConfig, key: str) -> str:
    source = config.sources.get(key, DEFAULT)
    spelled = "--" + key.replace("_", "-")
    return spelled if source == COMMAND_LINE else f"{key} ({source})"


def check_launch_config(config: LaunchConfig) -> None:
    """Refuse settings that cannot form the world asked for, naming the option to change."""
    for key, low in (
        ("num_processes", 1),
        ("num_machines", 1),
        ("machine_rank", 0),
        ("max_restarts", 0),
        ("gradient_accumulation_steps", 1),
    ):
        value = getattr(config, key)
        if value is not None and value < low:
            raise ConfigurationError(f"{_flag(config, key)} must be >= {low}, got {value}")
    if config.num_processes % config.num_machines:
        raise ConfigurationError(
            f"{_flag(config, 'num_processes')}={config.num_processes} is the total over all "
            f"machines and must be a multiple of {_flag(config, 'num_machines')}="
            f"{config.num_machines}"
        )
    if config.num_processes < config.num_machines:
        raise ConfigurationError(
            f"{config.num_machines} machines need at least one process each; "
            f"{_flag(config, 'num_processes')} is {config.num_processes}"
        )
    if config.machine_rank >= config.num_machines:
        raise ConfigurationError(
            f"{_flag(config, 'machine_rank')}={config.machine_rank} must be below "
            f"{_flag(config, 'num_machines')}={config.num_machines}"
        )
    if config.num_machines > 1 and (config.main_process_ip is None or not config.main_process_port):
        raise ConfigurationError(
            f"{config.num_machines} machines need the address of machine 0: pass "
            "--main-process-ip and --main-process-port (the same on every machine)"
        )
    if config.main_process_port is not None and not 0 < config.main_process_port < 65536:
        raise ConfigurationError(
            f"{_flag(config, 'main_process_port')}={config.main_process_port} is not a TCP port"
        )
    for option in config.options:
        target = option.target
        if target is None or option.dest not in config.plugin_values:
            continue
        chosen = config.backend if target[0] == "backend" else config.mixed_precision
        if chosen is not None and chosen != target[1]:
            raise ConfigurationError(
                f"{_flag(config, option.dest)} applies to {target[0]} '{target[1]}' but "
                f"{_flag(config, target[0] if target[0] == 'backend' else 'mixed_precision')} "
                f"is '{chosen}'; drop one of them"
            )


# --------------------------------------------------------------------------- inside a process


def _sources(environ: Mapping[str, str]) -> dict[str, str]:
    raw = environ.get(LAUNCH_SOURCES_ENV)
    if not raw:
        return {}
    try:
        return dict(json.loads(raw))
    except (ValueError, TypeError):
        raise ConfigurationError(
            f"{LAUNCH_SOURCES_ENV}={raw!r} is not JSON; it is set by accel launch, do not edit it"
        ) from None


_SETTING_ENV = {
    "backend": BACKEND_ENV,
    "mixed_precision": MIXED_PRECISION_ENV,
    "cpu": USE_CPU_ENV,
    "gradient_accumulation_steps": GRADIENT_ACCUMULATION_STEPS_ENV,
}


def _parse_setting(name: str, raw: str) -> Any:
    if name == "cpu":
        return parse_bool(raw, USE_CPU_ENV)
    if name == "gradient_accumulation_steps":
        try:
            return int(raw)
        except ValueError:
            raise ConfigurationError(
                f"{GRADIENT_ACCUMULATION_STEPS_ENV}={raw!r} is not an integer"
            ) from None
    if name == "mixed_precision":
        return raw.strip().lower()
    return raw.strip()


def _normalise(name: str, value: Any) -> Any:
    return value.strip().lower() if name == "mixed_precision" and isinstance(value, str) else value


def launch_setting(name: str, explicit: Any, environ: Mapping[str, str] | None = None) -> Any:
    """``explicit`` if given, else the launch's value from the environment, else ``None``.

    An explicit value that differs from one given on the ``accel launch`` command line is an
    error naming both; one that differs from a config-file or shell value wins.
    """
    environ = os.environ if environ is None else environ
    raw = environ.get(_SETTING_ENV[name])
    launched = _parse_setting(name, raw) if raw not in (None, "") else None
    if explicit is None:
        return launched
    contradicts = launched is not None and _normalise(name, explicit) != launched
    source = _sources(environ).get(name)
    if contradicts and source in STRICT_SOURCES:
        if source == COMMAND_LINE:
            flag = "--" + name.replace("_", "-")
            shown = "`accel launch " + (flag if name == "cpu" else f"{flag} {launched}") + "`"
        else:
            shown = f"notebook_launcher({name}={launched!r})"
        raise ConfigurationError(
            f"Accelerator({name}={explicit!r}) contradicts {shown}; remove the argument from "
            "the script or the option from the launch"
        )
    return explicit


def _options_from_env(var: str, environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    raw = environ.get(var)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ConfigurationError(
            f"{var} must be a JSON object {{name: {{option: value}}}}, got {raw!r}; it is set by "
            "accel launch"
        )
    return data


def launch_plugin_options(
    kind: str,
    selected: str,
    explicit: Mapping[str, Any] | None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The options for the selected backend (or precision): the launch's, then ``explicit``.

    A key given explicitly that differs from a value given on the launch command line is an
    error naming both.
    """
    environ = os.environ if environ is None else environ
    var = BACKEND_OPTIONS_ENV if kind == "backend" else PRECISION_OPTIONS_ENV
    launched = dict(_options_from_env(var, environ).get(selected, {}))
    explicit = dict(explicit or {})
    sources = _sources(environ)
    for key, value in explicit.items():
        source = sources.get(plugin_source_key(kind, selected, key), "")
        if key not in launched or launched[key] == value:
            continue
        if source.startswith(COMMAND_LINE):
            flag = source[len(COMMAND_LINE) :].strip()
            shown = f"`accel launch {flag} {json.dumps(launched[key])}`"
        elif source == NOTEBOOK_LAUNCHER:
            shown = f"notebook_launcher({kind}_options={{{key!r}: {launched[key]!r}}})"
        else:
            continue
        raise ConfigurationError(
            f"Accelerator({kind}_options={{{key!r}: {value!r}}}) contradicts {shown}; remove "
            "one of them"
        )
    return {**launched, **explicit}


def plugin_source_key(kind: str, name: str, key: str) -> str:
    """How ``ACCELERATE_CORE_LAUNCH_SOURCES`` names a plugin option (``backend_options.ddp.x``)."""
    return f"{kind}_options.{name}.{key}"


def check_world_size(
    world_size: int, source: str, rank: int, environ: Mapping[str, str] | None = None
) -> None:
    """Every rank checks that the world it joined is the one the launch asked for."""
    environ = os.environ if environ is None else environ
    raw = environ.get(NUM_PROCESSES_ENV)
    if not raw:
        return
    try:
        expected = int(raw)
    except ValueError:
        raise EnvironmentDetectionError(f"{NUM_PROCESSES_ENV}={raw!r} is not an integer") from None
    if expected != world_size:
        raise EnvironmentDetectionError(
            f"the launch asked for {expected} processes ({NUM_PROCESSES_ENV}) but rank {rank} "
            f"joined a world of {world_size} (detected by {source}); start the script with "
            f"`accel launch --num-processes {expected}` as configured, or unset {NUM_PROCESSES_ENV}"
        )
