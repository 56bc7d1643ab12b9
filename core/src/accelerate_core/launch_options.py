"""The launch options: the core's option table, the variables that carry them, one parser each.

``accel launch`` resolves its settings (command line > config file > defaults, see
``launch_settings``) and hands them to every process as environment variables; ``PartialState``,
``AcceleratorState`` and ``Accelerator`` read them back (``process_settings``). Both sides parse
a value with ``coerce``, so a value means the same wherever it comes from. The variables a launch
owns are ``LAUNCH_VARIABLES``: the settings of ``SETTING_VARIABLES``, the plugin options as JSON
``{name: {key: value}}``, the world size every rank checks, and where each value came from.
The ``--parallelism-config-*`` options travel under Hugging Face's names
(``ACCELERATE_USE_PARALLELISM_CONFIG``, ``PARALLELISM_CONFIG_TP_SIZE``, ...), which
``ParallelismConfig()`` reads as its defaults.
"""

from __future__ import annotations

import json
from enum import Enum
from typing import Any

from .errors import ConfigurationError
from .specs import LaunchOption

USE_PARALLELISM_CONFIG_ENV = "ACCELERATE_USE_PARALLELISM_CONFIG"
# ParallelismConfig's settings (an explicit field may not contradict the command line either).
PARALLELISM_VARIABLES = {
    f"parallelism_config_{key}": f"PARALLELISM_CONFIG_{key.upper()}"
    for key in ("dp_replicate_size", "dp_shard_size", "tp_size", "cp_size", "cp_backend",
                "cp_comm_strategy")
}  # fmt: skip
# The settings an explicit Accelerator argument can also give, and their variables.
SETTING_VARIABLES = {
    "backend": "ACCELERATE_CORE_BACKEND",
    "mixed_precision": "ACCELERATE_CORE_MIXED_PRECISION",
    "cpu": "ACCELERATE_CORE_USE_CPU",
    "gradient_accumulation_steps": "ACCELERATE_CORE_GRADIENT_ACCUMULATION_STEPS",
    "device": "ACCELERATE_CORE_DEVICE",
    "use_parallelism_config": USE_PARALLELISM_CONFIG_ENV,
    **PARALLELISM_VARIABLES,
}
# Settings ``accel launch`` also takes from its own environment (below the command line, above
# the config file): the device variable was how a device was chosen before ``--device`` existed,
# and a machine's device is often exported in its shell profile.
SHELL_SETTINGS = ("device",)
BACKEND_OPTIONS_ENV = "ACCELERATE_CORE_BACKEND_OPTIONS"
PRECISION_OPTIONS_ENV = "ACCELERATE_CORE_PRECISION_OPTIONS"
OPTIONS_VARIABLES = {"backend": BACKEND_OPTIONS_ENV, "precision": PRECISION_OPTIONS_ENV}
NUM_PROCESSES_ENV = "ACCELERATE_CORE_NUM_PROCESSES"
LAUNCH_SOURCES_ENV = "ACCELERATE_CORE_LAUNCH_SOURCES"
# Every variable a launch owns: it sets those it resolved and clears the rest for its processes.
LAUNCH_VARIABLES = (
    *SETTING_VARIABLES.values(),
    *OPTIONS_VARIABLES.values(),
    NUM_PROCESSES_ENV,
    LAUNCH_SOURCES_ENV,
)
# Read by ``accel`` itself, not set for the processes.
CONFIG_FILE_ENV = "ACCELERATE_CORE_CONFIG_FILE"

# Where a value came from (``LaunchConfig.sources``, ``ACCELERATE_CORE_LAUNCH_SOURCES``).
COMMAND_LINE = "command line"
NOTEBOOK_LAUNCHER = "notebook_launcher"
DEFAULT = "default"
# Sources an explicit Accelerator argument may not contradict (it may override the others).
STRICT_SOURCES = frozenset({COMMAND_LINE, NOTEBOOK_LAUNCHER})
OPTION_TYPES = ("bool", "int", "float", "str", "json")
ALIAS_TYPES = ("flag", "bool", "int", "float", "str")  # LaunchAlias.type

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
    LaunchOption(
        "device",
        "a registered device by name (cpu, cuda, a plugin's; accel env lists them); default: "
        "the accelerator torch reports, else cpu",
    ),
    LaunchOption("max-restarts", "restarts of the whole group after a failure (default 0)", "int"),
    LaunchOption(
        "num-cpu-threads-per-process", "OMP_NUM_THREADS of every process (torchrun's: 1)", "int"
    ),
    LaunchOption("monitor-interval", "seconds between torchrun's checks of the processes", "float"),
    LaunchOption("log-dir", "directory of torchrun's per-rank log files (with --tee)", "str"),
    LaunchOption("tee", "copy output to the log files too: 0 none, 1 stdout, 2 stderr, 3 both"),
    LaunchOption("use-parallelism-config", "arrange the processes by a ParallelismConfig", "bool"),
    LaunchOption("parallelism-config-dp-replicate-size", "replicated data-parallel ranks", "int"),
    LaunchOption("parallelism-config-dp-shard-size", "sharded data-parallel (FSDP) ranks", "int"),
    LaunchOption("parallelism-config-tp-size", "tensor-parallel ranks", "int"),
    LaunchOption("parallelism-config-cp-size", "context-parallel ranks", "int"),
    LaunchOption("parallelism-config-cp-backend", "context parallelism backend", "str", ("torch",)),
    LaunchOption(
        "parallelism-config-cp-comm-strategy",
        "how ring attention exchanges keys/values",
        "str",
        ("allgather", "alltoall"),
    ),
)
CORE_OPTIONS_BY_KEY = {option.dest: option for option in CORE_OPTIONS}
CORE_DEFAULTS: dict[str, Any] = {
    "num_machines": 1,
    "machine_rank": 0,
    "main_process_ip": None,
    "main_process_port": None,
    "cpu": False,
    "mixed_precision": None,
    "backend": None,
    "gradient_accumulation_steps": None,
    "device": None,
    "max_restarts": 0,
    "num_cpu_threads_per_process": None,
    "monitor_interval": None,
    "log_dir": None,
    "tee": None,
    "use_parallelism_config": None,
    **dict.fromkeys(PARALLELISM_VARIABLES),
}


def canonical_precision(value: Any) -> str:
    """A mixed-precision name as the registry knows it: ``" BF16"`` and ``PrecisionType.BF16``
    are ``"bf16"``. The one place precision names are normalised."""
    if isinstance(value, Enum):
        value = value.value
    return str(value).strip().lower()


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
    """Check and convert a value of ``option`` from any source (command line, config file,
    questionnaire, environment variable); ``what`` names the source in the error."""
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
            value = str(value.value if isinstance(value, Enum) else value).strip()
        elif kind == "json" and isinstance(value, str):
            value = json.loads(value)
    except (ValueError, TypeError):
        raise ConfigurationError(f"{what}: expected a {kind} value, got {value!r}") from None
    if option.dest == "mixed_precision":
        value = canonical_precision(value)
    if option.choices is not None and value not in option.choices:
        valid = ", ".join(str(c) for c in option.choices)
        raise ConfigurationError(f"{what}: {value!r} is not one of {valid}")
    return value


def plugin_source_key(kind: str, name: str, key: str) -> str:
    """How ``ACCELERATE_CORE_LAUNCH_SOURCES`` names a plugin option (``backend_options.ddp.x``)."""
    return f"{kind}_options.{name}.{key}"


def shell_source(variable: str) -> str:
    """How a value ``accel launch`` read from its own environment is labelled (its source)."""
    return f"environment {variable}"
