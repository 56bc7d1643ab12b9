"""``FP8Recipe``: the one description of an fp8 run, whatever library executes it.

Users pass it (or a plain dict with the same keys) as
``Accelerator(mixed_precision="fp8", precision_options={"fp8": FP8Recipe(...)})``. Every value is
checked when the recipe is built, so a typo fails at ``Accelerator(...)``, not after an hour of
training; a field that only one backend reads is an error when set for another backend instead of
being silently ignored.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from dataclasses import replace as _replace
from typing import Any

import torch

from accelerate_core.errors import ConfigurationError
from accelerate_core.option_checks import check_option_names

RECIPE_KEY = "fp8"
BACKENDS = ("torchao", "te", "msamp")
BACKEND_ALIASES = {
    "ao": "torchao",
    "transformer_engine": "te",
    "transformer-engine": "te",
    "transformerengine": "te",
    "ms-amp": "msamp",
    "ms_amp": "msamp",
}
FP8_FORMATS = ("HYBRID", "E4M3")
AUTOCAST_DTYPES = ("bf16", "fp32")
TORCHAO_SCALINGS = ("tensorwise", "rowwise")
AMAX_COMPUTE_ALGOS = ("max", "most_recent")
OPT_LEVELS = ("O1", "O2")

# Fields read by one backend only; setting them to a non-default value for another is an error.
BACKEND_FIELDS = {
    "scaling": ("torchao",),
    "fsdp_fp8_all_gather": ("torchao",),
    "margin": ("te",),
    "interval": ("te",),
    "amax_history_len": ("te",),
    "amax_compute_algo": ("te",),
    "opt_level": ("msamp",),
}
BACKEND_LABELS = {"torchao": "torchao", "te": "TransformerEngine", "msamp": "MS-AMP"}

ModuleFilter = Callable[[torch.nn.Module, str], bool]


def _choice(field: str, value: Any, valid: Sequence[str], normalise: Callable[[str], str]) -> str:
    if isinstance(value, str) and normalise(value) in valid:
        return normalise(value)
    raise ConfigurationError(
        f"FP8Recipe.{field}={value!r} is not valid; valid values: {', '.join(map(repr, valid))}"
    )


def _integer(field: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(
            f"FP8Recipe.{field} must be an integer >= {minimum}, got {value!r}"
        )
    return value


def _flag(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"FP8Recipe.{field} must be True or False, got {value!r}")
    return value


@dataclass(frozen=True)
class FP8Recipe:
    """How to train in fp8: which library, which formats and scaling, which layers.

    Attributes:
        backend: ``"torchao"`` (default; CPU and NVIDIA ≥ sm89 / AMD MI300), ``"te"``
            (TransformerEngine, NVIDIA ≥ sm89) or ``"msamp"`` (MS-AMP, NVIDIA ≥ sm80).
        fp8_format: ``"HYBRID"`` (e4m3 forward, e5m2 gradients) or ``"E4M3"`` (e4m3 everywhere);
            ``None`` takes the backend's own recipe: HYBRID for torchao tensorwise and
            TransformerEngine, E4M3 for torchao rowwise; MS-AMP always runs HYBRID.
        autocast_dtype: precision of everything that is not an fp8 Linear (norms, activations,
            attention, the loss): ``"bf16"`` (default, torch.autocast) or ``"fp32"``.
        skip_first_last: keep the first and the last ``nn.Linear`` (in ``named_modules`` order) in
            high precision; they are the most sensitive to quantisation (input projection, head).
        exclude: Linear layers whose qualified name contains one of these strings stay in high
            precision.
        module_filter: ``filter(module, qualified_name) -> bool``; a Linear is converted only when
            it also returns True. Applies on top of the rules above. Linears whose dimensions are
            not multiples of 16 are never converted (the fp8 matmul kernels require it).
        scaling: torchao only: ``"tensorwise"`` (fastest) or ``"rowwise"`` (more accurate).
        fsdp_fp8_all_gather: torchao only: all-gather fp8 weights under FSDP2 (tensorwise only).
        margin, interval, amax_history_len, amax_compute_algo: TransformerEngine only: its
            ``DelayedScaling`` recipe (``amax_compute_algo`` is ``"max"`` or ``"most_recent"``;
            ``interval`` exists only in TransformerEngine < 2 and must stay 1 with newer ones).
        opt_level: MS-AMP only: ``"O1"`` (fp8 weights and gradients) or ``"O2"`` (also fp8/fp16
            optimizer states).
    """

    backend: str = "torchao"
    fp8_format: str | None = None
    autocast_dtype: str = "bf16"
    skip_first_last: bool = True
    exclude: tuple[str, ...] = ()
    module_filter: ModuleFilter | None = None
    scaling: str = "tensorwise"
    fsdp_fp8_all_gather: bool = False
    margin: int = 0
    interval: int = 1
    amax_history_len: int = 1024
    amax_compute_algo: str = "max"
    opt_level: str = "O2"

    def __post_init__(self) -> None:
        def set_(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        backend = self.backend
        if isinstance(backend, str):
            backend = BACKEND_ALIASES.get(backend.strip().lower(), backend.strip().lower())
        set_("backend", _choice("backend", backend, BACKENDS, str))
        if self.fp8_format is not None:
            set_("fp8_format", _choice("fp8_format", self.fp8_format, FP8_FORMATS, str.upper))
        set_(
            "autocast_dtype",
            _choice("autocast_dtype", self.autocast_dtype, AUTOCAST_DTYPES, str.lower),
        )
        set_("skip_first_last", _flag("skip_first_last", self.skip_first_last))
        exclude = self.exclude
        if isinstance(exclude, str) or not all(isinstance(s, str) for s in exclude or ()):
            raise ConfigurationError(
                "FP8Recipe.exclude takes a list of name fragments (say ['lm_head', 'router']), "
                f"got {exclude!r}"
            )
        set_("exclude", tuple(exclude or ()))
        if self.module_filter is not None and not callable(self.module_filter):
            raise ConfigurationError(
                "FP8Recipe.module_filter must be a callable filter(module, name) -> bool or None, "
                f"got {self.module_filter!r}"
            )
        set_("scaling", _choice("scaling", self.scaling, TORCHAO_SCALINGS, str.lower))
        set_("fsdp_fp8_all_gather", _flag("fsdp_fp8_all_gather", self.fsdp_fp8_all_gather))
        set_("margin", _integer("margin", self.margin, 0))
        set_("interval", _integer("interval", self.interval, 1))
        set_("amax_history_len", _integer("amax_history_len", self.amax_history_len, 1))
        set_(
            "amax_compute_algo",
            _choice("amax_compute_algo", self.amax_compute_algo, AMAX_COMPUTE_ALGOS, str.lower),
        )
        set_("opt_level", _choice("opt_level", self.opt_level, OPT_LEVELS, str.upper))
        self._check_backend_fields()

    def _check_backend_fields(self) -> None:
        defaults = {f.name: f.default for f in fields(FP8Recipe)}
        for name, backends in BACKEND_FIELDS.items():
            if self.backend not in backends and getattr(self, name) != defaults[name]:
                owner = " or ".join(f"backend={b!r}" for b in backends)
                raise ConfigurationError(
                    f"FP8Recipe.{name} applies to {owner} only ({BACKEND_LABELS[backends[0]]}) "
                    f"but backend={self.backend!r} is selected; remove {name} or select {owner}"
                )
        if self.fsdp_fp8_all_gather and self.scaling != "tensorwise":
            raise ConfigurationError(
                "FP8Recipe.fsdp_fp8_all_gather needs scaling='tensorwise' (torchao all-gathers "
                f"fp8 weights with one scale per tensor), got scaling={self.scaling!r}"
            )
        if self.backend == "msamp" and self.fp8_format not in (None, "HYBRID"):
            raise ConfigurationError(
                "MS-AMP always casts forward tensors to e4m3 and gradients to e5m2 (HYBRID); "
                f"fp8_format={self.fp8_format!r} cannot be honoured; leave fp8_format unset"
            )

    @property
    def effective_fp8_format(self) -> str:
        """The format the backend will actually use (``fp8_format`` or the backend's own)."""
        if self.fp8_format is not None:
            return self.fp8_format
        if self.backend == "torchao" and self.scaling == "rowwise":
            return "E4M3"
        return "HYBRID"

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> FP8Recipe:
        """Build a recipe from a plain dict; unknown keys are errors naming the valid ones."""
        valid = [f.name for f in fields(cls)]
        unknown = [key for key in values if key not in valid]
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(str(key), valid, n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ConfigurationError(
                f"unknown fp8 recipe field(s) {', '.join(hints)}; valid fields: {', '.join(valid)}"
            )
        return cls(**dict(values))

    def replace(self, **changes: Any) -> FP8Recipe:
        """A copy with some fields changed (validated again)."""
        return _replace(self, **changes)


FIELD_NAMES = frozenset(f.name for f in fields(FP8Recipe))


# What ``precision_options`` may hold under fp8: the recipe, and the AutocastKwargs /
# GradScalerKwargs entries that scripts written for fp16/bf16 pass along.
PRECISION_OPTION_KEYS = (RECIPE_KEY, "autocast", "grad_scaler")


def check_precision_options(options: Mapping[str, Any]) -> FP8Recipe:
    """Check ``precision_options`` under fp8 (asked once at ``Accelerator`` creation)."""
    recipe = recipe_from_options(options)
    check_option_names("fp8", options, PRECISION_OPTION_KEYS)
    return recipe


def recipe_from_options(options: Mapping[str, Any]) -> FP8Recipe:
    """The recipe in ``Accelerator(precision_options=...)``: ``{"fp8": FP8Recipe | dict}``.

    No ``"fp8"`` key means the default recipe (torchao, tensorwise, bf16 elsewhere).
    """
    misplaced = sorted(FIELD_NAMES & set(options))
    if misplaced:
        raise ConfigurationError(
            f"precision_options has fp8 recipe field(s) {', '.join(misplaced)} at the top level; "
            f"put them under the {RECIPE_KEY!r} key: precision_options={{'fp8': {{...}}}} or "
            "precision_options={'fp8': FP8Recipe(...)}"
        )
    value = options.get(RECIPE_KEY)
    if value is None:
        return FP8Recipe()
    if isinstance(value, FP8Recipe):
        return value
    if isinstance(value, Mapping):
        return FP8Recipe.from_dict(value)
    raise ConfigurationError(
        f"precision_options['fp8'] must be an FP8Recipe or a dict of its fields, got "
        f"{type(value).__name__}"
    )
