"""``accel estimate-memory``: a model built on the meta device, and what training it takes.

The model comes from a Python path (``package.module:build``, a callable or class returning an
``nn.Module``) or a transformers config on disk (a ``config.json`` or a directory holding one;
nothing is downloaded). It is built under ``torch.device("meta")``: shapes without memory.
Two tables come out: Hugging Face Accelerate's (largest layer, total size, "training using
Adam" per dtype, with HF's formulas) and the model state each rank holds under every installed
backend, setting and precision (``accelerate_core_estimate_memory``).
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigurationError
from .memory_formulas import ParameterInfo
from .plugins import get_plugin_manager
from .specs import MemoryEstimate

HF_DTYPES = {"float32": 1, "float16": 2, "int8": 4, "int4": 8}  # divisor of the fp32 size


def build_meta_model(spec: str) -> torch.nn.Module:
    """The model ``spec`` names, on the meta device (see the module docstring)."""
    path = Path(spec)
    if path.is_dir() and (path / "config.json").is_file():
        return _from_transformers_config(path)
    if path.suffix == ".json" and path.is_file():
        return _from_transformers_config(path)
    if ":" in spec and not path.exists():
        module_name, _, attribute = spec.partition(":")
        if str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))
        try:
            target: Any = importlib.import_module(module_name)
            for part in attribute.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError) as exc:
            raise ConfigurationError(f"cannot import {spec!r}: {exc}") from exc
        with torch.device("meta"):
            model = target()
        if not isinstance(model, torch.nn.Module):
            raise ConfigurationError(f"{spec} returned {type(model).__name__}, not an nn.Module")
        return model
    raise ConfigurationError(
        f"{spec!r} is neither module:callable nor a transformers config on disk (config.json or "
        "a directory holding one); models are never downloaded"
    )


def _from_transformers_config(path: Path) -> torch.nn.Module:
    try:
        import transformers
    except ImportError as exc:
        raise ConfigurationError(
            "a transformers config needs transformers: pip install transformers"
        ) from exc
    file = path / "config.json" if path.is_dir() else path
    data = json.loads(file.read_text())
    config = transformers.AutoConfig.for_model(**data)
    architectures = data.get("architectures") or []
    model_class = getattr(transformers, architectures[0], None) if architectures else None
    with torch.device("meta"):
        if model_class is not None:
            return model_class(config)
        return transformers.AutoModel.from_config(config)


def parameter_infos(model: torch.nn.Module) -> list[ParameterInfo]:
    """(shape, element size, trainable) of every parameter, tied ones once."""
    seen: set[int] = set()
    infos = []
    for parameter in model.parameters():
        if id(parameter) in seen:
            continue
        seen.add(id(parameter))
        infos.append((tuple(parameter.shape), parameter.element_size(), parameter.requires_grad))
    return infos


def module_sizes(model: torch.nn.Module) -> dict[str, int]:
    """Bytes of the parameters and buffers under each module name (``""``: the whole model)."""
    sizes: dict[str, int] = {}
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        parts = name.split(".")
        nbytes = tensor.numel() * tensor.element_size()
        for i in range(len(parts)):
            key = ".".join(parts[:i])
            sizes[key] = sizes.get(key, 0) + nbytes
    return sizes


def largest_layer(model: torch.nn.Module, sizes: dict[str, int]) -> tuple[int, str]:
    """HF's "largest layer": the biggest leaf module or no-split block (``_no_split_modules``)."""
    no_split = set(getattr(model, "_no_split_modules", None) or ())
    best = (0, "")
    pending = [(name, child) for name, child in model.named_children()]
    own = sum(p.numel() * p.element_size() for p in model.parameters(recurse=False))
    best = max(best, (own, "(root parameters)"))
    while pending:
        name, module = pending.pop(0)
        children = list(module.named_children())
        if not children or type(module).__name__ in no_split:
            best = max(best, (sizes.get(name, 0), name))
        else:
            pending[:0] = [(f"{name}.{child}", module) for child, module in children]
    return best


def hf_table(model: torch.nn.Module, dtypes: Sequence[str]) -> list[dict[str, Any]]:
    """HF Accelerate's ``estimate-memory`` rows (its formulas, from the fp32 size)."""
    sizes = module_sizes(model)
    total, (largest, name) = sizes.get("", 0), largest_layer(model, sizes)
    rows = []
    for dtype in dtypes:
        divisor = HF_DTYPES[dtype]
        if dtype == "float32":
            training = total * 4  # weights, gradients, Adam's two states
        elif dtype == "float16":
            training = total * 2  # HF: max(fp32 weights, 1.5x gradients, 2x optimizer)
        else:
            training = None  # HF prints N/A
        rows.append({"dtype": dtype, "largest_layer": largest // divisor, "layer": name,
                     "total_size": total // divisor, "training_using_adam": training})  # fmt: skip
    return rows


def estimates(
    model: torch.nn.Module, num_processes: int, mixed_precisions: Sequence[str]
) -> list[MemoryEstimate]:
    """Every installed backend's per-rank figures (``accelerate_core_estimate_memory``)."""
    found = get_plugin_manager().call_all(
        "accelerate_core_estimate_memory",
        parameters=parameter_infos(model),
        num_processes=num_processes,
        mixed_precisions=list(mixed_precisions),
    )
    records = [r for result in found for r in result or ()]
    return sorted(records, key=lambda r: (r.backend, r.setting, r.mixed_precision))


def human(nbytes: float | None) -> str:
    if nbytes is None:
        return "N/A"
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.2f} {unit}"
    return f"{int(nbytes)} B"


def render(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [line, "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |", line]
    out += ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join([*out, line])
