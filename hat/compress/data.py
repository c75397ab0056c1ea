"""M2's data: a corpus compressed with EqualInfoAC into token arrays (tensorstore), and the grain source over them.

A prepared token corpus holds `tokens` (uint16, every window cut into `tokens_per_window` tokens) and
`window_offsets` (int64, `num_windows + 1` byte offsets into the concatenated text: window i covers bytes
`[offsets[i], offsets[i + 1])`). Documents are compressed in chunks; after each chunk the arrays are flushed and a
progress file records how far they are valid, so an interrupted preparation resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grain
import numpy as np
from tqdm import tqdm

from hat.compress.equal_info import M1, WindowSpec, encode_segments, split_segments, windows_to_tokens
from hat.config import Config
from hat.data import CorpusError, Document
from hat.data.arrays import Appender, Array, open_array, read_range
from hat.data.cache import cache_key
from hat.data.corpus import read_document
from hat.data.run import RunData, cache_directory, split_run_documents

TOKEN_FORMAT_VERSION = 1


@dataclass(frozen=True)
class TokenCorpus:
    """Window tokens and window byte offsets (tensorstore arrays, or numpy arrays for a few files)."""

    tokens: Array
    window_offsets: Array
    tokens_per_window: int
    path: Path | None = None

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def num_windows(self) -> int:
        return int(self.window_offsets.shape[0]) - 1

    @property
    def num_bytes(self) -> int:
        if not self.num_windows:
            return 0
        return int(read_range(self.window_offsets, self.num_windows, self.num_windows + 1)[0])


def take_budget(docs: Sequence[Document], max_bytes: int) -> list[Document]:
    """Documents in a fixed pseudo-random order (a hash of each key) until `max_bytes` are covered (0: all, in
    their own order). The last one may be cut by the budget when prepared."""
    if max_bytes <= 0:
        return list(docs)
    ranked = sorted(docs, key=lambda d: hashlib.sha256(d.key.encode()).digest())
    chosen, total = [], 0
    for doc in ranked:
        if total >= max_bytes:
            break
        chosen.append(doc)
        total += doc.path.stat().st_size
    return chosen


def _fingerprint(docs: Sequence[Document], m1: M1, spec: WindowSpec, segment_bytes: int, max_bytes: int) -> str:
    return cache_key(docs, TOKEN_FORMAT_VERSION, m1.identity, m1.batch_size, spec, segment_bytes, max_bytes)


def _document_chunks(docs: Sequence[Document], start: int, max_bytes: int, chunk_bytes: int, used: int):
    """Yields (index after the chunk, bytes of each document in it), honouring the byte budget."""
    index, chunk, size = start, [], 0
    while index < len(docs):
        data = read_document(docs[index])
        if max_bytes > 0:
            data = data[: max(max_bytes - used - size, 0)]
        chunk.append(data)
        size += len(data)
        index += 1
        if size >= chunk_bytes:
            yield index, chunk
            used, chunk, size = used + size, [], 0
    if chunk:
        yield index, chunk


def prepare_token_corpus(
    docs: Sequence[Document], m1: M1, spec: WindowSpec, segment_bytes: int, cache_dir: Path, name: str,
    max_bytes: int = 0,
) -> TokenCorpus:
    """Compresses `docs` (at most `max_bytes` of them; 0: all) into a token corpus under `cache_dir`; reuses a
    finished one and resumes an interrupted one."""
    if not docs:
        raise CorpusError(f"{name}: no documents to compress")
    out = Path(cache_dir) / f"{name}-eqinfo-{_fingerprint(docs, m1, spec, segment_bytes, max_bytes)}"
    if (out / "manifest.json").is_file():
        return load_token_corpus(out)
    out.mkdir(parents=True, exist_ok=True)
    progress_path = out / "progress.json"
    if progress_path.is_file():
        progress = json.loads(progress_path.read_text())
        # Writes after the last recorded chunk may be partial: cut them off.
        tokens = Appender.reopen(out / "tokens", progress["num_tokens"])
        offsets = Appender.reopen(out / "window_offsets", progress["num_windows"] + 1)
    else:
        progress = {"documents_done": 0, "num_tokens": 0, "num_windows": 0, "num_bytes": 0}
        tokens = Appender.create(out / "tokens", np.uint16)
        offsets = Appender.create(out / "window_offsets", np.int64)
        offsets.append(np.zeros(1, np.int64))
    total = sum(doc.path.stat().st_size for doc in docs)
    total = min(total, max_bytes) if max_bytes > 0 else total
    chunk_bytes = 2 * m1.batch_size * segment_bytes
    with tqdm(total=total, initial=progress["num_bytes"], unit="B", unit_scale=True, desc=f"compressing {name}") as bar:
        chunks = _document_chunks(docs, progress["documents_done"], max_bytes, chunk_bytes, progress["num_bytes"])
        for done, chunk in chunks:
            segments = [segment for data in chunk for segment in split_segments(data, segment_bytes)]
            per_segment = encode_segments(m1, segments, spec, bar.update)
            windows = [w for segment_windows, _ in per_segment for w in segment_windows]
            lengths = np.asarray([n for _, segment_lengths in per_segment for n in segment_lengths], np.int64)
            chunk_tokens = windows_to_tokens(windows, spec).astype(np.uint16)
            tokens.append(chunk_tokens)
            offsets.append(progress["num_bytes"] + np.cumsum(lengths))
            tokens.flush()
            offsets.flush()
            progress = {
                "documents_done": done,
                "num_tokens": progress["num_tokens"] + len(chunk_tokens),
                "num_windows": progress["num_windows"] + len(windows),
                "num_bytes": progress["num_bytes"] + int(lengths.sum()),
            }
            tmp = progress_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(progress))
            os.replace(tmp, progress_path)
    manifest = progress | {
        "format_version": TOKEN_FORMAT_VERSION,
        "m1": m1.identity,
        "window_bits": spec.window_bits,
        "token_bits": spec.token_bits,
        "max_window_bytes": spec.max_window_bytes,
        "precision": spec.precision,
        "m1_batch_size": m1.batch_size,
        "segment_bytes": segment_bytes,
        "documents": [str(doc.path) for doc in docs],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return load_token_corpus(out)


def load_token_corpus(path: str | Path) -> TokenCorpus:
    """Opens a token corpus written by `prepare_token_corpus`."""
    path = Path(path)
    if not (path / "manifest.json").is_file():
        raise CorpusError(f"not a prepared token corpus (no manifest.json): {path}")
    manifest = json.loads((path / "manifest.json").read_text())
    return TokenCorpus(
        tokens=open_array(path / "tokens"),
        window_offsets=open_array(path / "window_offsets"),
        tokens_per_window=manifest["window_bits"] // manifest["token_bits"],
        path=path,
    )


def compress_in_memory(m1: M1, texts: Sequence[bytes], spec: WindowSpec, segment_bytes: int) -> TokenCorpus:
    """A token corpus of a few byte strings, in numpy arrays (for evaluation)."""
    segments = [segment for data in texts for segment in split_segments(data, segment_bytes)]
    per_segment = encode_segments(m1, segments, spec)
    windows = [w for segment_windows, _ in per_segment for w in segment_windows]
    lengths = np.asarray([n for _, segment_lengths in per_segment for n in segment_lengths], np.int64)
    offsets = np.concatenate([np.zeros(1, np.int64), np.cumsum(lengths)])
    return TokenCorpus(windows_to_tokens(windows, spec).astype(np.uint16), offsets, spec.tokens_per_window)


@dataclass(frozen=True)
class TokenSequences(grain.sources.RandomAccessDataSource):
    """Examples of `seq_tokens` consecutive tokens: inputs tokens [i*T, i*T + T), targets shifted by one.

    Consecutive examples score every token but the corpus's first exactly once. `target_bytes` gives each target
    token its share of its window's bytes (window bytes / tokens per window), so bits per byte come out exactly.
    """

    corpus: TokenCorpus
    seq_tokens: int

    def __len__(self) -> int:
        return max(0, math.ceil((self.corpus.num_tokens - 1) / self.seq_tokens))

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        start = index * self.seq_tokens
        stop = min(start + self.seq_tokens + 1, self.corpus.num_tokens)
        tokens = read_range(self.corpus.tokens, start, stop).astype(np.int32)
        n = len(tokens) - 1
        per = self.corpus.tokens_per_window
        first_window, last_window = (start + 1) // per, (stop - 1) // per
        offsets = read_range(self.corpus.window_offsets, first_window, last_window + 2)
        window_of_target = np.arange(start + 1, stop) // per - first_window
        example = {
            "inputs": np.zeros(self.seq_tokens, np.int32),
            "targets": np.zeros(self.seq_tokens, np.int32),
            "word_ids": np.zeros(self.seq_tokens, np.int32),
            "loss_mask": np.zeros(self.seq_tokens, np.float32),
            "target_bytes": np.zeros(self.seq_tokens, np.float32),
        }
        example["inputs"][:n] = tokens[:-1]
        example["targets"][:n] = tokens[1:]
        example["loss_mask"][:n] = 1.0
        example["target_bytes"][:n] = np.diff(offsets)[window_of_target] / per
        example["text_mask"] = example["loss_mask"].copy()
        return example


def spec_from_config(config: Config) -> WindowSpec:
    """The window spec of `data.eqinfo`."""
    eq = config.data.eqinfo
    return WindowSpec(eq.window_bits, eq.token_bits, eq.max_window_bytes, eq.precision)


def load_m1(config: Config) -> M1:
    """M1 as `data.eqinfo` configures it (checkpoint, batch shape, window)."""
    eq = config.data.eqinfo
    return M1.from_checkpoint(eq.m1_checkpoint, eq.m1_batch_size, eq.max_window_bytes)


def prepare_eqinfo_data(config: Config) -> RunData:
    """A run's data for `data.format: eqinfo`: split the corpus by file, take each part's byte budget, compress
    both with M1 (cached, resumable) and serve `seq_tokens`-token examples."""
    eq = config.data.eqinfo
    train_docs, heldout_docs = split_run_documents(config)
    train_docs = take_budget(train_docs, eq.max_train_bytes)
    heldout_docs = take_budget(heldout_docs, eq.max_heldout_bytes)
    cache_dir = cache_directory(config)
    m1, spec = load_m1(config), spec_from_config(config)
    prepare = lambda part, budget, name: prepare_token_corpus(  # noqa: E731
        part, m1, spec, eq.segment_bytes, cache_dir, name, budget
    )
    train = prepare(train_docs, eq.max_train_bytes, "train")
    heldout = prepare(heldout_docs, eq.max_heldout_bytes, "heldout") if heldout_docs else None
    return RunData(
        TokenSequences(train, eq.seq_tokens),
        TokenSequences(heldout, eq.seq_tokens) if heldout else None,
        len(train_docs),
        len(heldout_docs),
        train.num_bytes,
    )
