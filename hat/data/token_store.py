"""Token streams as prepared data: the one store both token formats use, its writer, and the grain source of
fixed-length examples over it.

A token store holds `tokens`, the stream, beside side arrays of what its format knows about its units (BPE: each
token's length in bytes; EqualInfoAC: the byte offsets of its windows): tensorstore arrays in a directory, or numpy
arrays for a few files in memory. A format subclasses `TokenStore` with the bytes each token stands for and which
tokens are text; everything else is shared.

Layout of `DIR/`:
    manifest.json   {"format": "hat-tokens", "format_version": 2, "kind": KIND, "num_tokens": n, <format fields>}
    tokens/, <side>/   one 1-D zarr3 array each
    progress.json   {"sizes": {array: length}, "state": {...}}, kept by a resumable write: how far the arrays are valid
"""

from __future__ import annotations

import abc
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import grain
import numpy as np

from hat.data.arrays import Appender, Array, open_array, read_range
from hat.data.atomic import replace_file
from hat.data.cache import MANIFEST, cache_key
from hat.data.corpus import CorpusError, Document

STORE_FORMAT = "hat-tokens"
# Bump when the layout changes, so stale caches are rebuilt, not misread. 2: one layout for both formats, with
# `kind` in the manifest; resumable writes continue in a hidden partial directory.
TOKEN_FORMAT_VERSION = 2
_PROGRESS = "progress.json"


def store_key(docs: Sequence[Document], *settings: object) -> str:
    """The cache key of a token store prepared from `docs` with `settings` (and this layout version)."""
    return cache_key(docs, TOKEN_FORMAT_VERSION, *settings)


@dataclass(frozen=True)
class TokenStore(abc.ABC):
    """A token stream and its side arrays (`arrays`, named as in `DTYPES`), with its manifest's fields.

    Subclasses name their format (`KIND`), their arrays and dtypes (`DTYPES`: "tokens" and the side arrays), and
    define `bytes_per_token` (and `is_text` if some tokens are not text).
    """

    KIND: ClassVar[str]
    DTYPES: ClassVar[dict[str, type]]

    arrays: Mapping[str, Array]
    manifest: Mapping[str, Any]
    path: Path | None = None

    @classmethod
    def in_memory(cls, fields: Mapping[str, Any], **arrays: np.ndarray) -> Self:
        """A store of numpy arrays (cast to the format's dtypes); `fields` are what its manifest would hold."""
        if set(arrays) != set(cls.DTYPES):
            raise ValueError(f"a {cls.KIND} token store has arrays {sorted(cls.DTYPES)}, got {sorted(arrays)}")
        return cls({name: np.asarray(arrays[name], dtype) for name, dtype in cls.DTYPES.items()}, dict(fields))

    @classmethod
    def open(cls, path: str | Path) -> Self:
        """Opens a store directory written by `TokenStoreWriter` for this format."""
        path = Path(path)
        if not (path / MANIFEST).is_file():
            raise CorpusError(f"not a prepared token corpus (no {MANIFEST}): {path}")
        manifest = json.loads((path / MANIFEST).read_text())
        if (manifest.get("format_version"), manifest.get("kind")) != (TOKEN_FORMAT_VERSION, cls.KIND):
            raise CorpusError(
                f"{path} is not a {cls.KIND} token store of format version {TOKEN_FORMAT_VERSION}: prepare it again"
            )
        return cls({name: open_array(path / name) for name in cls.DTYPES}, manifest, path)

    @property
    def tokens(self) -> Array:
        """The token stream, [num_tokens]."""
        return self.arrays["tokens"]

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.shape[0])

    def read(self, name: str, start: int, stop: int) -> np.ndarray:
        """Elements [start, stop) of array `name`."""
        return read_range(self.arrays[name], start, stop)

    @abc.abstractmethod
    def bytes_per_token(self, start: int, stop: int) -> np.ndarray:
        """The bytes each token at stream positions [start, stop) stands for, [stop - start]; they add up to the
        stream's text bytes."""

    def is_text(self, tokens: np.ndarray) -> np.ndarray:
        """Which `tokens` are text (bool, like `tokens`); all of them unless the format has markers."""
        return np.ones(tokens.shape, bool)


class TokenStoreWriter:
    """Fills a directory with a token store of format `store_type`: appends to its arrays in large blocks, may
    record progress, and writes the manifest last (`finish`), so a directory with a manifest is complete.

    `resume`: a directory whose progress record (`checkpoint`) exists is continued; each array is cut back to the
    length recorded (a write after it may have been interrupted), and `state` is what the caller recorded with it.
    Otherwise the arrays start empty and `state` is None.
    """

    def __init__(self, directory: Path, store_type: type[TokenStore], resume: bool = False) -> None:
        self.directory, self.store_type = directory, store_type
        self.state: dict[str, Any] | None = None
        progress = directory / _PROGRESS
        if resume and progress.is_file():
            record = json.loads(progress.read_text())
            self.state = record["state"]
            self.arrays = {name: Appender.reopen(directory / name, record["sizes"][name]) for name in store_type.DTYPES}
        else:
            self.arrays = {name: Appender.create(directory / name, dtype) for name, dtype in store_type.DTYPES.items()}

    def append(self, name: str, values: np.ndarray) -> None:
        """Appends `values` to array `name`."""
        self.arrays[name].append(values)

    def size(self, name: str) -> int:
        """The length of array `name`, values appended so far included."""
        return self.arrays[name].size

    def checkpoint(self, state: dict[str, Any]) -> None:
        """Writes every array and records their lengths with `state` (the caller's position, JSON), replacing the
        previous record: a resumed writer continues from here."""
        self._flush()
        sizes = {name: appender.size for name, appender in self.arrays.items()}
        replace_file(self.directory / _PROGRESS, json.dumps({"sizes": sizes, "state": state}))

    def finish(self, **fields: Any) -> None:
        """Writes every array, then the manifest with `fields` (JSON) beside the format's own."""
        self._flush()
        manifest = {
            "format": STORE_FORMAT,
            "format_version": TOKEN_FORMAT_VERSION,
            "kind": self.store_type.KIND,
            "num_tokens": self.size("tokens"),
            **fields,
        }
        (self.directory / MANIFEST).write_text(json.dumps(manifest, indent=1))

    def _flush(self) -> None:
        for appender in self.arrays.values():
            appender.flush()


@dataclass(frozen=True)
class TokenSequences(grain.sources.RandomAccessDataSource):
    """Random access to the training examples of a token store, `seq_tokens` tokens each.

    Example i holds stream positions [i T, (i + 1) T] (T = `seq_tokens`): int32 `inputs` (the first T), `targets`
    (the last T), `word_ids` (zeros; token models ignore them), and float32 `loss_mask`, `text_mask` (targets that
    are text, `TokenStore.is_text`) and `target_bytes` (the bytes each target stands for,
    `TokenStore.bytes_per_token`). Consecutive examples score every token but the stream's first exactly once, so
    bits per byte = summed target NLL / summed target bytes. The last example is padded (masked) when the stream
    does not fill it.
    """

    store: TokenStore
    seq_tokens: int

    def __len__(self) -> int:
        return -(-(self.store.num_tokens - 1) // self.seq_tokens) if self.store.num_tokens > 1 else 0

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        start = index * self.seq_tokens
        stop = min(start + self.seq_tokens + 1, self.store.num_tokens)
        tokens = self.store.read("tokens", start, stop)
        n = len(tokens) - 1
        # Past the stream's end both inputs and targets are zeros (masked).
        inputs, targets = np.zeros(self.seq_tokens, np.int32), np.zeros(self.seq_tokens, np.int32)
        inputs[:n], targets[:n] = tokens[:-1], tokens[1:]
        loss_mask = np.zeros(self.seq_tokens, np.float32)
        loss_mask[:n] = 1.0
        target_bytes = np.zeros(self.seq_tokens, np.float32)
        target_bytes[:n] = self.store.bytes_per_token(start + 1, stop)
        return {
            "inputs": inputs,
            "targets": targets,
            "word_ids": np.zeros(self.seq_tokens, np.int32),
            "loss_mask": loss_mask,
            "text_mask": (loss_mask * self.store.is_text(targets)).astype(np.float32),
            "target_bytes": target_bytes,
        }
