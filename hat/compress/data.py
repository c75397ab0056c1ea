"""M2's data: a corpus compressed with EqualInfoAC into a token store (`hat.data.token_store`), whose
`TokenSequences` are M2's training examples.

A prepared token corpus holds `tokens` (uint16, every window cut into `tokens_per_window` tokens) and
`window_offsets` (int64, `num_windows + 1` byte offsets into the concatenated text: window i covers bytes
`[offsets[i], offsets[i + 1])`). Documents are compressed in chunks; after each chunk the arrays are written and
their progress recorded, so an interrupted preparation resumes where it stopped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hat.compress.equal_info import (
    M1,
    WINDOW_CODE_VERSION,
    Windows,
    WindowSpec,
    encode_segments,
    split_segments,
    windows_to_tokens,
)
from hat.compress.workers import Coders
from hat.config import Config
from hat.data import CorpusError, Document
from hat.data.arrays import Array
from hat.data.cache import build_once
from hat.data.corpus import read_document
from hat.data.run import RunData, cache_directory, split_run_documents
from hat.data.token_store import TokenSequences, TokenStore, TokenStoreWriter, store_key


class WindowTokens(TokenStore):
    """EqualInfoAC window tokens and the windows' byte offsets (`window_offsets`); `tokens_per_window` in the
    manifest. Each token stands for an equal share of its window's bytes."""

    KIND = "eqinfo"
    DTYPES = {"tokens": np.uint16, "window_offsets": np.int64}

    @property
    def window_offsets(self) -> Array:
        """Byte offsets of the windows, [num_windows + 1]."""
        return self.arrays["window_offsets"]

    @property
    def tokens_per_window(self) -> int:
        return int(self.manifest["tokens_per_window"])

    @property
    def num_windows(self) -> int:
        return int(self.window_offsets.shape[0]) - 1

    @property
    def num_bytes(self) -> int:
        if not self.num_windows:
            return 0
        return int(self.read("window_offsets", self.num_windows, self.num_windows + 1)[0])

    def bytes_per_token(self, start: int, stop: int) -> np.ndarray:
        per = self.tokens_per_window
        first_window, last_window = start // per, (stop - 1) // per
        offsets = self.read("window_offsets", first_window, last_window + 2)
        window_of_token = np.arange(start, stop) // per - first_window
        return np.diff(offsets)[window_of_token] / per


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


def _segments(texts: Sequence[bytes], segment_bytes: int) -> list[bytes]:
    return [segment for data in texts for segment in split_segments(data, segment_bytes)]


def _tokens(windows: Windows, spec: WindowSpec) -> tuple[np.ndarray, np.ndarray]:
    """The window tokens (uint16) and the byte length of each window (int64)."""
    return windows_to_tokens(windows.values, spec).astype(np.uint16), windows.lengths


def prepare_token_corpus(
    docs: Sequence[Document],
    m1: M1,
    spec: WindowSpec,
    segment_bytes: int,
    cache_dir: Path,
    name: str,
    max_bytes: int = 0,
    workers: int = 1,
) -> WindowTokens:
    """Compresses `docs` (at most `max_bytes` of them; 0: all) into a token corpus under `cache_dir`; reuses a
    finished one and resumes an interrupted one (its hidden partial directory, `hat.data.cache.build_once`).
    Chunks of the corpus are compressed by `workers` processes at once (`hat.compress.workers`; 0: one per CPU core
    on a CPU): the tokens are the same whatever their number."""
    if not docs:
        raise CorpusError(f"{name}: no documents to compress")
    key = store_key(docs, WINDOW_CODE_VERSION, m1.identity, m1.device, m1.batch_size, spec, segment_bytes, max_bytes)
    final = Path(cache_dir) / f"{name}-eqinfo-{key}"
    write = lambda out: _write_windows(docs, m1, spec, segment_bytes, out, name, max_bytes, workers)  # noqa: E731
    return load_token_corpus(build_once(final, write, resumable=True, what=f"the {name} window tokens"))


def _write_windows(
    docs: Sequence[Document],
    m1: M1,
    spec: WindowSpec,
    segment_bytes: int,
    out: Path,
    name: str,
    max_bytes: int,
    workers: int,
) -> None:
    writer = TokenStoreWriter(out, WindowTokens, resume=True)
    state = writer.state
    if state is None:
        state = {"documents_done": 0, "num_bytes": 0}
        writer.append("window_offsets", np.zeros(1, np.int64))
    total = sum(doc.path.stat().st_size for doc in docs)
    total = min(total, max_bytes) if max_bytes > 0 else total
    # A few segments per lane, so lanes that finish early idle only at the end of a chunk. Each chunk's segments
    # are numbered from 0 (their lanes), so the chunks are part of the tokens' layout: independent of `workers`.
    chunk_bytes = 4 * m1.batch_size * segment_bytes
    chunks = _document_chunks(docs, state["documents_done"], max_bytes, chunk_bytes, state["num_bytes"])
    jobs = ((done, _segments(chunk, segment_bytes)) for done, chunk in chunks)
    bar = tqdm(total=total, initial=state["num_bytes"], unit="B", unit_scale=True, desc=f"compressing {name}")
    with bar, Coders(m1, workers) as coders:
        for done, windows in coders.encode_jobs(jobs, spec, bar.update):
            tokens, lengths = _tokens(windows, spec)
            writer.append("tokens", tokens)
            writer.append("window_offsets", state["num_bytes"] + np.cumsum(lengths))
            state = {"documents_done": done, "num_bytes": state["num_bytes"] + int(lengths.sum())}
            writer.checkpoint(state)
    writer.finish(
        **state,
        num_windows=writer.size("window_offsets") - 1,
        tokens_per_window=spec.tokens_per_window,
        m1=m1.identity,
        window_bits=spec.window_bits,
        token_bits=spec.token_bits,
        max_window_bytes=spec.max_window_bytes,
        precision=spec.precision,
        m1_batch_size=m1.batch_size,
        m1_device=m1.device,
        segment_bytes=segment_bytes,
        documents=[str(doc.path) for doc in docs],
    )


def load_token_corpus(path: str | Path) -> WindowTokens:
    """Opens a token corpus written by `prepare_token_corpus`."""
    return WindowTokens.open(path)


def compress_in_memory(m1: M1, texts: Sequence[bytes], spec: WindowSpec, segment_bytes: int) -> WindowTokens:
    """A token corpus of a few byte strings, in numpy arrays (for evaluation)."""
    tokens, lengths = _tokens(encode_segments(m1, _segments(texts, segment_bytes), spec), spec)
    offsets = np.concatenate([np.zeros(1, np.int64), np.cumsum(lengths)])
    return WindowTokens.in_memory({"tokens_per_window": spec.tokens_per_window}, tokens=tokens, window_offsets=offsets)


def spec_from_config(config: Config) -> WindowSpec:
    """The window spec of `data.eqinfo`."""
    eq = config.data.eqinfo
    return WindowSpec(eq.window_bits, eq.token_bits, eq.max_window_bytes, eq.precision)


def load_m1(config: Config) -> M1:
    """M1 as `data.eqinfo` configures it (checkpoint, batch shape, window)."""
    eq = config.data.eqinfo
    return M1.from_checkpoint(eq.m1_checkpoint, eq.m1_batch_size, eq.max_window_bytes, eq.precision)


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
        part, m1, spec, eq.segment_bytes, cache_dir, name, budget, eq.workers
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
