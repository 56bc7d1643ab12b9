"""Hugging Face Accelerate's ``--fp8_*`` launch flags and ``fp8_config`` keys, as one recipe.

Every HF name sets a field of the ``FP8Recipe`` that ``--fp8-recipe`` (JSON) carries to the
processes; each alias builds the whole recipe from all the names given, so they agree. What the
recipe cannot express is refused naming what to use instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from accelerate_core import ConfigurationError, LaunchAlias

OPTION = "fp8_recipe"  # the dest of --fp8-recipe
# HF name -> recipe field
FIELDS = {
    "fp8_backend": "backend",
    "fp8_format": "fp8_format",
    "fp8_margin": "margin",
    "fp8_interval": "interval",
    "fp8_amax_history_len": "amax_history_len",
    "fp8_amax_compute_algo": "amax_compute_algo",
    "fp8_opt_level": "opt_level",
    "fp8_enable_fsdp_float8_all_gather": "fsdp_fp8_all_gather",
}
HF_TE_AMAX_COMPUTE_ALGO = "most_recent"  # HF's default for TransformerEngine (the recipe's: max)
BACKENDS = {"ao": "torchao", "te": "te", "msamp": "msamp", "ms-amp": "msamp", "torchao": "torchao"}


def _override(value: Any) -> bool:
    """HF's ``fp8_override_linear_precision``: three booleans (list or "a,b,c")."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    return any(str(p).strip().lower() in ("1", "true", "yes") for p in parts)


def recipe(given: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe HF's fp8 names describe; checked now, so a bad value fails at launch."""
    from .recipe import FP8Recipe  # imports torch, not an fp8 library

    fields: dict[str, Any] = {}
    for name, field in FIELDS.items():
        value = given.get(name)
        if value is None:
            continue
        if name == "fp8_backend":
            key = str(value).strip().lower()
            if key not in BACKENDS:
                raise ConfigurationError(f"fp8_backend {value!r}: valid: ao, te, msamp")
            value = BACKENDS[key]
        elif name == "fp8_format":
            value = str(value).strip().upper()
            if value == "E5M2":
                raise ConfigurationError("fp8_format E5M2 is not available; use HYBRID or E4M3")
        elif name in ("fp8_margin", "fp8_interval", "fp8_amax_history_len"):
            value = int(value)
        elif name == "fp8_enable_fsdp_float8_all_gather":
            value = str(value).strip().lower() in ("1", "true", "yes") if not isinstance(
                value, bool) else value  # fmt: skip
        fields[field] = value
    if given.get("fp8_override_linear_precision") is not None and _override(
        given["fp8_override_linear_precision"]
    ):
        raise ConfigurationError(
            "higher-precision GEMMs per pass are not available; keep sensitive layers in high "
            "precision with the recipe's exclude list (--fp8-recipe '{\"exclude\": [...]}')"
        )
    for name, refusal in (
        ("fp8_use_autocast_during_eval", "fp8 layers run the same way in eval and training"),
        ("fp8_pad_inner_dim", "Linear layers whose sizes are not multiples of 16 stay in high "
         "precision instead of being padded"),
    ):  # fmt: skip
        value = given.get(name)
        if value is not None and str(value).strip().lower() in ("1", "true", "yes"):
            raise ConfigurationError(f"{name} is not available: {refusal}")
    # HF's defaults where they differ from the recipe's, so a launch means what it meant there.
    if fields.get("backend") == "te":
        fields.setdefault("amax_compute_algo", HF_TE_AMAX_COMPUTE_ALGO)
    FP8Recipe.from_dict(fields)  # the recipe's own checks (fields for another backend...)
    return fields


def _translate(value: Any, given: Mapping[str, Any]) -> dict[str, Any]:
    fields = recipe(given)
    return {OPTION: fields} if fields else {}


def aliases() -> list[LaunchAlias]:
    """Every fp8 name of HF Accelerate 1.15."""
    kinds = {
        "fp8_margin": "int",
        "fp8_interval": "int",
        "fp8_amax_history_len": "int",
        "fp8_use_autocast_during_eval": "flag",
    }
    names = [*FIELDS, "fp8_override_linear_precision", "fp8_use_autocast_during_eval",
             "fp8_pad_inner_dim"]  # fmt: skip
    return [
        LaunchAlias(
            name,
            f"--fp8-recipe field {FIELDS.get(name, '(checked)')}",
            kinds.get(name, "str"),
            _translate,
        )
        for name in names
    ]
