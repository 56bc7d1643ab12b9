"""Starting several processes from Python: ``notebook_launcher`` and failure reports.

``notebook_launcher(fn, args, num_processes)`` runs ``fn`` on N processes through torch's elastic
launcher (``torch.distributed.launcher.api.elastic_launch``, the engine of torchrun), so a
notebook gets the same processes, environment and failure handling as ``accel launch``.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from .errors import AccelerateCoreError, ConfigurationError
from .launch_options import (
    LAUNCH_VARIABLES,
    NOTEBOOK_LAUNCHER,
    SETTING_VARIABLES,
    SHELL_SETTINGS,
    canonical_precision,
    plugin_source_key,
    shell_source,
)
from .launch_settings import LaunchConfig, default_num_processes
from .plugins import collect_launch_options
from .state import PartialState

# torchrun's c10d rendezvous shares its TCP store with the ranks and keeps it over restarts,
# while the ranks use it under no prefix of their attempt: those of a restart read the addresses
# their predecessors published and fail to connect ("Gloo connectFullMesh failed ... Connection
# refused", most restarts of 2 CPU ranks). Without the sharing, rank 0 of every attempt hosts a
# new store on a new port: restarts form their group every time.
NO_SHARED_STORE = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
ACCEL_TIME_KEY = "accelerate_core_time"  # written by cli/worker.py with the failure
PRINTED_KEY = "accelerate_core_printed"


class LaunchFailedError(AccelerateCoreError, RuntimeError):
    """A process of a launch failed; the message starts with the first failure's traceback."""

    def __init__(self, message: str, exitcode: int = 1) -> None:
        super().__init__(message)
        self.exitcode = exitcode


@contextmanager
def launch_environment(variables: Mapping[str, str]) -> Iterator[None]:
    """Set the launch's variables (clearing stale ones) for the block, then restore."""
    saved = {name: os.environ.get(name) for name in (*LAUNCH_VARIABLES, *variables)}
    for name in LAUNCH_VARIABLES:
        os.environ.pop(name, None)
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _extra(failure: Any) -> dict[str, Any]:
    message = (failure.error_file_data or {}).get("message")
    return message.get("extraInfo", {}) if isinstance(message, dict) else {}


_STOP_SIGNAL = -int(signal.SIGTERM)  # how the launch stops the ranks left when one failed
# What a death by signal usually means, said with the signal's name.
SIGNAL_HINTS = {
    "SIGKILL": "out of memory? the kernel's OOM killer sends SIGKILL; see dmesg",
    "SIGSEGV": "a crash in native code",
    "SIGABRT": "aborted by native code",
    "SIGBUS": "a bus error: a memory-mapped file that shrank, or /dev/shm too small?",
    "SIGILL": "an illegal instruction: a library built for another CPU?",
    "SIGFPE": "an arithmetic error in native code",
}


def signal_name(failure: Any) -> str:
    try:
        return signal.Signals(-failure.exitcode).name
    except ValueError:
        return f"signal {-failure.exitcode}"


def _failure_order(failure: Any) -> tuple[bool, float]:
    """Sort key: first failure first; ranks the launch itself stopped (SIGTERM) come last.

    A rank that raised carries the exact time (written by ``cli/worker.py``). Any other failure
    carries only the whole second torch noticed it in (within its 0.1 s monitor interval): a
    death by another signal (SIGKILL from the OOM killer, SIGSEGV) is put at the start of the
    second before, so that the errors its peers raise once it is gone ("Connection reset") come
    after it, while a rank killed long after a failure (the launch's SIGKILL 30 s after its
    SIGTERM was ignored) still comes after that failure.
    """
    extra = _extra(failure)
    if ACCEL_TIME_KEY in extra:
        return (False, float(extra[ACCEL_TIME_KEY]))
    if failure.exitcode == _STOP_SIGNAL:
        return (True, float(failure.timestamp))
    if failure.exitcode < 0:
        return (False, float(failure.timestamp) - 1.0)
    return (False, float(failure.timestamp) + 1.0)


# What torch records as the message of a process that wrote no error file.
NO_ERROR_FILE_MESSAGE = "<NONE>"


def _failure_traceback(failure: Any) -> str | None:
    message = (failure.error_file_data or {}).get("message")
    if isinstance(message, dict):
        return message.get("extraInfo", {}).get("py_callstack") or message.get("message")
    if not isinstance(message, str) or message in ("", NO_ERROR_FILE_MESSAGE):
        return None
    return message


def _how(failure: Any) -> str:
    if failure.exitcode >= 0:
        return f"exited with code {failure.exitcode}"
    name = signal_name(failure)
    hint = SIGNAL_HINTS.get(name)
    return f"was killed by {name}" + (f" ({hint})" if hint else "")


def describe_failure(error: Any) -> tuple[str, int]:
    """A report of torch's ``ChildFailedError``: the first failure's traceback, then the rest.

    Returns the text and the exit code the launch should end with: the first failure's, or
    128 + the signal that killed it (as a shell reports a process killed by a signal).
    """
    failures = sorted(error.failures.items(), key=lambda item: _failure_order(item[1]))
    rank, first = failures[0]
    lines = [
        f"rank {rank} (local rank {first.local_rank}, pid {first.pid}) failed first: it "
        f"{_how(first)}"
    ]
    trace = _failure_traceback(first)
    if trace and _extra(first).get(PRINTED_KEY):
        lines[0] += f": {trace.strip().splitlines()[-1]} (its traceback is printed above)"
    elif trace:
        lines.append(trace.rstrip())
    elif first.exitcode < 0:
        lines.append("(no traceback: the process was killed, it did not raise in Python)")
    else:
        lines.append("(no traceback recorded: the process exited without raising in Python)")
    if len(failures) > 1:
        lines.append("the other ranks ended after it:")
        for other_rank, failure in failures[1:]:
            if failure.exitcode == _STOP_SIGNAL:
                detail = "stopped by the launch (SIGTERM)"
            elif failure.exitcode < 0:
                detail = f"killed by {signal_name(failure)}"
            else:
                detail = f"exit code {failure.exitcode}"
            text = _failure_traceback(failure)
            summary = text.strip().splitlines()[-1][:200] if text else ""
            lines.append(f"  rank {other_rank}: {detail}" + (f" ({summary})" if summary else ""))
    exitcode = first.exitcode if first.exitcode > 0 else 128 + abs(first.exitcode) or 1
    return "\n".join(lines), exitcode


def notebook_launcher(
    function: Callable[..., Any],
    args: Sequence[Any] = (),
    num_processes: int | None = None,
    *,
    cpu: bool | None = None,
    mixed_precision: str | None = None,
    backend: str | None = None,
    gradient_accumulation_steps: int | None = None,
    backend_options: Mapping[str, Any] | None = None,
    max_restarts: int = 0,
    start_method: str = "fork",
) -> list[Any]:
    """Run ``function(*args)`` on ``num_processes`` processes of this machine; return each rank's.

    Meant for notebooks, where ``accel launch`` cannot start a script: the function (which
    creates its ``Accelerator``) runs in every process with the launch's settings in the
    environment, exactly as under ``accel launch``. ``num_processes`` defaults to one per
    accelerator (one on CPU); one process runs ``function`` here, in this process.

    ``start_method="fork"`` (the default) works with functions defined in a notebook cell;
    it is refused once CUDA is initialised here, since forked processes cannot use it.
    ``"spawn"`` needs a function importable from a module. ``backend_options`` are passed to
    the selected backend as if given on the command line.
    """
    if PartialState._shared_state.get("initialized"):
        raise ConfigurationError(
            "an Accelerator (or PartialState) was already created in this process, so "
            "notebook_launcher cannot give the new processes their own; create the Accelerator "
            "inside the launched function and restart the kernel"
        )
    if num_processes is None:
        num_processes = default_num_processes(bool(cpu))
    if num_processes < 1:
        raise ConfigurationError(f"num_processes must be >= 1, got {num_processes}")
    config = _notebook_config(
        num_processes,
        cpu=cpu,
        mixed_precision=mixed_precision,
        backend=backend,
        gradient_accumulation_steps=gradient_accumulation_steps,
        backend_options=backend_options,
    )
    variables = config.environment()
    if num_processes == 1:
        with launch_environment(variables):
            return [function(*args)]
    if start_method == "fork":
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            raise ConfigurationError(
                "CUDA is already initialised in this process (something ran on the GPU before "
                "notebook_launcher), and forked processes cannot use it: restart the kernel and "
                "keep every GPU use inside the launched function, or pass start_method='spawn' "
                "with a function importable from a module"
            )
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig as ElasticConfig
    from torch.distributed.launcher.api import elastic_launch

    elastic = ElasticConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=num_processes,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=max_restarts,
        monitor_interval=0.1,
        start_method=start_method,
        logs_specs=DefaultLogsSpecs(),
    )
    threads = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with launch_environment({**threads, **NO_SHARED_STORE, **variables}):
        try:
            results = elastic_launch(elastic, function)(*args)
        except ChildFailedError as exc:
            text, code = describe_failure(exc)
            raise LaunchFailedError(f"notebook_launcher: {text}", code) from None
    return [results[rank] for rank in sorted(results)]


def debug_launcher(
    function: Callable[..., Any], args: Sequence[Any] = (), num_processes: int = 2
) -> list[Any]:
    """Run ``function(*args)`` on ``num_processes`` CPU processes (HF's name, for debugging)."""
    return notebook_launcher(function, args, num_processes, cpu=True)


def _notebook_config(num_processes: int, **settings: Any) -> LaunchConfig:
    options = collect_launch_options()
    backend_options = settings.pop("backend_options") or {}
    config = LaunchConfig(num_processes=num_processes, options=options)
    for key in SHELL_SETTINGS:  # as accel launch: the device exported in this process goes on
        value = os.environ.get(SETTING_VARIABLES[key], "").strip()
        if value:
            setattr(config, key, value)
            config.sources[key] = shell_source(SETTING_VARIABLES[key])
    for key, value in settings.items():
        if value is not None:
            setattr(config, key, canonical_precision(value) if key == "mixed_precision" else value)
            config.sources[key] = NOTEBOOK_LAUNCHER
    if backend_options:
        if config.backend is None:
            raise ConfigurationError(
                "notebook_launcher(backend_options=...) needs backend= naming the backend they "
                "are for"
            )
        config.extra_backend_options = {config.backend: dict(backend_options)}
        for key in backend_options:
            config.sources[plugin_source_key("backend", config.backend, key)] = NOTEBOOK_LAUNCHER
    return config


__all__ = ["LaunchFailedError", "notebook_launcher"]
