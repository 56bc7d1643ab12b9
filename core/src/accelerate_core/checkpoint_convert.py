"""Hugging Face Accelerate checkpoints (``save_state``) as accelerate-core checkpoints.

``accel convert-checkpoint HF_DIR OUT_DIR`` reads a directory written by HF's ``save_state``
and writes one ``load_state`` resumes from: weights to safetensors, optimizers, schedulers, the
fp16 scaler and registered objects as they are, with a manifest. Only what
``torch.load(weights_only=True)`` reads is converted by default: HF pickles its RNG states
(``random_states_N.pkl``) and seedable samplers, and unpickling runs code from the file, so those
are read only with ``allow_pickle=True`` (``--trust-pickled-code``). What was not converted is
listed, in the report and in the manifest (``converted_from.not_converted``); a checkpoint without
RNG states resumes with the RNG as it is.
"""

from __future__ import annotations

import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint_io import (
    file_record,
    partial_save_name,
    put_object,
    put_tensors,
    read_tensors,
    write_json,
)
from .checkpoint_manifest import FORMAT, versions
from .errors import CheckpointError

HF_FORMAT = "huggingface-accelerate"
# HF's file names (accelerate.utils.constants), by kind; index 0 has no suffix.
MODEL_NAMES = re.compile(r"^(model|pytorch_model)(?:_(\d+))?\.(safetensors|bin)$")
NUMBERED = {
    "optimizer": re.compile(r"^optimizer(?:_(\d+))?\.bin$"),
    "scheduler": re.compile(r"^scheduler(?:_(\d+))?\.bin$"),
    "sampler": re.compile(r"^sampler(?:_(\d+))?\.bin$"),
    "dl_state_dict": re.compile(r"^dl_state_dict(?:_(\d+))?\.bin$"),
}
RANDOM_STATES = re.compile(r"^random_states_(\d+)\.pkl$")
CUSTOM = re.compile(r"^custom_checkpoint_(\d+)\.pkl$")
SCALER = "scaler.pt"
SHARDED_FILES = ("mp_rank_", "zero_pp_rank_")  # DeepSpeed's per-rank files


@dataclass
class Conversion:
    """What ``convert_checkpoint`` wrote and what it left out (with why)."""

    output_dir: Path
    converted: dict[str, str] = field(default_factory=dict)  # HF file -> our file
    not_converted: dict[str, str] = field(default_factory=dict)  # HF file -> reason

    def report(self) -> str:
        lines = [f"wrote {self.output_dir}:"]
        lines += [f"  {src} -> {dst}" for src, dst in sorted(self.converted.items())]
        if self.not_converted:
            lines.append("not converted:")
            lines += [f"  {src}: {why}" for src, why in sorted(self.not_converted.items())]
        return "\n".join(lines)


def _index(match: re.Match[str], group: int = 1) -> int:
    return int(match.group(group) or 0)


def _safe_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``; raises CheckpointError naming the file otherwise."""
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:
        raise CheckpointError(f"{path.name} cannot be read with weights_only=True: {exc}") from exc


def _rng_from_hf(states: dict[str, Any]) -> dict[str, Any]:
    """HF's ``random_states_N.pkl`` content in the form ``checkpoint.restore_rng`` reads."""
    kind, keys, position, has_gauss, cached = states["numpy_random_seed"]
    return {
        "python": states["random_state"],
        "numpy": (
            kind,
            torch.from_numpy(np.asarray(keys).astype(np.int64)),
            int(position),
            int(has_gauss),
            float(cached),
        ),
        "torch": states["torch_manual_seed"],
    }


def is_hf_checkpoint(directory: Path) -> bool:
    """A directory HF's ``save_state`` wrote (its model/optimizer/RNG file names, no manifest)."""
    if not directory.is_dir():
        return False
    names = {p.name for p in directory.iterdir()}
    return any(MODEL_NAMES.match(n) or RANDOM_STATES.match(n) for n in names) and any(
        RANDOM_STATES.match(n) or NUMBERED["optimizer"].match(n) for n in names
    )


def convert_checkpoint(
    hf_dir: str | Path,
    output_dir: str | Path,
    *,
    allow_pickle: bool = False,
    backend: str | None = None,
    dataloaders: int = 0,
) -> Conversion:
    """Write ``output_dir`` (must not exist) from HF's ``save_state`` directory ``hf_dir``.

    Args:
        allow_pickle: also read HF's pickled files (RNG states, samplers). Unpickling RUNS CODE
            stored in the file: only for checkpoints you trust.
        backend: the backend the resuming run uses; default ``none`` for a one-process
            checkpoint, ``ddp`` for several (HF's FSDP/DeepSpeed layouts are refused).
        dataloaders: how many prepared dataloaders the resuming run has. HF stores no position
            for them (the resumed run starts them at the beginning of an epoch, as HF does).
    """
    source, target = Path(hf_dir), Path(output_dir)
    if not is_hf_checkpoint(source):
        raise CheckpointError(f"{source} is not a directory written by HF Accelerate's save_state")
    if target.exists():
        raise CheckpointError(f"{target} exists; choose a new directory for the converted one")
    files = sorted(p for p in source.iterdir() if p.is_file())
    sharded = sorted(p.name for p in source.iterdir() if p.is_dir())
    if sharded or any(hint in p.name for p in files for hint in SHARDED_FILES):
        raise CheckpointError(
            f"{source} holds sharded model or optimizer state ({', '.join(sharded) or 'ZeRO'}): "
            "merge it first (HF: accelerate merge-weights) and load the weights with "
            "load_state_dict; only DDP / one-process checkpoints convert"
        )
    # A fresh name of our own: never an entry someone else wrote beside the target.
    tmp = target.with_name(partial_save_name(target, secrets.token_hex(4)))
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.mkdir()
    result = Conversion(target)
    counts = {"models": 0, "optimizers": 0, "schedulers": 0, "dataloaders": 0, "custom": 0}
    ranks: set[int] = set()
    try:
        for path in files:
            name = path.name
            done = _convert_file(path, tmp, result, counts, ranks, allow_pickle)
            if not done and name not in result.not_converted:
                result.not_converted[name] = "not a file of HF's save_state that maps here"
        for i in range(dataloaders):
            start = {"iteration": 0, "batches_yielded": 0, "sampler": None}
            put_object(tmp, f"dataloader_{i}.bin", start)
        counts["dataloaders"] = dataloaders
        world = max(ranks) + 1 if ranks else _world_from_names(files)
        written = {p.name: file_record(p) for p in sorted(tmp.iterdir())}
        write_json(
            tmp / "manifest.json",
            {
                "format": FORMAT,
                "world_size": world,
                "backend": backend or ("none" if world == 1 else "ddp"),
                "mixed_precision": "fp16" if (source / SCALER).exists() else "no",
                "versions": versions(None),
                "objects": {**counts, "scaler": (tmp / "scaler.bin").exists()},
                "backend_objects": [],
                "gradient_accumulation": {"step": 0, "mid_cycle": False},
                "converted_from": {
                    "format": HF_FORMAT,
                    "directory": str(source.resolve()),
                    "not_converted": result.not_converted,
                },
                "files": written,
            },
        )
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def _world_from_names(files: list[Path]) -> int:
    ranks = [int(m.group(1)) for p in files if (m := RANDOM_STATES.match(p.name))]
    return max(ranks) + 1 if ranks else 1


def _convert_file(
    path: Path,
    out: Path,
    result: Conversion,
    counts: dict[str, int],
    ranks: set[int],
    allow_pickle: bool,
) -> bool:
    """Convert one HF file into ``out``; returns False when the name is not HF's."""
    name = path.name
    if match := MODEL_NAMES.match(name):
        i = _index(match, 2)
        weights = read_tensors(path) if name.endswith(".safetensors") else _safe_load(path)
        put_tensors(out, f"model_{i}.safetensors", weights)
        result.converted[name] = f"model_{i}.safetensors"
        counts["models"] = max(counts["models"], i + 1)
        return True
    for kind, pattern in NUMBERED.items():
        if match := pattern.match(name):
            i = _index(match)
            if kind in ("optimizer", "scheduler"):
                put_object(out, f"{kind}_{i}.bin", _safe_load(path))
                result.converted[name] = f"{kind}_{i}.bin"
                counts[f"{kind}s"] = max(counts[f"{kind}s"], i + 1)
            else:
                result.not_converted[name] = (
                    "HF's dataloader position; the resumed dataloaders start at the beginning "
                    "of an epoch (skip_first_batches skips into it)"
                )
            return True
    if match := CUSTOM.match(name):
        i = int(match.group(1))
        try:
            state = _safe_load(path)
        except CheckpointError as exc:
            result.not_converted[name] = f"{exc}; save plain state (tensors, numbers, dicts)"
            return True
        put_object(out, f"custom_checkpoint_{i}.bin", state)
        result.converted[name] = f"custom_checkpoint_{i}.bin"
        counts["custom"] = max(counts["custom"], i + 1)
        return True
    if name == SCALER:
        put_object(out, "scaler.bin", _safe_load(path))
        result.converted[name] = "scaler.bin"
        return True
    if match := RANDOM_STATES.match(name):
        rank = int(match.group(1))
        ranks.add(rank)
        if not allow_pickle:
            result.not_converted[name] = (
                "pickled RNG states: reading them runs code from the file; pass "
                "--trust-pickled-code (allow_pickle=True) for a checkpoint you trust, or resume "
                "with the RNG as it is"
            )
            return True
        states = torch.load(path, weights_only=False, map_location="cpu")  # allowed above
        put_object(out, f"random_states_{rank}.bin", _rng_from_hf(states))
        result.converted[name] = f"random_states_{rank}.bin"
        if any(k not in ("random_state", "numpy_random_seed", "torch_manual_seed") for k in states):
            extra = sorted(set(states) - {"random_state", "numpy_random_seed", "torch_manual_seed"})
            result.not_converted[f"{name} ({', '.join(extra)})"] = "device RNG states"
        return True
    return False
