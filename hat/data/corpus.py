"""Corpus sources and their prepared, on-disk form.

A corpus is a list of documents (files). Preparing it splits every document into words with HAT's splitter and
writes two tensorstore arrays: the concatenated bytes (each document followed by one end-of-text byte, a word of
its own) and the cumulative word boundaries. Both are streamed to disk in chunks, so a corpus larger than memory
works, and the prepared directory is keyed by the file list, so a second run reuses it.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import sysconfig
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hat.config import EOT_BYTE
from hat.data.arrays import Appender, Array, open_array, read_range
from hat.data.cache import MANIFEST, build_once, cache_key
from hat.errors import HatError
from hat.text import SpecialTokens, word_lengths

# Bump when the prepared layout or the splitter's output changes, so stale caches are not reused.
PREPARED_FORMAT_VERSION = 2


class CorpusError(HatError, ValueError):
    """A corpus path is missing or unusable; the message names the path and the fix."""


@dataclass(frozen=True)
class Document:
    """One source file: its absolute path and the stable key used for the held-out split."""

    path: Path
    key: str

    def stat(self) -> os.stat_result:
        """The file's status; a file that vanished (or cannot be reached) since the corpus was listed is a
        `CorpusError`."""
        try:
            return self.path.stat()
        except OSError as error:
            raise CorpusError(
                f"cannot read corpus file {self.path}: {error.strerror} (it changed while the corpus was listed or "
                "prepared; rerun)"
            ) from None


def stdlib_root() -> Path:
    """The running Python's standard library directory: the default corpus, present offline everywhere."""
    return Path(sysconfig.get_paths()["stdlib"])


def _walk(root: Path, pattern: str) -> list[Document]:
    docs = []
    for path in sorted(root.rglob(pattern)):
        parts = path.relative_to(root).parts
        if "site-packages" in parts or "__pycache__" in parts or any(p.startswith(".") for p in parts):
            continue
        if path.is_file():
            docs.append(Document(path, path.relative_to(root).as_posix()))
    return docs


def resolve_documents(corpus: str | Sequence[str]) -> list[Document]:
    """Expands a corpus spec into documents, sorted and deduplicated.

    `"stdlib"` is every `.py` file of the running Python's standard library (site-packages excluded). Otherwise
    each entry is a file, a directory (all files below it) or a glob pattern.
    """
    specs = [corpus] if isinstance(corpus, str) else list(corpus)
    if not specs:
        raise CorpusError("data.corpus is empty: give 'stdlib' or a list of files, directories or globs")
    docs: list[Document] = []
    for spec in specs:
        if spec == "stdlib":
            docs += _walk(stdlib_root(), "*.py")
            continue
        path = Path(os.path.expanduser(spec))
        if path.is_dir():
            docs += _walk(path, "*")
        elif path.is_file():
            docs.append(Document(path, path.name))
        elif glob.has_magic(spec):
            matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True))
            files = [p for p in matches if p.is_file()]
            if not files:
                raise CorpusError(f"corpus glob matched no files: {spec}")
            docs += [Document(p, p.as_posix()) for p in files]
        else:
            raise CorpusError(f"corpus path not found: {spec} (give an existing file, directory or glob, or 'stdlib')")
    unique = {doc.path.resolve(): doc for doc in docs}
    if not unique:
        raise CorpusError(f"corpus {corpus!r} contains no files")
    return sorted(unique.values(), key=lambda d: (d.key, str(d.path)))


def _heldout_score(key: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_documents(
    docs: Sequence[Document], eval_fraction: float, seed: int = 0
) -> tuple[list[Document], list[Document]]:
    """Deterministic train / held-out split by file: a file is held out when a hash of its key is small.

    The key is the path relative to its corpus root, so the split is the same on every machine. With at least
    two files and eval_fraction > 0, at least one file is held out and at least one is trained on.
    """
    if eval_fraction <= 0 or len(docs) < 2:
        return list(docs), []
    ranked = sorted(docs, key=lambda d: _heldout_score(d.key, seed))
    num_eval = min(len(docs) - 1, max(1, round(eval_fraction * len(docs))))
    heldout = {id(d) for d in ranked[:num_eval]}
    return [d for d in docs if id(d) not in heldout], [d for d in docs if id(d) in heldout]


@dataclass(frozen=True)
class PreparedCorpus:
    """A prepared corpus: byte stream and word boundaries, as tensorstore arrays (or in-memory numpy arrays).

    `word_starts[i]` is the byte offset of word i; `word_starts[-1] == num_bytes`. `doc_ends` holds the offset of
    every end-of-text separator byte (one after each document).
    """

    bytes: Array
    word_starts: Array
    doc_ends: np.ndarray
    num_text_bytes: int

    @property
    def num_bytes(self) -> int:
        return int(self.bytes.shape[0])

    @property
    def num_words(self) -> int:
        return int(self.word_starts.shape[0]) - 1

    def read_bytes(self, start: int, stop: int) -> np.ndarray:
        """Bytes [start, stop) as a uint8 numpy array."""
        return read_range(self.bytes, start, stop)

    def read_word_starts(self, start: int, stop: int) -> np.ndarray:
        """Word start offsets [start, stop) as an int64 numpy array."""
        return read_range(self.word_starts, start, stop)


def read_document(doc: Document) -> bytes:
    """The file's bytes; an unreadable file is a one-line `CorpusError`."""
    try:
        return doc.path.read_bytes()
    except OSError as error:
        raise CorpusError(f"cannot read corpus file {doc.path}: {error.strerror}") from None


def iter_document_words(
    docs: Iterable[Document], max_word_bytes: int | None
) -> Iterable[tuple[Document, bytes, np.ndarray]]:
    """Yields (document, its bytes, its word lengths); empty documents yield empty arrays."""
    for doc in docs:
        data = read_document(doc)
        yield doc, data, word_lengths(data, max_word_bytes)


def prepare_in_memory(
    docs: Sequence[Document] | Sequence[bytes], max_word_bytes: int | None, special_tokens: SpecialTokens | None = None
) -> PreparedCorpus:
    """Prepares documents (files or raw byte strings) into numpy arrays; for evaluation of a few files. With
    `special_tokens`, each document's special-token strings become their bytes first (as the released runtime
    feeds them)."""
    special_tokens = special_tokens or SpecialTokens({})
    chunks, lengths, doc_ends, offset = [], [], [], 0
    for doc in docs:
        data = special_tokens.encode(doc if isinstance(doc, bytes) else read_document(doc))
        chunks += [np.frombuffer(data, np.uint8), np.array([EOT_BYTE], np.uint8)]
        lengths += [
            word_lengths(data, max_word_bytes, special_tokens.special_bytes).astype(np.int64),
            np.ones(1, np.int64),
        ]
        offset += len(data)
        doc_ends.append(offset)
        offset += 1
    data = np.concatenate(chunks) if chunks else np.zeros(0, np.uint8)
    starts = np.concatenate([[0], np.cumsum(np.concatenate(lengths))]) if lengths else np.zeros(1, np.int64)
    return PreparedCorpus(data, starts.astype(np.int64), np.asarray(doc_ends, np.int64), offset - len(doc_ends))


def prepare_corpus(
    docs: Sequence[Document], cache_dir: str | Path, max_word_bytes: int | None, name: str = "corpus"
) -> PreparedCorpus:
    """Splits `docs` into words and writes them as tensorstore arrays under `cache_dir`, or reuses a prior run's.

    The directory appears atomically (`hat.data.cache.build_once`), so a run killed while preparing, or stopped by
    a full disk (a one-line `StorageError`), never leaves a half-written corpus that a later run would trust.
    """
    if not docs:
        raise CorpusError(f"{name}: no documents to prepare")
    final = Path(cache_dir) / f"{name}-{cache_key(docs, PREPARED_FORMAT_VERSION, max_word_bytes)}"
    write = lambda out: _write_prepared(docs, out, max_word_bytes, name)  # noqa: E731
    return load_prepared(build_once(final, write, what=f"the prepared {name} corpus"))


def _write_prepared(docs: Sequence[Document], out: Path, max_word_bytes: int | None, name: str) -> None:
    byte_out = Appender.create(out / "bytes", np.uint8)
    start_out = Appender.create(out / "word_starts", np.int64)
    start_out.append(np.zeros(1, np.int64))
    offset, doc_ends, skipped = 0, [], []
    total = sum(doc.stat().st_size for doc in docs)
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"preparing {name}", leave=False) as bar:
        for doc, data, lengths in iter_document_words(docs, max_word_bytes):
            bar.update(len(data))
            if not data:
                skipped.append(doc.key)
                continue
            byte_out.append(np.frombuffer(data, np.uint8))
            byte_out.append(np.array([EOT_BYTE], np.uint8))
            start_out.append(offset + np.cumsum(lengths, dtype=np.int64))
            offset += len(data)
            doc_ends.append(offset)
            offset += 1
            start_out.append(np.array([offset], np.int64))
    byte_out.flush()
    start_out.flush()
    # Through Python's own file write: numpy's writes report a full disk as an OSError without errno.
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(doc_ends, np.int64))
    (out / "doc_ends.npy").write_bytes(buffer.getvalue())
    manifest = {
        "format_version": PREPARED_FORMAT_VERSION,
        "max_word_bytes": max_word_bytes,
        "num_documents": len(doc_ends),
        "num_text_bytes": offset - len(doc_ends),
        "num_words": start_out.size - 1,
        "skipped_empty": skipped,
        "documents": [str(doc.path) for doc in docs],
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))


def load_prepared(path: str | Path) -> PreparedCorpus:
    """Opens a prepared corpus directory written by `prepare_corpus`."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CorpusError(f"not a prepared corpus (no {MANIFEST}): {path}")
    manifest = json.loads(manifest_path.read_text())
    return PreparedCorpus(
        bytes=open_array(path / "bytes"),
        word_starts=open_array(path / "word_starts"),
        doc_ends=np.load(path / "doc_ends.npy"),
        num_text_bytes=int(manifest["num_text_bytes"]),
    )
