"""Loading a (sharded) checkpoint into a model placed by a device map, one tensor at a time.

Every tensor goes from the file straight to its place: the device the map names, the CPU, or
the offload folder for ``"disk"``. Nothing else is held, so the process's resident memory stays
at what the map keeps in CPU memory plus the tensor being placed (HF Accelerate holds a whole
shard). Safetensors checkpoints are checked before anything is loaded: shards named by the index
must exist and hold what it says, and the keys must fit the model.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, ConfigurationError
from .modeling import (
    _device_of,
    _proper_dtype,
    check_tied_parameters_on_same_device,
    find_tied_parameters,
    retie_parameters,
    set_module_tensor_to_device,
    to_torch_device,
)
from .offload import load_offloaded_weight, offload_weight, save_offload_index
from .tensor_files import TensorFile

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "pytorch_model.bin"
SAFE_WEIGHTS_NAME = "model.safetensors"
_INTEGER_PREFIXES = ("torch.uint", "torch.int", "torch.bool")


def load_state_dict(
    checkpoint_file: str | os.PathLike[str], device_map: dict | None = None
) -> dict:
    """The whole state dict of one checkpoint file (safetensors, or a torch file loaded safely).

    With a ``device_map`` naming one device, safetensors tensors are loaded straight onto it.
    """
    checkpoint_file = str(checkpoint_file)
    if checkpoint_file.endswith(".safetensors"):
        from safetensors.torch import load_file

        devices = {str(v) for v in (device_map or {}).values()} - {"disk"}
        device = devices.pop() if len(devices) == 1 else "cpu"
        if device.isdigit():
            device = str(to_torch_device(int(device)))
        return load_file(checkpoint_file, device=device)
    return torch.load(checkpoint_file, map_location="cpu", weights_only=True)


def load_offloaded_weights(
    model: nn.Module, index: dict | None, offload_folder: str | os.PathLike
) -> None:
    """Load every weight of an offload ``index`` back into ``model`` on the CPU."""
    for name, info in (index or {}).items():
        if info.get("safetensors_file") is not None:
            path = Path(info["safetensors_file"])
            path = path if path.is_file() else Path(offload_folder) / path.name
        else:
            path = Path(offload_folder) / f"{name}.dat"
        set_module_tensor_to_device(model, name, "cpu", value=load_offloaded_weight(path, info))


class _Shard:
    """One checkpoint file: its keys, and each tensor read on demand."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.safetensors = path.suffix == ".safetensors"
        if self.safetensors:
            self.file = TensorFile(path)
            self.state: dict[str, torch.Tensor] | None = None
        else:  # a torch file: memory-mapped, so reading a tensor does not load the others
            self.state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)

    def names(self) -> list[str]:
        if self.state is not None:
            return list(self.state)
        infos = self.file.tensors
        return sorted(infos, key=lambda name: infos[name].start)  # read in file order

    def dtype(self, name: str) -> torch.dtype:
        return self.state[name].dtype if self.state is not None else self.file.tensors[name].dtype

    def get(self, name: str) -> torch.Tensor:
        return self.state[name] if self.state is not None else self.file.get(name)

    def close(self) -> None:
        if self.state is None:
            self.file.close()
        self.state = None


def _checkpoint_files(
    checkpoint: str | os.PathLike[str],
) -> tuple[list[Path], dict[str, str] | None]:
    """The files of ``checkpoint`` and, for a sharded one, its weight map (name -> file name)."""
    path = Path(checkpoint)
    index_file = None
    if path.is_file():
        if path.suffix != ".json":
            return [path], None
        index_file = path
    elif path.is_dir():
        for name in (WEIGHTS_NAME, SAFE_WEIGHTS_NAME):
            if (path / name).is_file():
                return [path / name], None
        indexes = sorted(p for p in path.iterdir() if p.name.endswith(".index.json"))
        if not indexes:
            raise ValueError(
                f"{path} is not a folder containing a `.index.json` file or a "
                f"{WEIGHTS_NAME} or a {SAFE_WEIGHTS_NAME} file"
            )
        if len(indexes) > 1:
            raise ValueError(
                f"{path} containing more than one `.index.json` file "
                f"({', '.join(p.name for p in indexes)}), delete the irrelevant ones."
            )
        index_file = indexes[0]
    else:
        raise ValueError(
            "`checkpoint` should be the path to a file containing a whole state dict, or the index "
            "of a sharded checkpoint, or a folder containing a sharded checkpoint or the whole "
            f"state dict, but got {checkpoint}."
        )
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"Cannot read the checkpoint index {index_file}: {exc}") from exc
    weight_map = index.get("weight_map", index)
    names = sorted(set(weight_map.values()))
    files = [index_file.parent / name for name in names]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise CheckpointError(
            f"The checkpoint index {index_file} names {len(missing)} shard(s) that do not exist: "
            f"{', '.join(missing)}. Download or copy the missing files next to the index."
        )
    return files, weight_map


def _target_dtype(
    name: str,
    stored: torch.dtype,
    current: torch.Tensor,
    dtype: Any,
    keep_in_fp32_modules: list[str] | None,
) -> torch.dtype:
    """The dtype ``name`` is loaded at: ``dtype`` for floating tensors, else the model's own."""
    if str(stored).startswith(_INTEGER_PREFIXES):
        return stored
    if dtype is None:
        return current.dtype
    if keep_in_fp32_modules and dtype == torch.float16:
        for key in keep_in_fp32_modules:
            if (key in name and key + "." in name) or key == name:
                return torch.float32
    return dtype


def _tied_names(tied_params: list[list[str]]) -> dict[str, list[str]]:
    return {name: group for group in tied_params for name in group}


def _report_keys(
    model_keys: set[str],
    checkpoint_keys: set[str],
    tied: dict[str, list[str]],
    model: nn.Module,
    strict: bool,
    checkpoint: Any,
) -> None:
    """Refuse missing weights the model cannot run without; report or refuse the rest."""
    unexpected = sorted(checkpoint_keys - model_keys)
    missing = sorted(
        key
        for key in model_keys - checkpoint_keys
        if not any(alias in checkpoint_keys for alias in tied.get(key, ()))
    )
    state = model.state_dict(keep_vars=True)
    empty = [key for key in missing if state[key].device.type == "meta"]
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"The checkpoint {checkpoint} does not match {model.__class__.__name__} "
            f"(strict=True): missing keys {missing or 'none'}; unexpected keys "
            f"{unexpected or 'none'}. Load the checkpoint this model was saved to, or pass "
            "strict=False to skip unexpected keys."
        )
    if empty:
        raise CheckpointError(
            f"The checkpoint {checkpoint} has no value for {len(empty)} weight(s) of "
            f"{model.__class__.__name__} that are on the meta device (created under "
            f"init_empty_weights) and so cannot run: {', '.join(empty[:20])}"
            f"{' ...' if len(empty) > 20 else ''}. Check that the checkpoint belongs to this model."
        )
    if missing:
        logger.warning(
            f"Some weights of {model.__class__.__name__} were not in the checkpoint "
            f"{checkpoint} and keep their current values: {missing}"
        )
    if unexpected:
        logger.warning(
            f"Some weights of the model checkpoint at {checkpoint} were not used when "
            f"initializing {model.__class__.__name__}: {unexpected}. This may or may not be an "
            "issue - make sure that the checkpoint does not have unnecessary parameters, or that "
            "the model definition correctly corresponds to the checkpoint."
        )


def _peek_keys(files: list[Path], weight_map: dict[str, str] | None) -> set[str] | None:
    """The checkpoint's keys without loading data (safetensors headers), checked against the
    index; ``None`` for torch files, whose keys are only known once loaded."""
    if not all(f.suffix == ".safetensors" for f in files):
        return set(weight_map) if weight_map is not None else None
    keys: set[str] = set()
    for file in files:
        with TensorFile(file) as shard:
            present = set(shard.keys())
        if weight_map is not None:
            expected = {k for k, v in weight_map.items() if v == file.name}
            absent = sorted(expected - present)
            if absent:
                raise CheckpointError(
                    f"The checkpoint index says {file.name} holds {absent[:5]}"
                    f"{' ...' if len(absent) > 5 else ''}, but it does not: the shard and the "
                    "index come from different saves. Download the checkpoint again."
                )
        keys |= present
    return keys


def load_checkpoint_in_model(
    model: nn.Module,
    checkpoint: str | os.PathLike[str],
    device_map: dict[str, Any] | None = None,
    offload_folder: str | os.PathLike[str] | None = None,
    dtype: str | torch.dtype | None = None,
    offload_state_dict: bool = False,
    offload_buffers: bool = False,
    keep_in_fp32_modules: list[str] | None = None,
    offload_8bit_bnb: bool = False,
    strict: bool = False,
    full_state_dict: bool = True,
    broadcast_from_rank0: bool = False,
) -> None:
    """Load ``checkpoint`` into ``model``, each tensor onto the device ``device_map`` names.

    ``checkpoint``: a state-dict file (safetensors or torch), the ``.index.json`` of a sharded
    checkpoint, or a folder holding ``model.safetensors``/``pytorch_model.bin`` or one index.
    Tensors mapped to ``"disk"`` go to ``offload_folder`` (a safetensors checkpoint's tensor that
    needs no conversion is referenced where it is, not copied). ``dtype`` converts floating
    tensors. ``offload_state_dict`` is accepted for compatibility: loading never holds more than
    one tensor beyond what the map keeps in CPU memory, so there is nothing to offload.
    Call ``dispatch_model`` afterwards (or use ``load_checkpoint_and_dispatch``) to run the model.
    """
    if offload_8bit_bnb:
        raise ConfigurationError("offload_8bit_bnb (bitsandbytes) is not supported.")
    if broadcast_from_rank0:
        raise ConfigurationError(
            "broadcast_from_rank0 is not supported: load the checkpoint on every process."
        )
    tied_params = find_tied_parameters(model)
    if device_map is not None:
        check_tied_parameters_on_same_device(tied_params, device_map)
        uses_disk = "disk" in device_map.values()
        if uses_disk and offload_folder is None:
            raise ConfigurationError(
                "At least one of the model submodule will be offloaded to "
                "disk, please pass along an `offload_folder`."
            )
        if uses_disk:
            os.makedirs(offload_folder, exist_ok=True)
    dtype = _proper_dtype(dtype) if dtype is not None else None
    files, weight_map = _checkpoint_files(checkpoint)
    state = model.state_dict(keep_vars=True)
    model_keys = set(state)
    tied = _tied_names(tied_params)
    known = _peek_keys(files, weight_map)
    if known is not None:
        _report_keys(model_keys, known, tied, model, strict, checkpoint)
    buffers = {name for name, _ in model.named_buffers()}
    offload_index: dict[str, Any] = {}
    seen: set[str] = set()
    for file in files:
        shard = _Shard(file)
        try:
            for name in shard.names():
                seen.add(name)
                if name not in model_keys:
                    continue
                device = _device_of(name, device_map) if device_map is not None else None
                current = state[name]
                target = _target_dtype(
                    name, shard.dtype(name), current, dtype, keep_in_fp32_modules
                )
                if device == "disk" and (offload_buffers or name not in buffers):
                    _offload(model, name, shard, target, offload_folder, offload_index)
                    continue
                if device == "disk":  # a buffer that stays in memory while its module is offloaded
                    device = "cpu"
                elif device is None:  # no map: where the tensor already is (the CPU for meta)
                    device = "cpu" if current.device.type == "meta" else current.device
                set_module_tensor_to_device(
                    model, name, device, value=shard.get(name), dtype=target, clear_cache=False
                )
        finally:
            shard.close()
    if known is None:
        _report_keys(model_keys, seen, tied, model, strict, checkpoint)
    _alias_tied_offloads(model, tied_params, device_map, offload_index, offload_folder)
    if offload_folder is not None and offload_index:
        save_offload_index(offload_index, offload_folder)
    retie_parameters(model, tied_params)


def _offload(
    model: nn.Module,
    name: str,
    shard: _Shard,
    target: torch.dtype,
    folder: str | os.PathLike,
    index: dict[str, Any],
) -> None:
    """Put ``name`` in the offload folder: referenced in the shard when it needs no conversion."""
    set_module_tensor_to_device(model, name, "meta", dtype=target)
    if shard.safetensors and shard.dtype(name) == target:
        info = shard.file.tensors[name]
        index[name] = {
            "safetensors_file": str(shard.path.resolve()),
            "weight_name": name,
            "dtype": str(target).removeprefix("torch."),
            "shape": list(info.shape),
        }
        return
    offload_weight(shard.get(name).to(target), name, folder, index=index)


def _alias_tied_offloads(
    model: nn.Module,
    tied_params: list[list[str]],
    device_map: dict | None,
    index: dict[str, Any],
    folder: Any,
) -> None:
    """A tied weight mapped to disk but stored under another name gets an index entry too."""
    if device_map is None:
        return
    for group in tied_params:
        on_disk = [n for n in group if _device_of(n, device_map) == "disk" and n not in index]
        if not on_disk:
            continue
        source = next((n for n in group if n in index), None)
        for name in on_disk:
            if source is not None:
                index[name] = index[source]
                continue
            holder = next((n for n in group if _get(model, n).device.type != "meta"), None)
            if holder is not None:
                offload_weight(_get(model, holder).detach(), name, folder, index=index)


def _get(model: nn.Module, name: str) -> torch.Tensor:
    for part in name.split("."):
        model = getattr(model, part)
    return model
