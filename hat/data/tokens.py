"""Byte-level BPE data for token LMs: a trained tokenizer and the corpus as a token store
(`hat.data.token_store`), whose `TokenSequences` are the training examples.

The token stream is `[EOT] doc_1 [EOT] doc_2 [EOT] ...` (EOT = end-of-text, id 0) beside each token's length in
bytes (0 for EOT), so bits per byte = summed target NLL / summed target bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hat.config import Config
from hat.data.arrays import Array
from hat.data.cache import build_once, cache_key
from hat.data.corpus import CorpusError, Document, read_document
from hat.data.run import RunData, cache_directory, split_run_documents
from hat.data.token_store import TokenSequences, TokenStore, TokenStoreWriter, store_key
from hat.text.bpe import EOT_ID, BPETokenizer, corpus_tokenizer_path, load_tokenizer, train_tokenizer

# The key of a cached tokenizer has its own version: the tokenizer file does not change with the token store.
_TOKENIZER_CACHE_VERSION = 1


class BPETokens(TokenStore):
    """A BPE token stream and each token's length in bytes (`token_bytes`); `num_text_bytes` in the manifest."""

    KIND = "bpe"
    DTYPES = {"tokens": np.int32, "token_bytes": np.uint8}

    @property
    def token_bytes(self) -> Array:
        """Each token's length in bytes, [num_tokens]."""
        return self.arrays["token_bytes"]

    @property
    def num_text_bytes(self) -> int:
        return int(self.manifest["num_text_bytes"])

    def bytes_per_token(self, start: int, stop: int) -> np.ndarray:
        return self.read("token_bytes", start, stop)

    def is_text(self, tokens: np.ndarray) -> np.ndarray:
        return tokens != EOT_ID


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


def tokens_in_memory(tokenizer: BPETokenizer, texts: Sequence[bytes]) -> BPETokens:
    """The token stream of a few documents (byte strings) as numpy arrays; for evaluation."""
    pieces = [np.array([EOT_ID], np.int32)]
    for ids in encode_documents(tokenizer, texts):
        pieces += [np.asarray(ids, np.int32), np.array([EOT_ID], np.int32)]
    tokens = np.concatenate(pieces)
    lengths = tokenizer.token_lengths[tokens]
    return BPETokens.in_memory({"num_text_bytes": int(lengths.sum(dtype=np.int64))}, tokens=tokens, token_bytes=lengths)


def prepare_tokens(tokenizer: BPETokenizer, docs: Sequence[Document], cache_dir: Path, name: str) -> BPETokens:
    """Encodes `docs` into a token store under `cache_dir` (reused when the files and tokenizer match), written
    once and atomically (`hat.data.cache.build_once`) like `hat.data.prepare_corpus`."""
    tokenizer_hash = hashlib.sha256(tokenizer.hf.to_str().encode()).hexdigest()[:16]
    final = Path(cache_dir) / f"{name}-bpe-{store_key(docs, tokenizer_hash)}"
    write = lambda out: _write_tokens(tokenizer, docs, out, name)  # noqa: E731
    return BPETokens.open(build_once(final, write, what=f"the {name} token corpus"))


def _write_tokens(tokenizer: BPETokenizer, docs: Sequence[Document], out: Path, name: str) -> None:
    writer = TokenStoreWriter(out, BPETokens)
    num_text_bytes = 0

    def append(ids_N: np.ndarray) -> None:
        writer.append("tokens", ids_N)
        writer.append("token_bytes", tokenizer.token_lengths[ids_N])

    append(np.array([EOT_ID], np.int32))
    batch = 64
    for start in tqdm(range(0, len(docs), batch), desc=f"encoding {name}", leave=False):
        texts = [read_document(doc) for doc in docs[start : start + batch]]
        for text, ids in zip(texts, encode_documents(tokenizer, texts)):
            if text:
                num_text_bytes += len(text)
                append(np.asarray([*ids, EOT_ID], np.int32))
    writer.finish(num_text_bytes=num_text_bytes)


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
        key = cache_key(train_docs, _TOKENIZER_CACHE_VERSION, bpe.train_bytes)
        cached = corpus_tokenizer_path(cache_dir, key, bpe.vocab_size)
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
