"""Weights kept off the execution device: in a CPU state dict or in an offload folder on disk.

An offload folder holds safetensors files and an ``index.json`` mapping each weight name to
``{"safetensors_file", "weight_name", "dtype", "shape"}`` (the format ``transformers`` and HF
Accelerate's ``OffloadedWeightsLoader`` read; file paths are absolute, as they expect, and a
folder that was moved is still read from its new place). A file may be outside the folder: when a
checkpoint is loaded with disk offload and a weight needs no dtype conversion, the index points
at the checkpoint's own shard instead of writing a copy. Folders written by HF Accelerate
(one ``<name>.dat`` NumPy memmap per weight) are read too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from .tensor_files import TensorFile, write_tensors

INDEX_NAME = "index.json"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def offload_weight(
    weight: torch.Tensor,
    weight_name: str,
    offload_folder: str | os.PathLike[str],
    index: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Write ``weight`` to ``<offload_folder>/<weight_name>.safetensors``, noted in ``index``."""
    path = (Path(offload_folder) / f"{weight_name}.safetensors").resolve()
    write_tensors(path, [(weight_name, weight)])
    if index is not None:
        index[weight_name] = {
            "safetensors_file": str(path),
            "weight_name": weight_name,
            "dtype": _dtype_name(weight.dtype),
            "shape": list(weight.shape),
        }
    return index


def load_offloaded_weight(
    weight_file: str | os.PathLike[str], weight_info: Mapping
) -> torch.Tensor:
    """Read one offloaded weight: a safetensors file of ours or an HF Accelerate ``.dat`` file."""
    weight_file = str(weight_file)
    if weight_file.endswith(".dat"):
        return _load_dat(weight_file, weight_info)
    with TensorFile(weight_file) as tensors:
        name = weight_info.get("weight_name")
        if name is None:
            (name,) = tensors.keys()
        return tensors.get(name)


def _load_dat(weight_file: str, weight_info: Mapping) -> torch.Tensor:
    import numpy as np

    shape = tuple(weight_info["shape"]) or (1,)  # 0-d weights were written as 1-d
    dtype = weight_info["dtype"]
    array = np.memmap(
        weight_file, dtype="int16" if dtype == "bfloat16" else dtype, shape=shape, mode="r"
    )
    tensor = torch.from_numpy(np.array(array))
    if not weight_info["shape"]:
        tensor = tensor[0]
    return tensor.view(torch.bfloat16) if dtype == "bfloat16" else tensor


def save_offload_index(index: Mapping[str, Any] | None, offload_folder: str | os.PathLike) -> None:
    """Merge ``index`` into ``<offload_folder>/index.json`` (written atomically)."""
    if not index:
        return
    path = Path(offload_folder) / INDEX_NAME
    current = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    current.update(index)
    temporary = path.with_name(f".{INDEX_NAME}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(current, indent=2), encoding="utf-8")
    os.replace(temporary, path)


def offload_state_dict(
    save_dir: str | os.PathLike[str], state_dict: Mapping[str, torch.Tensor]
) -> None:
    """Offload every tensor of ``state_dict`` to ``save_dir`` (one safetensors file each)."""
    os.makedirs(save_dir, exist_ok=True)
    index: dict[str, Any] = {}
    for name, tensor in state_dict.items():
        offload_weight(tensor, name, save_dir, index=index)
    save_offload_index(index, save_dir)


class PrefixedDataset(Mapping):
    """A view of ``dataset`` whose keys are the keys of ``dataset`` starting with ``prefix``."""

    def __init__(self, dataset: Mapping, prefix: str) -> None:
        self.dataset = dataset
        self.prefix = prefix

    def __getitem__(self, key: str) -> Any:
        return self.dataset[f"{self.prefix}{key}"]

    def __contains__(self, key: object) -> bool:
        return f"{self.prefix}{key}" in self.dataset

    def __iter__(self) -> Iterator[str]:
        return iter([key for key in self.dataset if key.startswith(self.prefix)])

    def __len__(self) -> int:
        return len(self.dataset)


class OffloadedWeightsLoader(Mapping):
    """Weights by name, from a CPU ``state_dict`` first, else read from an offload folder.

    Args:
        state_dict: weights kept in CPU memory.
        save_folder: an offload folder (its ``index.json`` is read unless ``index`` is given).
        index: weight name -> entry (see the module docstring); a file name that does not exist
            as given is looked up in ``save_folder``.
        device: where weights read from disk are put (default: the CPU).

    A weight read from disk is a fresh tensor each time: nothing stays in memory after the
    forward that asked for it releases it.
    """

    def __init__(
        self,
        state_dict: Mapping[str, torch.Tensor] | None = None,
        save_folder: str | os.PathLike[str] | None = None,
        index: Mapping[str, Any] | None = None,
        device: Any = None,
    ) -> None:
        if state_dict is None and save_folder is None and index is None:
            raise ValueError(
                "OffloadedWeightsLoader needs a `state_dict`, a `save_folder` or an "
                "`index` holding the offloaded weights."
            )
        self.state_dict = {} if state_dict is None else state_dict
        self.save_folder = save_folder
        if index is None and save_folder is not None:
            index_file = Path(save_folder) / INDEX_NAME
            if not index_file.is_file():
                raise FileNotFoundError(
                    f"{index_file} does not exist: {save_folder} is not an offload folder (write "
                    "one with offload_state_dict, disk_offload or load_checkpoint_in_model)."
                )
            index = json.loads(index_file.read_text(encoding="utf-8"))
        self.index = {} if index is None else dict(index)
        self.all_keys = list(self.state_dict.keys())
        self.all_keys.extend(key for key in self.index if key not in self.state_dict)
        self.device = device
        self._files: dict[str, TensorFile] = {}

    def _file(self, name: str) -> TensorFile:
        """The open file ``name`` (resolved once: in ``save_folder`` when moved there)."""
        opened = self._files.get(name)
        if opened is None:
            path = Path(name)
            if self.save_folder is not None and not path.is_file():
                moved = Path(self.save_folder) / (path.name if path.is_absolute() else path)
                path = moved if moved.is_file() else path
            opened = self._files[name] = TensorFile(path)
        return opened

    def __getitem__(self, key: str) -> torch.Tensor:
        if key in self.state_dict:
            return self.state_dict[key]
        info = self.index[key]
        if info.get("safetensors_file") is not None:
            tensor = self._file(info["safetensors_file"]).get(info.get("weight_name", key))
            if "dtype" in info and _dtype_name(tensor.dtype) != info["dtype"]:
                tensor = tensor.to(getattr(torch, info["dtype"]))
        else:
            if self.save_folder is None:
                raise KeyError(f"{key}: offloaded to a .dat file but no save_folder was given")
            tensor = _load_dat(os.path.join(self.save_folder, f"{key}.dat"), info)
        if self.device is not None:
            tensor = tensor.to(self.device)
        return tensor

    def __contains__(self, key: object) -> bool:
        return key in self.state_dict or key in self.index

    def __iter__(self) -> Iterator[str]:
        return iter(self.all_keys)

    def __len__(self) -> int:
        return len(self.all_keys)


def extract_submodules_state_dict(
    state_dict: Mapping[str, torch.Tensor], submodule_names: list[str]
) -> dict[str, torch.Tensor]:
    """The entries of ``state_dict`` that belong to one of ``submodule_names`` (or are one)."""
    result = {}
    for module_name in submodule_names:
        if module_name == "":
            result.update(state_dict)
            continue
        prefix = module_name + "."
        result.update(
            {k: v for k, v in state_dict.items() if k == module_name or k.startswith(prefix)}
        )
    return result
