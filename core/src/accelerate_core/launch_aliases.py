"""Hugging Face Accelerate's launch flags and config keys, as ``accel launch`` settings.

Plugins return ``LaunchAlias`` records (``accelerate_core_launch_aliases``): the core maps HF's
general names (``--multi_gpu``, ``--tee``, ``distributed_type``...), each backend the names that
concern it (``--use_fsdp``, ``--fsdp_*``; ``--use_deepspeed``, ``--zero3_*``; ``--fp8_*``). This
module reads their values, asks each record for the settings it gives, and refuses two names that
set one option differently. An HF config file (what ``accelerate config`` writes) is flattened
the way HF's launcher flattens it (``fsdp_config: {offload_params: x}`` is ``fsdp_offload_params``)
and read through the same records, so a flag and a key can never mean different things.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .errors import ConfigurationError
from .launch_options import parse_bool
from .specs import LaunchAlias

Translate = Callable[[Any, Mapping[str, Any]], Mapping[str, Any]]

# HF's `distributed_type` stands for the flags its launcher derives from it.
DISTRIBUTED_TYPE_FLAGS = {
    "NO": (),
    "MULTI_CPU": ("multi_cpu",),
    "DEEPSPEED": ("use_deepspeed",),
    "FSDP": ("use_fsdp",),
    "XLA": ("tpu",),
    "TPU": ("tpu",),
    "MEGATRON_LM": ("use_megatron_lm",),
}
MULTI_DEVICE_TYPES = ("GPU", "NPU", "MLU", "SDAA", "MUSA", "XPU", "HPU", "NEURON")
# HF config sections whose keys its launcher prefixes when it flattens them.
SECTION_PREFIXES = {"fsdp_config": "fsdp_", "fp8_config": "fp8_", "dynamo_config": "dynamo_"}
HF_SECTIONS = (
    "fsdp_config",
    "fp8_config",
    "dynamo_config",
    "deepspeed_config",
    "megatron_lm_config",
    "parallelism_config",
    "ipex_config",
    "mpirun_config",
)


def parse_alias_value(alias: LaunchAlias, value: Any, what: str) -> Any:
    """Read a value of ``alias`` from the command line or a file (HF writes ``"true"``)."""
    if value is None:
        return None
    if alias.type in ("flag", "bool"):
        return parse_bool(value, what)
    try:
        if alias.type == "int":
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if alias.type == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{what}: expected a {alias.type} value, got {value!r}") from None
    return value if isinstance(value, (list, dict)) else str(value).strip()


def distributed_type_names(value: Any, what: str) -> tuple[str, ...]:
    """The HF flags a ``distributed_type`` value stands for (``FSDP`` -> ``use_fsdp``)."""
    text = str(getattr(value, "value", value)).strip().upper()
    if text in DISTRIBUTED_TYPE_FLAGS:
        return DISTRIBUTED_TYPE_FLAGS[text]
    if text.startswith("MULTI_") and text.removeprefix("MULTI_") in MULTI_DEVICE_TYPES:
        return ("multi_gpu",)
    valid = sorted({*DISTRIBUTED_TYPE_FLAGS, *(f"MULTI_{t}" for t in MULTI_DEVICE_TYPES)})
    raise ConfigurationError(
        f"{what}: unknown distributed_type {value!r}; valid: {', '.join(valid)}"
    )


def flatten_hf_config(data: Mapping[str, Any]) -> dict[str, Any]:
    """An HF config mapping as HF's launcher reads it: sections flattened, keys with underscores.

    ``distributed_type`` stays (its alias checks the value) and adds the flags it stands for.
    """
    flat: dict[str, Any] = {}
    for key, value in data.items():
        key = str(key).replace("-", "_")
        if key in HF_SECTIONS and isinstance(value, Mapping):
            prefix = SECTION_PREFIXES.get(key, "")
            for inner, inner_value in value.items():
                inner = str(inner).replace("-", "_")
                if prefix and not inner.startswith(prefix):
                    inner = prefix + inner
                flat[inner] = inner_value
        elif key in HF_SECTIONS and value in (None, {}):
            continue
        else:
            flat[key] = value
    if "distributed_type" in flat:
        for name in distributed_type_names(flat["distributed_type"], "distributed_type"):
            flat.setdefault(name, True)
    return flat


def translate_aliases(
    given: Mapping[str, Any],
    aliases: Iterable[LaunchAlias],
    where: str,
    context: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings HF names in ``given`` stand for: ``({option key: value}, {key: HF name})``.

    ``given`` holds raw values by HF name; ``context`` adds this source's own option values
    (``num_processes``...) for names whose meaning depends on them. ``where`` names the source in
    errors ("--fsdp_offload_params", "config file x.yaml: fsdp_offload_params").
    """
    by_name = {alias.name: alias for alias in aliases}
    values = {
        name: parse_alias_value(by_name[name], value, _spelled(where, name))
        for name, value in given.items()
    }
    seen = {**(context or {}), **values}
    settings: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name, value in values.items():
        alias = by_name[name]
        if value is None:  # HF writes unset keys as null: its default
            continue
        if alias.translate is None:
            raise ConfigurationError(
                f"{_spelled(where, name)} (Hugging Face Accelerate) is not supported: "
                f"{alias.instead}"
            )
        try:
            produced = alias.translate(value, seen)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{_spelled(where, name)}={value!r}: {exc}") from None
        for key, setting in produced.items():
            if key in settings and settings[key] != setting:
                raise ConfigurationError(
                    f"{_spelled(where, origin[key])} and {_spelled(where, name)} contradict each "
                    f"other: they set {key} to {settings[key]!r} and {setting!r}; drop one"
                )
            settings[key] = setting
            origin.setdefault(key, name)
    return settings, origin


def unknown_names(
    names: Iterable[str], aliases: Iterable[LaunchAlias], known: Iterable[str]
) -> list[str]:
    """Names that are neither an option key nor an HF name any installed plugin maps."""
    valid = {*known, *(a.name for a in aliases)}
    return sorted(n for n in names if n not in valid)


def _spelled(where: str, name: str) -> str:
    return f"--{name}" if where == "command line" else f"{where}: {name}"


# --------------------------------------------------------------------------- helpers for plugins


def sets(key: str, convert: Callable[[Any], Any] | None = None) -> Translate:
    """A translation that passes the value on to the option ``key`` (converted if asked)."""

    def translate(value: Any, given: Mapping[str, Any]) -> dict[str, Any]:
        return {key: convert(value) if convert is not None else value}

    return translate


def accepts(
    allowed: Iterable[Any], instead: str, gives: Mapping[str, Any] | None = None
) -> Translate:
    """A translation that accepts only ``allowed`` values (compared case-insensitively for text),
    which give ``gives``, and refuses every other value with ``instead``."""
    normalised = {_norm(v) for v in allowed}

    def translate(value: Any, given: Mapping[str, Any]) -> dict[str, Any]:
        if _norm(value) not in normalised:
            raise ConfigurationError(f"not supported: {instead}")
        return dict(gives or {})

    return translate


def _norm(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip().lower()
    if isinstance(value, (list, tuple)):
        return tuple(_norm(v) for v in value)
    return value
