"""``accel launch [options] script.py [args]`` (or ``-m module``): run a script on N processes.

Options come from the command line, else the config file, else defaults (``launch_settings.py``);
installed plugins add their own (``accelerate_core_launch_options``), so this module names no
backend. One process runs the script here, in this interpreter. Several processes or machines run
torchrun in this process (``torch.distributed.run``), each process starting ``cli/worker.py``,
which runs the script and reports a failure at once. The resolved
settings reach the processes as ``ACCELERATE_CORE_*`` variables, which ``Accelerator`` reads.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config_files import config_file_to_read
from ..errors import AccelerateCoreError, ConfigurationError
from ..launch_settings import LaunchConfig, resolve_launch_config
from ..launchers import describe_failure, launch_environment
from ..plugins import get_plugin_manager
from ..specs import LaunchAlias, LaunchOption
from ..state import select_precision
from .text import summary
from .worker import run_target

# Run by path, not with -m: the worker then imports only the standard library (the script
# imports what it needs), so a launch costs no more start-up than torchrun itself.
WORKER_SCRIPT = str(Path(__file__).with_name("worker.py"))


def _spellings(name: str) -> list[str]:
    flags = [f"--{name}"]
    if "-" in name:
        flags.append(f"--{name.replace('-', '_')}")
    return flags


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None


_TYPES = {"int": int, "float": float, "str": str, "json": _json_value}


# One-letter spellings Hugging Face Accelerate has for an option of ours.
SHORT_SPELLINGS = {"tee": "-t"}


ALIAS_DEST = "hf:"  # argparse destination prefix of Hugging Face's flags


def add_option(group: Any, option: LaunchOption, underscore: bool = True) -> None:
    """One ``LaunchOption`` as an argparse option (dash and underscore spellings)."""
    kwargs: dict[str, Any] = {"dest": option.dest, "default": None, "help": option.help}
    if option.type == "bool":
        kwargs["action"] = argparse.BooleanOptionalAction
    else:
        kwargs["type"] = _TYPES[option.type]
        kwargs["metavar"] = option.dest.upper()
        if option.choices is not None:
            kwargs["choices"] = option.choices
    short = [SHORT_SPELLINGS[option.dest]] if option.dest in SHORT_SPELLINGS else []
    spellings = _spellings(option.name) if underscore else [f"--{option.name}"]
    group.add_argument(*short, *spellings, **kwargs)


def add_alias(group: Any, alias: LaunchAlias, taken: set[str]) -> None:
    """One of Hugging Face Accelerate's flags; its value is read and translated at resolve.

    Its dash spelling is left out when it is an option's flag (HF's name of that option)."""
    spellings = [*([alias.short] if alias.short else []), f"--{alias.name}"]
    dashed = f"--{alias.name.replace('_', '-')}"
    if "_" in alias.name and dashed not in taken:
        spellings.append(dashed)
    kwargs: dict[str, Any] = {"dest": ALIAS_DEST + alias.name, "default": None, "help": alias.help}
    if alias.type == "flag":
        kwargs.update(action="store_const", const=True)
    else:
        kwargs["metavar"] = alias.type.upper()
    group.add_argument(*spellings, **kwargs)


def add_launch_arguments(
    parser: argparse.ArgumentParser,
    options: Sequence[LaunchOption],
    aliases: Sequence[LaunchAlias] = (),
) -> None:
    """The options shared by ``accel launch`` and ``accel test``."""
    core = parser.add_argument_group("launch options (each also a config-file key)")
    core.add_argument(
        *_spellings("config-file"),
        dest="config_file",
        default=None,
        help="YAML config (default: ACCELERATE_CORE_CONFIG_FILE, else the one accel config "
        "wrote, if any)",
    )
    core.add_argument(
        *_spellings("dry-run"),
        dest="dry_run",
        action="store_true",
        help="print the resolved configuration and the exact command; run nothing",
    )
    groups: dict[tuple[str, str] | None, Any] = {None: core}
    on_command_line = [a for a in aliases if a.command_line]
    hf_names = {a.name for a in on_command_line}
    taken: set[str] = set()
    for option in options:
        target = option.target
        if target not in groups:
            groups[target] = parser.add_argument_group(f"options of {target[0]} '{target[1]}'")
        add_option(groups[target], option, underscore=option.dest not in hf_names)
        taken.add(f"--{option.name}")
    if on_command_line:
        hf = parser.add_argument_group(
            "Hugging Face Accelerate's flags (each translated into the options above, or refused "
            "naming what to use instead)"
        )
        for alias in on_command_line:
            add_alias(hf, alias, taken)
    parser.set_defaults(launch_options=list(options), launch_aliases=list(aliases))


BOOL_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def bool_values_as_flags(
    argv: Sequence[str], options: Sequence[LaunchOption], aliases: Sequence[LaunchAlias] = ()
) -> list[str]:
    """``--fsdp-cpu-offload false`` (how HF's users pass booleans) as ``--no-fsdp-cpu-offload``.

    A yes/no option is a flag here; without this, the word after it would be taken for the
    script. Only the launch's own arguments are read: scanning stops at the script.
    """
    flags: dict[str, str] = {}
    valued: set[str] = {"--config-file", "--config_file"}
    hf_spellings = {f"--{a.name}" for a in aliases}  # HF's spelling of an option is the alias
    for option in options:
        for spelling in _spellings(option.name):
            if spelling in hf_spellings:
                continue
            if option.type == "bool":
                flags[spelling] = option.name
            else:
                valued.add(spelling)
    for alias in aliases:
        if alias.type != "flag":
            valued.update({f"--{alias.name}", f"--{alias.name.replace('_', '-')}"})
    out = list(argv[:1])  # the command
    i = 1
    while i < len(argv):
        token = argv[i]
        if token == "--" or not token.startswith("-"):
            return out + list(argv[i:])  # the script and its arguments: untouched
        name, eq, inline = token.partition("=")
        word = inline if eq else (argv[i + 1] if i + 1 < len(argv) else "")
        if name in flags and word.lower() in BOOL_WORDS:
            out.append(f"--{'' if BOOL_WORDS[word.lower()] else 'no-'}{flags[name]}")
            i += 1 if eq else 2
        elif token in valued:
            out.extend(argv[i : i + 2])
            i += 2
        else:
            out.append(token)
            i += 1
    return out


def register(
    commands: Any, options: Sequence[LaunchOption], aliases: Sequence[LaunchAlias] = ()
) -> None:
    parser = commands.add_parser(
        "launch",
        help="run a training script on one or several processes/machines",
        description=summary(__doc__),
        usage="accel launch [options] [Hugging Face Accelerate flags] SCRIPT [ARGS ...]",
        allow_abbrev=False,
    )
    add_launch_arguments(parser, options, aliases)
    parser.add_argument(
        "-m", "--module", action="store_true", help="run SCRIPT as a module, like python -m"
    )
    parser.add_argument("script", metavar="SCRIPT", help="the training script (module with -m)")
    parser.add_argument("script_args", nargs=argparse.REMAINDER, help="arguments of the script")
    parser.set_defaults(run=run)


def resolve(args: argparse.Namespace) -> LaunchConfig:
    """The launch configuration from parsed arguments, the config file and the defaults."""
    options: list[LaunchOption] = args.launch_options
    aliases: list[LaunchAlias] = getattr(args, "launch_aliases", [])
    command_line = {o.dest: getattr(args, o.dest, None) for o in options}
    hf_flags = {a.name: getattr(args, ALIAS_DEST + a.name, None) for a in aliases}
    config = resolve_launch_config(
        command_line,
        config_file_to_read(args.config_file),
        options,
        aliases,
        {k: v for k, v in hf_flags.items() if v is not None},
    )
    _check_installed(config)
    return config


def _check_installed(config: LaunchConfig) -> None:
    """Refuse a backend or precision that is not installed before starting anything."""

    if config.backend is not None:
        spec = get_plugin_manager().select("backend", config.backend).spec
        if config.num_processes > 1 and not spec.distributed:
            raise ConfigurationError(
                f"backend '{spec.name}' runs a single process but {config.num_processes} "
                "processes were asked for; choose a distributed backend or --num-processes 1"
            )
        if config.num_processes < spec.min_processes:
            raise ConfigurationError(
                f"backend '{spec.name}' needs at least {spec.min_processes} processes; pass "
                f"--num-processes {spec.min_processes}"
            )
    if config.mixed_precision is not None:
        select_precision(config.mixed_precision)
    if config.device is not None:
        get_plugin_manager().select("device", config.device)


def uses_torchrun(config: LaunchConfig) -> bool:
    """Several processes, restarts or torchrun's log files need torchrun; one process does not."""
    return (
        config.num_processes > 1
        or config.num_machines > 1
        or config.max_restarts > 0
        or config.log_dir is not None
        or config.tee is not None
    )


def torchrun_arguments(
    config: LaunchConfig, script: str, script_args: Sequence[str], module: bool
) -> list[str]:
    """The ``torch.distributed.run`` arguments for this launch."""
    arguments = [
        f"--nnodes={config.num_machines}",
        f"--nproc-per-node={config.processes_per_machine}",
        f"--max-restarts={config.max_restarts}",
    ]
    if config.monitor_interval is not None:
        arguments.append(f"--monitor-interval={config.monitor_interval}")
    if config.log_dir is not None:
        arguments.append(f"--log-dir={config.log_dir}")
    if config.tee is not None:
        arguments.append(f"--tee={config.tee}")
    if config.num_machines == 1 and config.main_process_port is None:
        arguments.append("--standalone")  # a free port on this machine, chosen by torch
    else:
        arguments += [
            f"--node-rank={config.machine_rank}",
            f"--master-addr={config.main_process_ip or '127.0.0.1'}",
            f"--master-port={config.main_process_port}",
        ]
    arguments += [WORKER_SCRIPT, *(["--module"] if module else []), script, *script_args]
    return arguments


def command_for(
    config: LaunchConfig, script: str, script_args: Sequence[str], module: bool
) -> list[str]:
    """The equivalent command line of what the launch runs (shown by ``--dry-run``)."""
    if uses_torchrun(config):
        arguments = torchrun_arguments(config, script, script_args, module)
        return [sys.executable, "-m", "torch.distributed.run", *arguments]
    return [sys.executable, *(["-m", script] if module else [script]), *script_args]


def describe(config: LaunchConfig) -> list[str]:
    """One line per setting with where its value came from."""
    values = config.values()
    width = max(len(k) for k in values) + 1
    lines = []
    for key, value in values.items():
        shown = json.dumps(value) if isinstance(value, (dict, list, bool)) else str(value)
        if value is None:
            shown = "(not set)"
        source = config.sources.get(key, "default")
        if key == "num_processes" and source == "default":
            source = "default: one per accelerator, else 1"
        lines.append(f"  {key + ':':<{width}} {shown:<12} # {source}")
    return lines


def run(args: argparse.Namespace) -> int:
    try:
        config = resolve(args)
    except AccelerateCoreError as exc:
        print(f"accel launch: error: {exc}", file=sys.stderr)
        return 2
    variables = config.environment()
    command = command_for(config, args.script, args.script_args, args.module)
    if args.dry_run:
        print("accel launch --dry-run: resolved configuration (nothing is started)")
        print(f"  config file: {config.config_file or '(none)'}")
        print("\n".join(describe(config)))
        if config.num_machines > 1:
            print(
                f"every machine runs this launch with the same settings (device, backend, ...) "
                f"and its own --machine-rank (0 to {config.num_machines - 1})"
            )
        print("environment of every process:")
        print("\n".join(f"  {name}={value}" for name, value in sorted(variables.items())))
        print("command:")
        assignments = [f"{name}={value}" for name, value in sorted(variables.items())]
        print("  " + shlex.join(["env", *assignments, *command]))
        return 0

    with launch_environment(variables):
        if not uses_torchrun(config):
            return run_target(args.script, list(args.script_args), args.module)
        return run_torchrun(torchrun_arguments(config, args.script, args.script_args, args.module))


def run_torchrun(arguments: list[str]) -> int:
    """Run torchrun in this process; a failure ends with the first failing rank's report."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args
    from torch.distributed.run import run as torchrun

    try:
        torchrun(parse_args(arguments))
    except ChildFailedError as exc:
        text, code = describe_failure(exc)
        print(f"accel launch: {text}", file=sys.stderr)
        return code
    except SignalException as exc:
        print(f"accel launch: stopped by signal {exc.sigval.name}", file=sys.stderr)
        return 128 + int(exc.sigval)
    except Exception as exc:  # rendezvous and start-up errors: say what, no torch internals
        print(f"accel launch: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0
