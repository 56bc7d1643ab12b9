"""The launcher side of the settings: merge command line > config file > defaults, check the
result, and write the environment every process gets (``launch_options`` names the variables).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config_files import load_config_file, merge_translated
from .errors import ConfigurationError
from .launch_aliases import translate_aliases
from .launch_options import (
    COMMAND_LINE,
    CORE_DEFAULTS,
    CORE_OPTIONS,
    DEFAULT,
    LAUNCH_SOURCES_ENV,
    NUM_PROCESSES_ENV,
    OPTIONS_VARIABLES,
    PARALLELISM_VARIABLES,
    SETTING_VARIABLES,
    SHELL_SETTINGS,
    coerce,
    plugin_source_key,
    shell_source,
)
from .plugins import collect_launch_aliases
from .specs import LaunchAlias, LaunchOption


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
    device: str | None = None
    max_restarts: int = 0
    num_cpu_threads_per_process: int | None = None
    monitor_interval: float | None = None
    log_dir: str | None = None
    tee: str | None = None
    use_parallelism_config: bool | None = None
    parallelism_config_dp_replicate_size: int | None = None
    parallelism_config_dp_shard_size: int | None = None
    parallelism_config_tp_size: int | None = None
    parallelism_config_cp_size: int | None = None
    parallelism_config_cp_backend: str | None = None
    parallelism_config_cp_comm_strategy: str | None = None
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
        for key in ("use_parallelism_config", *PARALLELISM_VARIABLES):
            if not core[key]:  # shown only when set: most runs have no ParallelismConfig
                del core[key]
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
        if self.num_cpu_threads_per_process is not None:
            env["OMP_NUM_THREADS"] = str(self.num_cpu_threads_per_process)
        given = {k for k, s in self.sources.items() if s != DEFAULT}
        parallelism = {k: getattr(self, k) for k in PARALLELISM_VARIABLES if getattr(self, k)}
        for key, var in SETTING_VARIABLES.items():
            value = getattr(self, key)
            if key == "use_parallelism_config":  # set sizes imply it (HF needs the flag too)
                if value or parallelism:
                    env[var] = "true"
            elif key == "cpu":
                if "cpu" in given or value:
                    env[var] = "1" if value else "0"
            elif value is not None:
                env[var] = str(value)
        for kind, var in OPTIONS_VARIABLES.items():
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
    aliases: list[LaunchAlias] | None = None,
    hf_flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> LaunchConfig:
    """Merge command line > config file > defaults and check the result.

    ``command_line`` holds option values by key, ``hf_flags`` the values of Hugging Face's flags
    by HF name (``use_fsdp``); those are translated by their ``LaunchAlias`` records (default:
    every installed plugin's), and so are the HF keys of the config file. The settings of
    ``SHELL_SETTINGS`` (the device) are also read from ``environ`` (default: this process's
    environment), between the command line and the config file.
    """
    aliases = collect_launch_aliases() if aliases is None else aliases
    environ = os.environ if environ is None else environ
    command_line = _translate_command_line(command_line, hf_flags or {}, options, aliases)
    from_file = load_config_file(config_file, options, aliases) if config_file is not None else {}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for option in options:
        key = option.dest
        variable = SETTING_VARIABLES.get(key, "")
        if command_line.get(key) is not None:
            values[key] = coerce(option, command_line[key], "--" + option.name)
            sources[key] = COMMAND_LINE
        elif key in SHELL_SETTINGS and environ.get(variable, "").strip():
            values[key] = coerce(option, environ[variable], variable)
            sources[key] = shell_source(variable)
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
    check_launch_config(config)
    return config


def _translate_command_line(
    command_line: Mapping[str, Any],
    hf_flags: Mapping[str, Any],
    options: list[LaunchOption],
    aliases: list[LaunchAlias],
) -> dict[str, Any]:
    """Option values with those of HF's flags merged in; a flag contradicting an option raises."""
    values = {k: v for k, v in command_line.items() if v is not None}
    translated, origin = translate_aliases(hf_flags, aliases, COMMAND_LINE, context=values)
    return merge_translated(values, translated, origin, options, COMMAND_LINE)


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
        ("num_cpu_threads_per_process", 1),
        *((key, 1) for key in PARALLELISM_VARIABLES if key.endswith("_size")),
    ):
        value = getattr(config, key)
        if value is not None and value < low:
            raise ConfigurationError(f"{_flag(config, key)} must be >= {low}, got {value}")
    sizes = {k: getattr(config, k) for k in PARALLELISM_VARIABLES if k.endswith("_size")}
    product = 1
    for value in sizes.values():
        product *= value or 1
    if product not in (1, config.num_processes):
        shown = " x ".join(f"{_flag(config, k)}={v}" for k, v in sizes.items() if v)
        raise ConfigurationError(
            f"{shown} = {product} processes but {_flag(config, 'num_processes')} is "
            f"{config.num_processes}; the parallelism sizes must multiply to the number of "
            "processes"
        )
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
    if config.device == "":
        raise ConfigurationError(
            f"{_flag(config, 'device')} is empty; name a device (accel env lists them) or drop it"
        )
    if config.cpu and config.device not in (None, "cpu"):
        raise ConfigurationError(
            f"{_flag(config, 'cpu')} contradicts {_flag(config, 'device')} '{config.device}' (the "
            f"CPU is the device 'cpu'); drop the cpu setting to train on '{config.device}', or "
            "select the device cpu"
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
