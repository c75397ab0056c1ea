"""Lazy reading of a Hugging Face checkpoint directory's safetensors files, one tensor at a time.

A tensor is a read-only memory map of its bytes in the file, so reading a whole 8B checkpoint never holds more than
the tensor being converted. The safetensors format is a little-endian u64 header length, a JSON header of
`{name: {"dtype", "shape", "data_offsets"}}`, then the raw data. (`safetensors.safe_open` with numpy cannot return
bfloat16, the dtype most Llama checkpoints ship in, hence this reader.)
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import ml_dtypes
import numpy as np

from hat.convert.store import ConversionError

INDEX_FILE = "model.safetensors.index.json"
_DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
}


class SafetensorsFile:
    """One `.safetensors` file: its header, and tensors as memory-mapped arrays."""

    def __init__(self, path: Path) -> None:
        self.path = path
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise ConversionError(f"{path} is not a safetensors file (shorter than its header)")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > size - 8:
                raise ConversionError(f"{path} is not a safetensors file, or is truncated (bad header length)")
            try:
                header = json.loads(handle.read(header_len))
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise ConversionError(f"{path} is not a safetensors file (unreadable header)") from None
        header.pop("__metadata__", None)
        self.data_start = 8 + header_len
        self.entries = header
        end = max((entry["data_offsets"][1] for entry in header.values()), default=0)
        if self.data_start + end > size:
            raise ConversionError(f"{path} is truncated: its header needs {self.data_start + end} bytes, it has {size}")
        self._map: np.memmap | None = None

    def shape(self, name: str) -> tuple[int, ...]:
        """The stored shape of tensor `name`."""
        return tuple(self.entries[name]["shape"])

    def get(self, name: str) -> np.ndarray:
        """Tensor `name` as a read-only array view of the file (no copy)."""
        entry = self.entries[name]
        dtype = _DTYPES.get(entry["dtype"])
        if dtype is None:
            raise ConversionError(f"{self.path}: tensor {name} has unsupported dtype {entry['dtype']}")
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        start, end = entry["data_offsets"]
        raw = self._map[self.data_start + start : self.data_start + end]
        return raw.view(dtype).reshape(entry["shape"])


class SafetensorsDir:
    """All tensors of a checkpoint directory: `model.safetensors`, or the shards listed in its index."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        index_path = self.directory / INDEX_FILE
        if index_path.is_file():
            weight_map = json.loads(index_path.read_text()).get("weight_map")
            if not isinstance(weight_map, dict):
                raise ConversionError(f"{index_path} has no weight_map")
            for shard in sorted(set(weight_map.values())):
                if not (self.directory / shard).is_file():
                    raise ConversionError(f"missing shard {shard} (listed in {index_path}); download it again")
            self.files = {shard: SafetensorsFile(self.directory / shard) for shard in sorted(set(weight_map.values()))}
            self.where = {name: self.files[shard] for name, shard in weight_map.items()}
            for name, file in self.where.items():
                if name not in file.entries:
                    raise ConversionError(f"tensor {name} is listed in {index_path} but missing from {file.path.name}")
        else:
            paths = sorted(self.directory.glob("*.safetensors"))
            if not paths:
                raise ConversionError(f"no *.safetensors files in {self.directory}")
            if len(paths) > 1:
                raise ConversionError(f"{self.directory} has {len(paths)} safetensors files but no {INDEX_FILE}")
            self.files = {paths[0].name: SafetensorsFile(paths[0])}
            self.where = {name: self.files[paths[0].name] for name in self.files[paths[0].name].entries}

    def names(self) -> list[str]:
        """Every tensor name."""
        return list(self.where)

    def __contains__(self, name: str) -> bool:
        return name in self.where

    def shape(self, name: str) -> tuple[int, ...]:
        """The stored shape of `name`."""
        return self._file(name).shape(name)

    def get(self, name: str) -> np.ndarray:
        """Tensor `name` as float32 (one copy of this tensor only)."""
        return self._file(name).get(name).astype(np.float32)

    def _file(self, name: str) -> SafetensorsFile:
        if name not in self.where:
            raise ConversionError(f"tensor {name} not found in {self.directory}")
        return self.where[name]

    def total_bytes(self) -> int:
        """Size of the safetensors files on disk."""
        return sum(file.path.stat().st_size for file in self.files.values())
