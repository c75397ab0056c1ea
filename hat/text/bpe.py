"""Byte-level BPE: train a tokenizer on a corpus (HF `tokenizers`), save and load it, encode any bytes.

The tokenizer is HF `tokenizers`' BPE model over the 256 byte values (GPT-2's byte-to-character map) plus one
special token, `<|endoftext|>` (id 0), with our own pre-tokenizer: text is first cut into chunks and BPE merges
never cross a chunk boundary. The chunk rule works on raw bytes, so any byte string (invalid UTF-8, a prefix that
ends inside a character) has exactly one encoding:

    chunk := " "? [A-Za-z0-9_\\x80-\\xff]+  |  " "? [^ \\t\\n\\v\\f\\r A-Za-z0-9_\\x80-\\xff]+  |  [ \\t\\n\\v\\f\\r]+

(word bytes, every non-ASCII byte counting as a word byte; punctuation; whitespace runs; a single leading space
joins the word or punctuation after it). On valid UTF-8 it equals the same regex over characters, which is what the
saved tokenizer.json carries, so the file also works on its own with HF `tokenizers`.

Unlike GPT-2's rule (whose `\\s+(?!\\S)` looks ahead) this rule is *prefix-stable*: the chunk boundaries of a
prefix w of y are exactly y's boundaries inside w (w's last chunk may be a proper prefix of one of y's chunks).
Together with BPE's own prefix property (merges inside a prefix of a token sequence happen as if the rest were
absent), this makes "t is a prefix of the canonical encoding of some text" equivalent to
`encode(decode(t)) == t`, which `hat.byteprob` relies on.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

from hat.errors import HatError, writing

EOT_TOKEN = "<|endoftext|>"
EOT_ID = 0

_WORD = rb"A-Za-z0-9_\x80-\xff"
_SPACE = rb"\t\n\x0b\x0c\r "
CHUNK_RE = re.compile(rb" ?[" + _WORD + rb"]+| ?[^" + _SPACE + _WORD + rb"]+|[" + _SPACE + rb"]+")
# The same rule over characters (every non-ASCII character consists of non-ASCII bytes), for tokenizer.json.
_WORD_STR = r"A-Za-z0-9_\x{80}-\x{10FFFF}"
_SPACE_STR = r"\t\n\x0b\x0c\r "
_CHUNK_PATTERN_STR = rf" ?[{_WORD_STR}]+| ?[^{_SPACE_STR}{_WORD_STR}]+|[{_SPACE_STR}]+"


class TokenizerError(HatError, ValueError):
    """A tokenizer file is missing, unreadable or not a byte-level BPE tokenizer written by hat."""


def _bytes_to_unicode() -> list[str]:
    """GPT-2's map from byte values to printable characters (the byte-level alphabet HF `tokenizers` uses)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for value in range(256):
        if value in printable:
            chars[value] = chr(value)
        else:
            chars[value] = chr(256 + extra)
            extra += 1
    return [chars[value] for value in range(256)]


BYTE_CHARS = _bytes_to_unicode()
_CHAR_TO_BYTE = {char: value for value, char in enumerate(BYTE_CHARS)}
# bytes.decode("latin-1") maps byte v to chr(v); this table then maps chr(v) to its byte-level character.
_TO_BYTE_CHARS = {value: char for value, char in enumerate(BYTE_CHARS)}


def has_hat_rule(spec: dict) -> bool:
    """Whether a parsed tokenizer.json pre-tokenizes with hat's own chunk rule (see the module docstring)."""
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    return any(s.get("type") == "Split" and s.get("pattern", {}).get("Regex") == _CHUNK_PATTERN_STR for s in steps)


def split_chunks(data: bytes) -> list[bytes]:
    """The pre-tokenizer: `data` cut into chunks (lossless: they concatenate back to `data`)."""
    return CHUNK_RE.findall(data)


def chunk_start(data: bytes) -> int:
    """Offset of the last chunk of `data` (0 for empty data): bytes before it are encoded independently of
    anything appended to `data`."""
    start = 0
    for match in CHUNK_RE.finditer(data):
        start = match.start()
    return start


def _byte_chars(chunk: bytes) -> str:
    return chunk.decode("latin-1").translate(_TO_BYTE_CHARS)


class TokenBytes:
    """What a byte-level tokenizer's `token_bytes[id]` (b"" for end-of-text and special tokens) gives: token
    lengths, the longest token, decoding. Shared by hat's own `BPETokenizer` and foreign `HFByteBPE` files."""

    token_bytes: list[bytes]

    @cached_property
    def token_lengths(self) -> np.ndarray:
        """Bytes per token (int32, vocab_size; 0 for tokens without bytes)."""
        return np.array([len(b) for b in self.token_bytes], np.int32)

    @property
    def max_token_bytes(self) -> int:
        """The longest token, in bytes."""
        return int(self.token_lengths.max())

    def decode(self, ids: Iterable[int]) -> bytes:
        """The bytes of a token sequence (tokens without bytes decode to nothing)."""
        return b"".join(self.token_bytes[i] for i in ids)


class BPETokenizer(TokenBytes):
    """A byte-level BPE tokenizer: `encode(bytes) -> ids`, `decode(ids) -> bytes`, `token_bytes[id]`.

    Id 0 is `<|endoftext|>` (`eot_id`; decodes to no bytes); every other id decodes to a non-empty byte string and
    all 256 single bytes are tokens, so every byte string has an encoding.
    """

    eot_id = EOT_ID

    def __init__(self, tokenizer: Tokenizer, path: Path | None = None) -> None:
        self.hf = tokenizer
        self.path = path
        # The same BPE model without a pre-tokenizer, fed chunks already cut and mapped to byte-level characters.
        self._bpe = Tokenizer.from_str(tokenizer.to_str())
        self._bpe.pre_tokenizer = pre_tokenizers.Sequence([])
        vocab = tokenizer.get_vocab()
        spec = json.loads(tokenizer.to_str())
        if vocab.get(EOT_TOKEN) != EOT_ID or any(c not in vocab for c in BYTE_CHARS) or not has_hat_rule(spec):
            raise TokenizerError(
                f"{path or 'tokenizer'}: not a hat byte-level BPE tokenizer (needs {EOT_TOKEN} as id 0, all 256 "
                "byte tokens and hat's chunk rule); train one with hat.text.bpe.train_tokenizer, or load a foreign "
                "tokenizer with hat.text.hf_bpe.load_any_tokenizer"
            )
        self.vocab_size = max(vocab.values()) + 1
        self.token_bytes: list[bytes] = [b""] * self.vocab_size
        for token, index in vocab.items():
            if index != EOT_ID:
                self.token_bytes[index] = bytes(_CHAR_TO_BYTE[c] for c in token)

    def encode(self, data: bytes) -> list[int]:
        """The canonical encoding of `data` (any bytes): BPE of each chunk, concatenated."""
        if not data:
            return []
        return self._bpe.encode([_byte_chars(c) for c in split_chunks(data)], is_pretokenized=True).ids

    def encode_batch(self, texts: Sequence[bytes]) -> list[list[int]]:
        """`encode` of many byte strings at once (HF encodes the batch in parallel)."""
        chunked = [[_byte_chars(c) for c in split_chunks(t)] for t in texts]
        nonempty = [i for i, chunks in enumerate(chunked) if chunks]
        out: list[list[int]] = [[] for _ in texts]
        for i, encoding in zip(nonempty, self._bpe.encode_batch([chunked[i] for i in nonempty], is_pretokenized=True)):
            out[i] = encoding.ids
        return out

    def save(self, path: str | Path) -> None:
        """Writes tokenizer.json atomically: `path` holds the previous file or the new one, never a part of it; a
        full or unwritable disk is a one-line `hat.errors.StorageError`.

        (`hat.data.atomic.replace_file` does the same for text, but `hat.text` sits below `hat.data`.)
        """
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with writing(f"the tokenizer {path}", "the previous file there, if any, is unchanged"):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self.hf.save(str(tmp))
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise


def _new_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_CHUNK_PATTERN_STR), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    return tokenizer


def train_tokenizer(texts: Iterable[bytes], vocab_size: int) -> BPETokenizer:
    """Trains byte-level BPE on `texts` to `vocab_size` ids (end-of-text and the 256 bytes included)."""
    if vocab_size < 257:
        raise TokenizerError(f"vocab_size must be at least 257 (end-of-text + 256 bytes), got {vocab_size}")
    tokenizer = _new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT_TOKEN],
        initial_alphabet=BYTE_CHARS,
        show_progress=False,
    )

    # HF's trainer runs the saved pre-tokenizer over characters; it equals `split_chunks` on valid UTF-8, and the
    # few invalid bytes of a training text only shift merge statistics, never the encoding rule.
    tokenizer.train_from_iterator((text.decode("utf-8", errors="replace") for text in texts), trainer)
    return BPETokenizer(tokenizer)


def load_tokenizer(path: str | Path) -> BPETokenizer:
    """Loads a tokenizer.json written by `BPETokenizer.save`; a missing or invalid file is a `TokenizerError`."""
    path = Path(path)
    if not path.is_file():
        raise TokenizerError(f"tokenizer file not found: {path}")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises a bare Exception for unreadable JSON
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise TokenizerError(f"cannot read tokenizer file {path}: {first_line}") from None
    return BPETokenizer(tokenizer, path)


def corpus_tokenizer_path(cache_dir: str | Path, fingerprint: str, vocab_size: int) -> Path:
    """Where the tokenizer trained on a corpus with `fingerprint` at `vocab_size` is cached."""
    key = hashlib.sha256(json.dumps([fingerprint, vocab_size, CHUNK_RE.pattern.decode("latin-1")]).encode())
    return Path(cache_dir) / f"tokenizer-{key.hexdigest()[:16]}.json"
