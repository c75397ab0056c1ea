"""Safetensors directories for conversions: writing in Hugging Face's sharded layout, reading lazily.

A directory holds either `model.safetensors`, or shards `model-0000k-of-0000n.safetensors` plus
`model.safetensors.index.json` (`{"metadata": {"total_size": bytes}, "weight_map": {tensor: shard}}`), which is what
`transformers`' `from_pretrained` and the released HAT checkpoints use. Reading keeps one tensor in memory at a
time; writing keeps at most one shard.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

from hat.checkpoint.store import ConversionError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# transformers refuses safetensors files without this metadata ("format" must name a framework it knows).
FILE_METADATA = {"format": "pt"}

_SIZE_UNITS = {
    "": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40,
}  # fmt: skip


def parse_size(text: str | int) -> int:
    """`"5GB"` -> 5 * 10**9, `"500MiB"` -> 500 * 2**20, `"1000"` -> 1000 bytes (HF's `max_shard_size` units)."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else None
    if match is None or unit not in _SIZE_UNITS:
        raise ConversionError(f"invalid size {text!r} (use e.g. 5GB, 500MB, 2GiB or a number of bytes)")
    size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if size <= 0:
        raise ConversionError(f"size must be positive, got {text!r}")
    return size


class ShardedWriter:
    """Writes tensors in the order given into shards of at most `max_shard_bytes` (a larger tensor gets a shard of
    its own, as in HF); `close()` names them and writes the index when there is more than one."""

    def __init__(self, directory: Path, max_shard_bytes: int) -> None:
        self.directory = Path(directory)
        self.max_shard_bytes = max_shard_bytes
        self.pending: dict[str, np.ndarray] = {}
        self.pending_bytes = 0
        self.shards: list[tuple[Path, list[str]]] = []
        self.total_bytes = 0

    def add(self, name: str, array: np.ndarray) -> None:
        """Queues one tensor; writes the current shard first when `array` would overflow it."""
        if self.pending and self.pending_bytes + array.nbytes > self.max_shard_bytes:
            self._flush()
        self.pending[name] = np.ascontiguousarray(array)
        self.pending_bytes += array.nbytes
        self.total_bytes += array.nbytes

    def _flush(self) -> None:
        path = self.directory / f".shard-{len(self.shards)}.safetensors"
        save_file(self.pending, path, metadata=FILE_METADATA)
        self.shards.append((path, list(self.pending)))
        self.pending, self.pending_bytes = {}, 0

    def close(self) -> list[Path]:
        """Writes the last shard, gives the shards their final names (and the index); returns the files."""
        if self.pending or not self.shards:
            self._flush()
        if len(self.shards) == 1:
            final = self.directory / SINGLE_FILE
            self.shards[0][0].rename(final)
            return [final]
        count = len(self.shards)
        weight_map: dict[str, str] = {}
        files = []
        for index, (path, names) in enumerate(self.shards, start=1):
            final = self.directory / f"model-{index:05d}-of-{count:05d}.safetensors"
            path.rename(final)
            files.append(final)
            weight_map.update(dict.fromkeys(names, final.name))
        index_json = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
        (self.directory / INDEX_FILE).write_text(json.dumps(index_json, indent=2))
        return files


# Dtypes a checkpoint's tensors may have (all widened to float32 on reading).
_DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
}


class SafetensorsFile:
    """One `.safetensors` file: its header (a little-endian u64 length, then JSON `{name: {dtype, shape,
    data_offsets}}`), and tensors read with plain file reads.

    The safetensors library reads through a memory map, whose touched pages stay in the process's resident set
    until the map is closed: converting a whole checkpoint would show its full size as resident memory. Reading
    each tensor (or block of rows) into a fresh array keeps the resident set at the tensor being converted.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(8)
            header_len = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else -1
            if not 0 < header_len <= size - 8:
                raise ConversionError(f"{path} is not a safetensors file (bad header length)")
            try:
                header = json.loads(handle.read(header_len))
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise ConversionError(f"{path} is not a safetensors file (unreadable header)") from None
        header.pop("__metadata__", None)
        self.data_start = 8 + header_len
        self.entries: dict[str, dict] = header
        end = max((entry["data_offsets"][1] for entry in header.values()), default=0)
        if self.data_start + end > size:
            raise ConversionError(f"{path} is truncated: its header needs {self.data_start + end} bytes, it has {size}")

    def shape(self, name: str) -> tuple[int, ...]:
        """The stored shape of tensor `name`."""
        return tuple(self.entries[name]["shape"])

    def read_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows `start:stop` (first axis) of tensor `name` in its stored dtype, reading only their bytes."""
        entry = self.entries[name]
        dtype = _DTYPES.get(entry["dtype"])
        if dtype is None:
            raise ConversionError(f"{self.path.name}: tensor {name} has unsupported dtype {entry['dtype']}")
        shape = entry["shape"] or [1]
        row_items = int(np.prod(shape[1:], dtype=np.int64))
        with self.path.open("rb") as handle:
            handle.seek(self.data_start + entry["data_offsets"][0] + start * row_items * dtype.itemsize)
            values = np.fromfile(handle, dtype=dtype, count=(stop - start) * row_items)
        return values.reshape(stop - start, *shape[1:]) if entry["shape"] else values.reshape(())


class SafetensorsDir:
    """The tensors of a single-file or sharded safetensors directory, read one at a time as float32."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        index_path = self.directory / INDEX_FILE
        if index_path.is_file():
            try:
                weight_map = json.loads(index_path.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise ConversionError(f"{index_path}: not a safetensors index ({error})") from None
            for shard in sorted(set(weight_map.values())):
                if not (self.directory / shard).is_file():
                    raise ConversionError(f"shard {shard} named in {index_path.name} is missing from {self.directory}")
            shards = {shard: SafetensorsFile(self.directory / shard) for shard in sorted(set(weight_map.values()))}
            self.files = {name: shards[shard] for name, shard in weight_map.items()}
        elif (self.directory / SINGLE_FILE).is_file():
            single = SafetensorsFile(self.directory / SINGLE_FILE)
            self.files = dict.fromkeys(single.entries, single)
        else:
            raise ConversionError(f"no {SINGLE_FILE} or {INDEX_FILE} in {self.directory}")

    def names(self) -> list[str]:
        """Every tensor name in the directory."""
        return list(self.files)

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def _file(self, name: str) -> SafetensorsFile:
        file = self.files.get(name)
        if file is None or name not in file.entries:
            where = file.path.name if file else self.directory
            raise ConversionError(f"tensor {name} is not in {where}")
        return file

    def shape(self, name: str) -> tuple[int, ...]:
        """The stored shape of `name`, from the file header (no data read)."""
        return self._file(name).shape(name)

    def read_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows `start:stop` of tensor `name` as float32, reading only their bytes."""
        return self._file(name).read_rows(name, start, stop).astype(np.float32)

    def read(self, name: str) -> np.ndarray:
        """Tensor `name` as float32 (bfloat16 and float16 files are widened exactly)."""
        shape = self.shape(name)
        return self._file(name).read_rows(name, 0, shape[0] if shape else 1).astype(np.float32).reshape(shape)
