"""Byte-level BPE data for token LMs: a trained tokenizer, the corpus as tensorstore token arrays, fixed-length
token sequences as a grain source.

The token stream is `[EOT] doc_1 [EOT] doc_2 [EOT] ...` (EOT = end-of-text, id 0) beside each token's length in
bytes (0 for EOT). Sequence i holds stream positions [i L, (i + 1) L] (inputs are the first L, targets the last L),
so consecutive sequences score every token exactly once, and bits per byte = summed target NLL / summed target bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grain
import numpy as np
from tqdm import tqdm

from hat.config import Config
from hat.data.arrays import Appender, Array, open_array, read_range
from hat.data.cache import cache_key
from hat.data.corpus import CorpusError, Document, read_document
from hat.data.run import RunData, cache_directory, split_run_documents
from hat.text.bpe import EOT_ID, BPETokenizer, corpus_tokenizer_path, load_tokenizer, train_tokenizer

TOKEN_FORMAT_VERSION = 1


def _fingerprint(docs: Sequence[Document], *extra: object) -> str:
    return cache_key(docs, TOKEN_FORMAT_VERSION, *extra)


def encode_documents(tokenizer: BPETokenizer, texts: Sequence[bytes]) -> list[list[int]]:
    """Canonical encodings of whole documents; valid UTF-8 goes through HF's own pre-tokenizer (same result,
    faster), anything else through `BPETokenizer.encode`."""
    out: list[list[int]] = [[] for _ in texts]
    valid, strings = [], []
    for i, text in enumerate(texts):
        try:
            strings.append(text.decode("utf-8"))
            valid.append(i)
        except UnicodeDecodeError:
            out[i] = tokenizer.encode(text)
    for i, encoding in zip(valid, tokenizer.hf.encode_batch(strings)):
        out[i] = encoding.ids
    return out


@dataclass(frozen=True)
class TokenCorpus:
    """A token stream and each token's byte length, as tensorstore arrays (or numpy arrays for a few files)."""

    tokens: Array
    token_bytes: Array
    num_text_bytes: int

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.shape[0])

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokens and their byte lengths at stream positions [start, stop)."""
        return read_range(self.tokens, start, stop), read_range(self.token_bytes, start, stop)


def tokens_in_memory(tokenizer: BPETokenizer, texts: Sequence[bytes]) -> TokenCorpus:
    """The token stream of a few documents (byte strings) as numpy arrays; for evaluation."""
    pieces = [np.array([EOT_ID], np.int32)]
    for ids in encode_documents(tokenizer, texts):
        pieces += [np.asarray(ids, np.int32), np.array([EOT_ID], np.int32)]
    tokens = np.concatenate(pieces)
    lengths = tokenizer.token_lengths[tokens].astype(np.uint8)
    return TokenCorpus(tokens, lengths, int(lengths.sum(dtype=np.int64)))


def prepare_tokens(tokenizer: BPETokenizer, docs: Sequence[Document], cache_dir: Path, name: str) -> TokenCorpus:
    """Encodes `docs` into tensorstore arrays under `cache_dir` (reused when the files and tokenizer match).

    Written under a temporary name and renamed when complete, like `hat.data.prepare_corpus`.
    """
    tokenizer_hash = hashlib.sha256(tokenizer.hf.to_str().encode()).hexdigest()[:16]
    final = cache_dir / f"{name}-bpe-{_fingerprint(docs, tokenizer_hash)}"
    if not (final / "manifest.json").is_file():
        tmp = cache_dir / f".{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        token_out = Appender.create(tmp / "tokens", np.int32)
        length_out = Appender.create(tmp / "token_bytes", np.uint8)
        num_text_bytes = 0

        def append(ids: np.ndarray) -> None:
            token_out.append(ids)
            length_out.append(tokenizer.token_lengths[ids])

        append(np.array([EOT_ID], np.int32))
        batch = 64
        for start in tqdm(range(0, len(docs), batch), desc=f"encoding {name}", leave=False):
            texts = [read_document(doc) for doc in docs[start : start + batch]]
            for text, ids in zip(texts, encode_documents(tokenizer, texts)):
                if text:
                    num_text_bytes += len(text)
                    append(np.asarray(ids + [EOT_ID], np.int32))
        token_out.flush()
        length_out.flush()
        size = token_out.size
        manifest = {"format_version": TOKEN_FORMAT_VERSION, "num_tokens": size, "num_text_bytes": num_text_bytes}
        (tmp / "manifest.json").write_text(json.dumps(manifest))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    manifest = json.loads((final / "manifest.json").read_text())
    return TokenCorpus(
        open_array(final / "tokens"),
        open_array(final / "token_bytes"),
        int(manifest["num_text_bytes"]),
    )


@dataclass(frozen=True)
class TokenSequences(grain.sources.RandomAccessDataSource):
    """Random access to token training examples: int32 `inputs`, `targets`, `word_ids` (zeros; flat models ignore
    them), float32 `loss_mask`, `text_mask` (targets that are text, not EOT) and `target_bytes` (bytes per target).
    The last sequence is padded (masked) when the stream does not fill it."""

    corpus: TokenCorpus
    seq_tokens: int

    def __len__(self) -> int:
        return -(-(self.corpus.num_tokens - 1) // self.seq_tokens) if self.corpus.num_tokens > 1 else 0

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        start = index * self.seq_tokens
        tokens, lengths = self.corpus.read(start, min(start + self.seq_tokens + 1, self.corpus.num_tokens))
        n = len(tokens) - 1
        sequence = np.zeros(self.seq_tokens + 1, np.int32)
        sequence[: n + 1] = tokens
        target_bytes = np.zeros(self.seq_tokens, np.float32)
        target_bytes[:n] = lengths[1:]
        loss_mask = np.zeros(self.seq_tokens, np.float32)
        loss_mask[:n] = 1.0
        return {
            "inputs": sequence[:-1],
            "targets": sequence[1:],
            "word_ids": np.zeros(self.seq_tokens, np.int32),
            "loss_mask": loss_mask,
            "text_mask": (loss_mask * (sequence[1:] != EOT_ID)).astype(np.float32),
            "target_bytes": target_bytes,
        }


def tokenizer_path(config: Config) -> Path:
    """The tokenizer a BPE run uses: `data.bpe.tokenizer`, else the copy in its workdir."""
    return Path(config.data.bpe.tokenizer) if config.data.bpe.tokenizer else Path(config.workdir) / "tokenizer.json"


def resolve_tokenizer(config: Config, train_docs: Sequence[Document], cache_dir: Path) -> BPETokenizer:
    """Loads `data.bpe.tokenizer`, or trains one on `train_docs` (cached by their fingerprint and the settings)
    and copies it to `<workdir>/tokenizer.json`, where evaluation and generation find it."""
    bpe = config.data.bpe
    if bpe.tokenizer:
        tokenizer = load_tokenizer(bpe.tokenizer)
    else:
        cached = corpus_tokenizer_path(cache_dir, _fingerprint(train_docs, bpe.train_bytes), bpe.vocab_size)
        if not cached.is_file():

            def texts():
                seen = 0
                for doc in train_docs:
                    if bpe.train_bytes and seen >= bpe.train_bytes:
                        return
                    text = read_document(doc)
                    seen += len(text)
                    yield text

            train_tokenizer(texts(), bpe.vocab_size).save(cached)
        tokenizer = load_tokenizer(cached)
        tokenizer.save(Path(config.workdir) / "tokenizer.json")
    if tokenizer.vocab_size > config.model.vocab_size:
        raise CorpusError(
            f"tokenizer {tokenizer.path} has {tokenizer.vocab_size} ids but model.vocab_size is "
            f"{config.model.vocab_size}; set model.vocab_size and data.bpe.vocab_size to {tokenizer.vocab_size}"
        )
    return tokenizer


def prepare_bpe_data(config: Config) -> RunData:
    """A run's data for `data.format: bpe`: split by file, tokenizer, token arrays, sequences."""
    data_cfg = config.data
    train_docs, heldout_docs = split_run_documents(config)
    cache_dir = cache_directory(config)
    tokenizer = resolve_tokenizer(config, train_docs, cache_dir)
    train = prepare_tokens(tokenizer, train_docs, cache_dir, "train")
    if train.num_text_bytes == 0:
        raise CorpusError(f"the training files of data.corpus={data_cfg.corpus!r} hold no bytes")
    heldout = prepare_tokens(tokenizer, heldout_docs, cache_dir, "heldout") if heldout_docs else None
    length = data_cfg.bpe.seq_tokens
    return RunData(
        TokenSequences(train, length),
        TokenSequences(heldout, length) if heldout else None,
        len(train_docs),
        len(heldout_docs),
        train.num_text_bytes,
    )
