"""``accel config``: write the YAML config file ``accel launch`` reads.

* ``accel config`` asks a few questions (Enter keeps the default shown) and writes the file;
* ``accel config default`` writes the defaults for this machine without asking;
* ``accel config show`` prints the file and what ``accel launch`` would use with it;
* ``accel config import HF.yaml`` turns a Hugging Face Accelerate config file into this one;
* ``accel config reset`` removes the file (only a file of launch settings, never another one).

The file is plain YAML (``yaml.safe_load``), one ``key: value`` per launch option, dash or
underscore spellings; unknown keys are an error listing the valid ones. Default location:
``ACCELERATE_CORE_CONFIG_FILE``, else ``~/.cache/accelerate_core/default_config.yaml``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..config_files import default_config_path, load_config_file, write_config_file
from ..errors import AccelerateCoreError, ConfigurationError
from ..launch_options import CONFIG_FILE_ENV, coerce
from ..launch_settings import default_num_processes, resolve_launch_config
from ..plugins import BUILTIN_LABEL, get_plugin_manager
from ..specs import LaunchAlias, LaunchOption
from ..state import DEFAULT_DISTRIBUTED_BACKEND, SINGLE_PROCESS_BACKEND
from .launch import describe
from .text import summary


def register(
    commands: Any, options: Sequence[LaunchOption], aliases: Sequence[LaunchAlias] = ()
) -> None:
    parser = commands.add_parser(
        "config",
        help="write, show or reset the launch config file",
        description=summary(__doc__),
    )
    _file_argument(parser)
    parser.set_defaults(
        run=run_questionnaire, launch_options=list(options), launch_aliases=list(aliases)
    )
    sub = parser.add_subparsers(dest="config_command", metavar="{default,show,import,reset}")
    default = sub.add_parser("default", help="write this machine's defaults without questions")
    _file_argument(default)
    default.add_argument("--force", action="store_true", help="replace an existing file")
    default.set_defaults(run=run_default)
    show = sub.add_parser("show", help="print the config file and the launch it gives")
    _file_argument(show)
    show.set_defaults(run=run_show)
    imported = sub.add_parser(
        "import", help="write this file from a Hugging Face Accelerate config (accelerate config)"
    )
    imported.add_argument("hf_config", metavar="HF_CONFIG", help="the file HF wrote (YAML/JSON)")
    _file_argument(imported)
    imported.add_argument("--force", action="store_true", help="replace an existing file")
    imported.set_defaults(run=run_import)
    reset = sub.add_parser("reset", help="remove the config file (launches use the defaults)")
    _file_argument(reset)
    reset.set_defaults(run=run_reset)


def _file_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config-file",
        "--config_file",
        dest="config_file",
        default=argparse.SUPPRESS,
        help=f"the file (default: {CONFIG_FILE_ENV}, else ~/.cache/accelerate_core/"
        "default_config.yaml)",
    )


def _path(args: argparse.Namespace) -> Path:
    explicit = getattr(args, "config_file", None)
    return Path(explicit).expanduser() if explicit else default_config_path()


def _fail(message: str) -> int:
    print(f"accel config: error: {message}", file=sys.stderr)
    return 1


# --------------------------------------------------------------------------- questionnaire


class _NoAnswer(Exception):
    pass


def _ask(question: str, default: Any, parse: Callable[[str], Any]) -> Any:
    """Ask until the answer parses; Enter keeps ``default``."""
    shown = "" if default is None else f" [{_show(default)}]"
    while True:
        try:
            answer = input(f"{question}{shown}: ").strip()
        except EOFError:
            raise _NoAnswer(question) from None
        if not answer:
            return default
        try:
            return parse(answer)
        except (ConfigurationError, ValueError) as exc:
            print(f"  {exc}; try again")


def _show(value: Any) -> str:
    return ("yes" if value else "no") if isinstance(value, bool) else str(value)


def _parser_for(option: LaunchOption) -> Callable[[str], Any]:
    return lambda text: coerce(option, text, option.dest)


def _choice(valid: Sequence[Any]) -> Callable[[str], Any]:
    """Read a menu answer: the choice's number or its name."""

    def parse(text: str) -> Any:
        if text.isdigit() and 1 <= int(text) <= len(valid):
            return valid[int(text) - 1]
        for value in valid:
            if text == str(value):
                return value
        raise ConfigurationError(
            f"{text!r} is not one of {', '.join(map(str, valid))} (or their numbers)"
        )

    return parse


def _menu(question: str, valid: Sequence[Any], default: Any) -> Any:
    """A numbered menu (as HF's ``accelerate config`` shows its choices); Enter keeps the
    default, a number or a name chooses."""
    print(question)
    for number, value in enumerate(valid, 1):
        print(f"  {number}) {_show(value)}" + ("  (default)" if value == default else ""))
    return _ask("Choice", default, _choice(valid))


def questionnaire(options: Sequence[LaunchOption]) -> dict[str, Any]:
    """Ask for every core setting and the chosen backend's options; return the answers."""

    by_key = {o.dest: o for o in options}

    def ask(key: str, question: str, default: Any) -> Any:
        option = by_key[key]
        if option.choices is not None:
            return _menu(question, option.choices, default)
        if option.type == "bool":
            question += " (yes/no)"
        return _ask(question, default, _parser_for(option))

    registry = get_plugin_manager().registry()
    values: dict[str, Any] = {}
    values["num_machines"] = ask("num_machines", "How many machines?", 1)
    if values["num_machines"] > 1:
        values["machine_rank"] = ask("machine_rank", "Rank of this machine (0 = main)?", 0)
        values["main_process_ip"] = ask("main_process_ip", "IP address of machine 0?", None)
        values["main_process_port"] = ask("main_process_port", "Port on machine 0?", 29500)
    values["cpu"] = ask("cpu", "Train on the CPU only?", default_num_processes(False) == 1)
    plugin_devices = sorted(
        name for name, r in registry["device"].items() if r.distribution != BUILTIN_LABEL
    )
    if plugin_devices and not values["cpu"]:  # asked only when a device plugin is installed
        devices = ["auto", *sorted(registry["device"])]
        device = _menu("Device (auto: the accelerator torch reports, else cpu)?", devices, "auto")
        values["device"] = None if device == "auto" else device
    per_machine = default_num_processes(values["cpu"])
    values["num_processes"] = ask(
        "num_processes",
        "How many processes in total (over all machines)?",
        per_machine * values["num_machines"],
    )
    backends = ["auto", *sorted(registry["backend"])]
    backend = _menu("Backend (auto: none for 1 process, ddp for more)?", backends, "auto")
    values["backend"] = None if backend == "auto" else backend
    precisions = sorted(registry["precision"])
    values["mixed_precision"] = _menu("Mixed precision?", precisions, "no")
    values["gradient_accumulation_steps"] = ask(
        "gradient_accumulation_steps", "Gradient accumulation steps?", 1
    )
    values["max_restarts"] = ask("max_restarts", "Restarts after a failure?", 0)
    selected = values["backend"] or (
        DEFAULT_DISTRIBUTED_BACKEND if values["num_processes"] > 1 else SINGLE_PROCESS_BACKEND
    )
    for option in options:
        target = option.target
        if target in (("backend", selected), ("precision", values["mixed_precision"])):
            values[option.dest] = ask(option.dest, f"{option.help} (Enter: not set)", None)
    return values


def run_questionnaire(args: argparse.Namespace) -> int:
    path = _path(args)
    print(f"accel config: writes {path} (Enter keeps the value in brackets)")
    try:
        values = questionnaire(args.launch_options)
        resolve_launch_config(values, None, args.launch_options)  # refuse an unusable file
    except _NoAnswer as exc:
        return _fail(f"no answer to {str(exc)!r} (standard input closed); nothing written")
    except AccelerateCoreError as exc:
        return _fail(f"{exc}; nothing written")
    write_config_file(path, values)
    print(f"accel config: wrote {path}; `accel launch` reads it (`accel config show` prints it)")
    return 0


# --------------------------------------------------------------------------- default and show


def default_values() -> dict[str, Any]:
    """What ``accel config default`` writes: this machine, every process, full precision."""
    cpu = default_num_processes(False) == 1
    return {
        "num_processes": default_num_processes(cpu),
        "num_machines": 1,
        "cpu": cpu,
        "mixed_precision": "no",
        "gradient_accumulation_steps": 1,
        "max_restarts": 0,
    }


def run_default(args: argparse.Namespace) -> int:
    path = _path(args)
    if path.exists() and not args.force:
        return _fail(
            f"{path} exists; pass --force to replace it, or edit it (accel config show prints it)"
        )
    write_config_file(path, default_values())
    print(f"accel config: wrote the defaults to {path}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    """Translate an HF config (through the plugins' ``LaunchAlias`` records) and write ours."""
    path = _path(args)
    source = Path(args.hf_config).expanduser()
    if not source.is_file():
        return _fail(f"{source} does not exist")
    if path.exists() and not args.force:
        return _fail(f"{path} exists; pass --force to replace it, or --config-file OTHER")
    if path.resolve() == source.resolve():
        return _fail("write the imported settings to another file (--config-file OTHER)")
    try:
        values = load_config_file(source, args.launch_options, args.launch_aliases)
        resolve_launch_config(values, None, args.launch_options, args.launch_aliases)
    except AccelerateCoreError as exc:
        return _fail(f"{exc}; nothing written")
    write_config_file(path, values)
    print(f"accel config: wrote {path} from {source}:")
    print("\n".join(f"  {key}: {value}" for key, value in values.items()))
    return 0


def run_reset(args: argparse.Namespace) -> int:
    """Remove the config file, after checking it holds launch settings (not another file)."""
    path = _path(args)
    if not path.is_file():
        print(f"accel config: no config file at {path}; nothing to reset")
        return 0
    try:
        load_config_file(path, args.launch_options, args.launch_aliases)
    except AccelerateCoreError as exc:
        return _fail(f"{path} is not a launch config ({exc}); remove it yourself if you meant to")
    path.unlink()
    print(f"accel config: removed {path}; accel launch uses the defaults now")
    return 0


def run_show(args: argparse.Namespace) -> int:

    path = _path(args)
    if not path.is_file():
        return _fail(
            f"no config file at {path}; write one with `accel config` or `accel config default`"
        )
    try:
        load_config_file(path, args.launch_options, args.launch_aliases)
        config = resolve_launch_config({}, path, args.launch_options, args.launch_aliases)
    except AccelerateCoreError as exc:
        return _fail(str(exc))
    print(f"# {path}")
    print(path.read_text().rstrip())
    print("# accel launch would use:")
    print("\n".join(f"#{line}" for line in describe(config)))
    return 0
