"""Config files: where ``accel config`` writes and ``accel launch`` reads, and their checks.

A config file is plain YAML (``yaml.safe_load``), one ``key: value`` per launch option, dash or
underscore spellings; unknown keys and wrong types are errors naming the fix. Default location:
``ACCELERATE_CORE_CONFIG_FILE``, else ``$XDG_CACHE_HOME/accelerate_core/default_config.yaml``
(``XDG_CACHE_HOME`` defaulting to ``~/.cache``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigurationError
from .launch_aliases import flatten_hf_config, translate_aliases
from .launch_options import CONFIG_FILE_ENV, coerce
from .specs import LaunchAlias, LaunchOption


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


def load_config_file(
    path: str | os.PathLike[str],
    options: Iterable[LaunchOption],
    aliases: Iterable[LaunchAlias] = (),
) -> dict:
    """Read and check a YAML config: unknown keys and wrong types are errors naming the fix.

    Keys of Hugging Face Accelerate's config files (``distributed_type``, ``fsdp_config``...) are
    translated by their ``aliases`` into option values, so an ``accelerate config`` file works.
    """
    data = read_yaml_mapping(path)
    options = list(options)
    aliases = list(aliases)
    by_key = {o.dest: o for o in options}
    alias_names = {a.name for a in aliases}
    flat = flatten_hf_config(data)
    unknown = sorted(k for k in flat if k not in by_key and k not in alias_names)
    if unknown:
        raise ConfigurationError(
            f"unknown key(s) {', '.join(unknown)} in config file {str(path)!r}; valid keys: "
            f"{', '.join(sorted(by_key))} (installed plugins add their own), and the Hugging "
            "Face Accelerate keys installed plugins map (accel launch --help lists them)"
        )
    # A key that is both an option and an HF name is read as HF's (its translation takes both).
    given = {k: v for k, v in flat.items() if k in alias_names}
    values = {k: v for k, v in flat.items() if k in by_key and k not in given and v is not None}
    where = f"config file {path}"
    translated, origin = translate_aliases(given, aliases, where, context=values)
    values = merge_translated(values, translated, origin, options, where)
    return {k: coerce(by_key[k], v, f"{path}: {k}") for k, v in values.items()}


def merge_translated(
    values: Mapping[str, Any],
    translated: Mapping[str, Any],
    origin: Mapping[str, str],
    options: Iterable[LaunchOption],
    where: str,
) -> dict[str, Any]:
    """Option values plus those HF names stood for; the same option set twice differently
    (``backend: ddp`` with ``distributed_type: FSDP``) is an error naming both."""
    by_key = {o.dest: o for o in options}
    merged = dict(values)
    for key, value in translated.items():
        name = origin[key]
        spelled = f"--{name}" if where == "command line" else f"{where}: {name}"
        option = by_key.get(key)
        if option is None:
            raise ConfigurationError(
                f"{spelled} sets {key}, which no installed plugin offers (accel env lists them)"
            )
        if key in merged and coerce(option, merged[key], key) != coerce(option, value, key):
            mine = f"--{option.name}" if where == "command line" else f"{where}: {key}"
            raise ConfigurationError(
                f"{spelled} means {key}={value!r} but {mine} is {merged[key]!r}; drop one of them"
            )
        merged[key] = value
    return merged


def read_yaml_mapping(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML (or JSON: HF's ``accelerate config default``) file holding a mapping."""
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
    return data


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
