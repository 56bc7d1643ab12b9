"""Reading and writing safetensors files one tensor at a time.

Big-model loading must never hold more than the tensor it is placing: the ``safetensors``
library's ``save_file`` copies every tensor into Python bytes first, and a ``safe_open`` mapping
counts every page it touched in the process's resident memory until it is closed. These helpers
read a tensor's bytes straight into the tensor that will hold them (one ``readinto`` from the page
cache, nothing else resident) and write files tensor by tensor, so memory stays at one tensor.
The files are ordinary safetensors files that the ``safetensors`` library reads.
"""

from __future__ import annotations

import json
import os
import struct
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError

# safetensors dtype codes <-> torch dtypes (only those this torch has).
_CODES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "C64": "complex64",
}
CODE_TO_DTYPE: dict[str, torch.dtype] = {
    code: getattr(torch, name) for code, name in _CODES.items() if hasattr(torch, name)
}
DTYPE_TO_CODE: dict[torch.dtype, str] = {dtype: code for code, dtype in CODE_TO_DTYPE.items()}
_MAX_HEADER = 100 * 2**20


class TensorInfo:
    """Where one tensor lives in a safetensors file: dtype, shape and absolute byte range."""

    __slots__ = ("dtype", "end", "shape", "start")

    def __init__(self, dtype: torch.dtype, shape: tuple[int, ...], start: int, end: int) -> None:
        self.dtype, self.shape, self.start, self.end = dtype, shape, start, end

    @property
    def nbytes(self) -> int:
        return self.end - self.start


def read_header(path: str | os.PathLike[str]) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """The tensors of a safetensors file (name -> ``TensorInfo``) and its ``__metadata__``."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            prefix = f.read(8)
            (length,) = struct.unpack("<Q", prefix) if len(prefix) == 8 else (-1,)
            if not 0 < length <= _MAX_HEADER:
                raise ValueError(f"header length {length}")
            header = json.loads(f.read(length))
    except FileNotFoundError:
        raise
    except (ValueError, UnicodeDecodeError, struct.error) as exc:
        raise CheckpointError(f"{path} is not a safetensors file ({exc}).") from exc
    metadata = header.pop("__metadata__", None) or {}
    base = 8 + length
    tensors = {}
    for name, entry in header.items():
        dtype = CODE_TO_DTYPE.get(entry["dtype"])
        if dtype is None:
            raise CheckpointError(
                f"{path}: tensor {name!r} has dtype {entry['dtype']}, which this torch cannot hold."
            )
        start, end = entry["data_offsets"]
        tensors[name] = TensorInfo(dtype, tuple(entry["shape"]), base + start, base + end)
    return tensors, metadata


def read_tensor(
    path: str | os.PathLike[str], info: TensorInfo, fd: int | None = None
) -> torch.Tensor:
    """Read one tensor into a new CPU tensor (its only copy in this process)."""
    data = torch.empty(info.nbytes, dtype=torch.uint8)
    if info.nbytes:
        view = memoryview(data.numpy())
        own = fd is None
        if own:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            done = 0
            while done < info.nbytes:
                count = _read_at(fd, view[done:], info.start + done)
                if count <= 0:
                    raise CheckpointError(
                        f"{path} ends before tensor data it declares (file truncated?)."
                    )
                done += count
        finally:
            if own:
                os.close(fd)
    return data.view(info.dtype).reshape(info.shape)


def _read_at(fd: int, view: memoryview, offset: int) -> int:
    """Read into ``view`` from ``offset`` (``preadv``; seek and read where there is none)."""
    if hasattr(os, "preadv"):
        return os.preadv(fd, [view], offset)
    os.lseek(fd, offset, os.SEEK_SET)
    chunk = os.read(fd, len(view))
    view[: len(chunk)] = chunk
    return len(chunk)


class TensorFile:
    """A safetensors file opened for random reads: the header parsed once, the descriptor kept.

    ``get(name)`` returns a fresh CPU tensor; nothing of the file stays in this process's memory
    between reads (the operating system's page cache keeps recently read bytes for the next one).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.tensors, self.metadata = read_header(self.path)
        self._fd: int | None = None
        self._lock = threading.Lock()

    def keys(self) -> list[str]:
        return list(self.tensors)

    def get(self, name: str) -> torch.Tensor:
        with self._lock:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            fd = self._fd
        return read_tensor(self.path, self.tensors[name], fd)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self) -> TensorFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_tensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]],
    metadata: Mapping[str, str] | None = None,
) -> dict[str, TensorInfo]:
    """Write a safetensors file tensor by tensor (no copy of the whole set in memory).

    ``tensors`` may be a mapping or (name, tensor) pairs; each tensor is moved to the CPU and
    made contiguous only while it is written. Returns where each tensor landed.
    """
    items = list(tensors.items()) if isinstance(tensors, Mapping) else list(tensors)
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, tensor in items:
        if tensor.dtype not in DTYPE_TO_CODE:
            raise ValueError(f"{name!r}: dtype {tensor.dtype} has no safetensors code.")
        nbytes = tensor.numel() * tensor.element_size()
        header[name] = {
            "dtype": DTYPE_TO_CODE[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the format aligns the data on 8 bytes
    base = 8 + len(encoded)
    infos = {}
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for name, tensor in items:
            entry = header[name]
            start, end = entry["data_offsets"]
            infos[name] = TensorInfo(tensor.dtype, tuple(tensor.shape), base + start, base + end)
            if end > start:
                flat = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
                f.write(memoryview(flat.numpy()))
    return infos
