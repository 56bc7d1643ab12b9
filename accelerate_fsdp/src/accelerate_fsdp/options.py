"""The user options of the fsdp backend, checked when the ``Accelerator`` is created.

Every option has a flag of ``accel launch`` (``--fsdp-reshard-after-forward``...), built from
``LAUNCH_OPTIONS`` below, so the command line and ``backend_options`` can never drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from accelerate_core import ConfigurationError
from accelerate_core.option_checks import check_option_names

STATE_DICT_TYPES = ("sharded", "full")
DTYPES = ("float32", "bfloat16", "float16")
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
# Unsharded parameters (compute) and gradient reduction dtypes derived from `mixed_precision`.
# Gradients are reduced in fp32: summing bf16/fp16 shards over many ranks loses precision.
PRECISION_DTYPES = {"bf16": ("bfloat16", "float32"), "fp16": ("float16", "float32")}


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass(frozen=True)
class FSDPOptions:
    """What ``Accelerator(backend="fsdp", backend_options={...})`` may set.

    Attributes:
        wrap_classes: class names of the blocks that become their own FSDP unit (a transformer
            layer, say); each unit's parameters are gathered only while it runs. A list or a
            comma-separated string. Default: the model's ``_no_split_modules`` (Hugging Face
            models declare them), else none; an empty list or ``""``: no units by class.
        min_num_params: also make a unit of every sub-module holding at least this many
            parameters not already in a unit (size-based wrapping).
        reshard_after_forward: free gathered parameters after each unit's forward (``True``,
            less memory) or keep them for backward (``False``, less communication); an int
            reshards to that many ranks. Default: torch's (True for units, False for the root).
        cpu_offload: keep sharded parameters, gradients and optimizer state in CPU memory
            (``CPUOffloadPolicy``); the optimizer step then runs on the CPU.
        activation_checkpointing: recompute each unit's activations in backward instead of
            keeping them (needs units: ``wrap_classes`` or ``min_num_params``).
        param_dtype: dtype of the gathered parameters used for compute; default from
            ``mixed_precision`` (bf16 -> bfloat16, fp16 -> float16, else the parameters').
        reduce_dtype: dtype in which gradients are reduced; default float32 under bf16/fp16.
        state_dict_type: how ``save_state`` writes models and optimizers: ``"sharded"`` (each
            rank writes its shards with torch.distributed.checkpoint; fast, no gather) or
            ``"full"`` (gathered to rank 0: ``model_<i>.safetensors`` and ``optimizer_<i>.bin``).
        cpu_ram_efficient_loading: rank 0 holds the real weights, the other ranks may build the
            model on the meta device; weights are broadcast from rank 0 straight into the shards,
            so only one full copy ever exists in CPU memory.
        tp_plan: with ``ParallelismConfig(tp_size > 1)``: ``{module-name pattern: style}``
            (``"layers.*.mlp.up": "colwise"``; styles ``colwise``, ``rowwise``,
            ``colwise_rep``, ``sequence_parallel``, ``replicate`` or torch ``ParallelStyle``
            objects). Default: the plan the model carries (transformers' ``_tp_plan``).
    """

    wrap_classes: tuple[str, ...] | None = None
    min_num_params: int | None = None
    reshard_after_forward: bool | int | None = None
    cpu_offload: bool = False
    activation_checkpointing: bool = False
    param_dtype: str | None = None
    reduce_dtype: str | None = None
    state_dict_type: str = "sharded"
    cpu_ram_efficient_loading: bool = False
    tp_plan: Mapping[str, Any] | None = None

    @classmethod
    def from_mapping(cls, options: dict[str, Any]) -> FSDPOptions:
        """Check ``backend_options``: unknown keys and wrong values name what is valid."""
        check_option_names("fsdp", options, (f.name for f in fields(cls)))
        values = dict(options)
        if "wrap_classes" in values:
            values["wrap_classes"] = _class_names(values["wrap_classes"])
        for name in ("param_dtype", "reduce_dtype"):
            if values.get(name) is not None:
                values[name] = _dtype_name(name, values[name])
        parsed = cls(**values)
        parsed._check()
        return parsed

    def _check(self) -> None:
        def bad(name: str, expected: str) -> ConfigurationError:
            return ConfigurationError(
                f"fsdp option {name} must be {expected}, got {getattr(self, name)!r}"
            )

        for name in ("cpu_offload", "activation_checkpointing", "cpu_ram_efficient_loading"):
            if not _is_bool(getattr(self, name)):
                raise bad(name, "True or False")
        if self.min_num_params is not None and not _is_count(self.min_num_params):
            raise bad("min_num_params", "a positive integer")
        reshard = self.reshard_after_forward
        if not (reshard is None or _is_bool(reshard) or (_is_count(reshard) and reshard >= 2)):
            raise bad("reshard_after_forward", "True, False or a number of ranks >= 2")
        if self.state_dict_type not in STATE_DICT_TYPES:
            raise bad("state_dict_type", " or ".join(repr(t) for t in STATE_DICT_TYPES))
        if self.tp_plan is not None and not isinstance(self.tp_plan, Mapping):
            raise bad("tp_plan", "a mapping of module-name patterns to styles")

    def dtypes(self, mixed_precision: str) -> tuple[str | None, str | None]:
        """(param_dtype, reduce_dtype): the explicit options, else derived from the precision."""
        param, reduce = PRECISION_DTYPES.get(mixed_precision, (None, None))
        return (self.param_dtype or param, self.reduce_dtype or reduce)


def _class_names(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",")]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigurationError(
            f"fsdp option wrap_classes must be class names (a list or a comma-separated "
            f"string), got {value!r}"
        )
    return tuple(v for v in value if v)  # empty: no units by class (HF's SIZE_BASED/NO_WRAP)


def _dtype_name(option: str, value: Any) -> str:
    name = str(value).removeprefix("torch.")
    name = _DTYPE_ALIASES.get(name, name)
    if name not in DTYPES:
        raise ConfigurationError(
            f"fsdp option {option} must be one of {', '.join(DTYPES)}, got {value!r}"
        )
    return name


@dataclass(frozen=True)
class _Flag:
    key: str
    type: str
    help: str
    choices: tuple[str, ...] | None = None


# One `accel launch --fsdp-<key>` flag per option (names with dashes).
LAUNCH_OPTIONS = (
    _Flag("wrap_classes", "str", "comma-separated class names of the blocks sharded as units"),
    _Flag("min_num_params", "int", "also shard as a unit every sub-module with this many params"),
    _Flag("reshard_after_forward", "bool", "free gathered parameters after each forward"),
    _Flag("cpu_offload", "bool", "keep sharded parameters, gradients and optimizer state on CPU"),
    _Flag("activation_checkpointing", "bool", "recompute the units' activations in backward"),
    _Flag("param_dtype", "str", "dtype of gathered parameters (default from precision)", DTYPES),
    _Flag("reduce_dtype", "str", "dtype of gradient reduction (default from precision)", DTYPES),
    _Flag("state_dict_type", "str", "save_state format", STATE_DICT_TYPES),
    _Flag("cpu_ram_efficient_loading", "bool", "load weights on rank 0 only and broadcast them"),
    _Flag("tp_plan", "json", "tensor-parallel plan {module pattern: style} (default: the model's)"),
)
