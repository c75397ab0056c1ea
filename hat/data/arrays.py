"""One-dimensional tensorstore arrays on local disk: created, opened, read by range, and grown at the end in
large blocks (prepared data is streamed to disk, so a corpus larger than memory works)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorstore as ts

# A tensorstore array on disk, or a numpy array standing in for one (data prepared in memory for evaluation).
Array = ts.TensorStore | np.ndarray

_CHUNK_ELEMENTS = 1 << 20
_FLUSH_BYTES = 32 << 20


def _spec(path: Path) -> dict:
    return {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}}


def create_array(path: Path, dtype: np.dtype | type) -> ts.TensorStore:
    """A new, empty, resizable 1-D zarr3 array at `path` (replacing one there), in chunks of 1M elements."""
    layout = ts.ChunkLayout(chunk_shape=[_CHUNK_ELEMENTS])
    options = {"create": True, "delete_existing": True, "dtype": np.dtype(dtype), "shape": [0], "chunk_layout": layout}
    return ts.open(_spec(path), **options).result()


def open_array(path: Path) -> ts.TensorStore:
    """The existing zarr3 array at `path`."""
    return ts.open(_spec(path), open=True).result()


def read_range(array: Array, start: int, stop: int) -> np.ndarray:
    """Elements [start, stop) of a tensorstore or numpy array, as numpy."""
    if isinstance(array, np.ndarray):
        return array[start:stop]
    return array[start:stop].read().result()


class Appender:
    """Appends to a resizable 1-D array, buffering values in memory until `flush_bytes` are pending, so that the
    array grows (resize, then one write) in large blocks."""

    def __init__(self, store: ts.TensorStore, flush_bytes: int = _FLUSH_BYTES) -> None:
        self.store, self.flush_bytes = store, flush_bytes
        self.dtype = store.dtype.numpy_dtype
        self.written = self.size = int(store.shape[0])
        self.pending: list[np.ndarray] = []
        self.pending_bytes = 0

    @classmethod
    def create(cls, path: Path, dtype: np.dtype | type) -> Appender:
        """An appender to a new, empty array at `path`."""
        return cls(create_array(path, dtype))

    @classmethod
    def reopen(cls, path: Path, size: int) -> Appender:
        """An appender to the array at `path`, cut back to its first `size` elements (a write after them may have
        been interrupted)."""
        return cls(open_array(path).resize(exclusive_max=[size]).result())

    def append(self, values: np.ndarray) -> None:
        """Appends `values` (cast to the array's dtype); they reach the array by the next `flush`."""
        self.pending.append(np.asarray(values, dtype=self.dtype))
        self.pending_bytes += self.pending[-1].nbytes
        self.size += len(self.pending[-1])
        if self.pending_bytes >= self.flush_bytes:
            self.flush()

    def flush(self) -> None:
        """Writes every pending value."""
        if not self.pending:
            return
        block = np.concatenate(self.pending)
        self.store = self.store.resize(exclusive_max=[self.size]).result()
        self.store[self.written : self.size].write(block).result()
        self.written = self.size
        self.pending, self.pending_bytes = [], 0
