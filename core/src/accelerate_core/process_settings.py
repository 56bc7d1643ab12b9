"""Inside a training process: the settings ``accel launch`` handed over, against explicit ones.

The order is: explicit ``Accelerator(...)`` argument > launch > config file > default. An explicit
argument that contradicts an option given on the ``accel launch`` command line (or to
``notebook_launcher``) is a ``ConfigurationError`` naming both values; one that differs from a
config-file value simply wins (the file is a default, the script is specific).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from .errors import ConfigurationError, EnvironmentDetectionError
from .launch_options import (
    COMMAND_LINE,
    CORE_OPTIONS_BY_KEY,
    LAUNCH_SOURCES_ENV,
    NOTEBOOK_LAUNCHER,
    NUM_PROCESSES_ENV,
    OPTIONS_VARIABLES,
    SETTING_VARIABLES,
    STRICT_SOURCES,
    coerce,
    plugin_source_key,
)


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


def launch_setting(name: str, explicit: Any, environ: Mapping[str, str] | None = None) -> Any:
    """``explicit`` if given, else the launch's value from the environment, else ``None``.

    An explicit value that differs from one given on the ``accel launch`` command line is an
    error naming both; one that differs from a config-file or shell value wins.
    """
    environ = os.environ if environ is None else environ
    option = CORE_OPTIONS_BY_KEY[name]
    variable = SETTING_VARIABLES[name]
    raw = environ.get(variable)
    launched = coerce(option, raw, variable) if raw not in (None, "") else None
    if explicit is None:
        return launched
    contradicts = launched is not None and _comparable(option, explicit) != launched
    source = _sources(environ).get(name)
    if contradicts and source in STRICT_SOURCES:
        if source == COMMAND_LINE:
            flag = "--" + name.replace("_", "-")
            shown = "`accel launch " + (flag if name == "cpu" else f"{flag} {launched}") + "`"
        else:
            shown = f"notebook_launcher({name}={launched!r})"
        field_name = name.removeprefix("parallelism_config_")
        owner = "Accelerator" if field_name == name else "ParallelismConfig"
        raise ConfigurationError(
            f"{owner}({field_name}={explicit!r}) contradicts {shown}; remove the argument from "
            "the script or the option from the launch"
        )
    return explicit


def _comparable(option: Any, explicit: Any) -> Any:
    """``explicit`` parsed like the launch's value; as given when it does not parse (the
    argument's own check reports that)."""
    try:
        return coerce(option, explicit, option.dest)
    except ConfigurationError:
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
    launched = dict(_options_from_env(OPTIONS_VARIABLES[kind], environ).get(selected, {}))
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
