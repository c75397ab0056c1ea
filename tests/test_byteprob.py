"""Exact next-byte probabilities from a token model against brute-force enumeration over token sequences."""

import functools
import json.decoder
import math
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hat.byteprob import EOT_OUTCOME, ByteStream, RandomTokenModel, TokenTable, next_byte_logprobs, text_logprobs
from hat.text.bpe import EOT_ID, TokenizerError, load_tokenizer, train_tokenizer

TRAIN_TEXT = (
    "def print_all(items):\n    for item in items:\n        print(item)  # 日本語のテキスト\n"
    "    return None\n\n\nclass Printer:\n    pass\n emoji: 😀😀 🎉 中文 한국어 ñandú café naïve\n"
).encode()
PREFIXES = [
    "def pri",
    "print(it",
    "  for i",
    "\n\n    re",
    "日本語",
    "の",
    " 😀",
    "🎉!",
    "café n",
    "한국",
    "x = 1",
]


@pytest.fixture(scope="module")
def tokenizer():
    stdlib = [Path(textwrap.__file__).read_bytes(), Path(json.decoder.__file__).read_bytes()]
    tok = train_tokenizer([TRAIN_TEXT] * 40 + stdlib, vocab_size=257 + 300)
    assert tok.vocab_size == 557
    assert any(len(b) > 1 and b[0] >= 0xE0 for b in tok.token_bytes)  # merges inside CJK characters
    return tok


@pytest.fixture(scope="module")
def table(tokenizer):
    return TokenTable(tokenizer)


def all_prefixes():
    out = {b""}
    for text in PREFIXES:
        data = text.encode()
        out |= {data[:i] for i in range(1, len(data) + 1)}
    return sorted(out)


def brute_force(tokenizer, model, x: bytes) -> np.ndarray:
    """Next-byte weights by enumerating every token sequence whose bytes agree with x, checking validity literally
    (encode(decode(t)) == t) on each cover of x + one byte."""
    vocab = [(i, b) for i, b in enumerate(tokenizer.token_bytes) if i != EOT_ID]
    n = len(x)

    @functools.lru_cache(maxsize=None)
    def logprobs(prefix):
        return model.next_token_logprobs([prefix])[0]

    weights = np.zeros(257)

    def visit(seq, log_p, length):
        if length == n and tokenizer.encode(x) == list(seq):
            weights[EOT_OUTCOME] += math.exp(log_p + logprobs(seq)[EOT_ID])
        for index, data in vocab:
            end = length + len(data)
            if end <= n:
                if x[length:end] == data:
                    visit(seq + (index,), log_p + logprobs(seq)[index], end)
            elif data.startswith(x[length:]):
                cover = seq + (index,)
                if tokenizer.encode(tokenizer.decode(cover)) == list(cover):
                    weights[data[n - length]] += math.exp(log_p + logprobs(seq)[index])

    visit((), 0.0, 0)
    return weights / weights.sum()


def test_exact_equals_brute_force(tokenizer, table):
    model = RandomTokenModel(tokenizer.vocab_size, seed=1)
    prefixes = all_prefixes()
    assert any(p and p[-1] >= 0x80 and not _complete(p) for p in prefixes)  # some end mid-character
    for x in prefixes:
        exact = np.exp(next_byte_logprobs(model, table, x))
        assert abs(exact.sum() - 1.0) < 1e-9
        np.testing.assert_allclose(exact, brute_force(tokenizer, model, x), atol=1e-6, err_msg=repr(x))


def _complete(data: bytes) -> bool:
    try:
        data.decode()
        return True
    except UnicodeDecodeError:
        return False


def test_streaming_equals_recompute(tokenizer, table):
    model = RandomTokenModel(tokenizer.vocab_size, seed=2)
    text = "def pri 日本 😀 x\n".encode()
    rows, canonical = text_logprobs(model, table, text, block=5)
    stream = ByteStream(model, table)
    for n in range(len(text) + 1):
        np.testing.assert_allclose(rows[n], next_byte_logprobs(model, table, text[:n]), atol=1e-12)
        if n < len(text):
            np.testing.assert_allclose(stream.logprobs(), rows[n], atol=1e-12)
            stream.push(text[n])
    assert stream.model_calls == len(text) + 1  # one model prefix per byte (plus the empty one)
    tokens = tokenizer.encode(text)
    expected = sum(model.next_token_logprobs([tuple(tokens[:i])])[0][t] for i, t in enumerate(tokens))
    assert canonical == pytest.approx(expected, abs=1e-9)


def test_covers_hold_canonical_once(tokenizer, table):
    model = RandomTokenModel(tokenizer.vocab_size, seed=3)
    for x in all_prefixes()[1:]:
        stream = ByteStream(model, table)
        stream.extend(x)
        covers = [c for c, _ in stream.covers()]
        assert covers.count(tuple(tokenizer.encode(x))) == 1
        assert len(set(covers)) == len(covers)
        for cover in covers:
            data = tokenizer.decode(cover)
            assert data.startswith(x) and len(tokenizer.decode(cover[:-1])) < len(x)
            assert tokenizer.encode(data) == list(cover)


def test_validity_is_prefix_closed(tokenizer):
    """Every prefix of a canonical encoding is the canonical encoding of its bytes (what `exact` relies on)."""
    rng = np.random.default_rng(0)
    alphabet = list("ab _(\n:") + ["日", "本", "😀", "  ", "\n\n", "pri", "nt"]
    for _ in range(200):
        text = "".join(rng.choice(alphabet, size=rng.integers(1, 12))).encode()
        text += bytes(rng.integers(0, 256, size=rng.integers(0, 3)).astype(np.uint8))
        tokens = tokenizer.encode(text)
        for i in range(len(tokens) + 1):
            assert tokenizer.encode(tokenizer.decode(tokens[:i])) == tokens[:i]


def test_bad_input(tmp_path, tokenizer, table):
    model = RandomTokenModel(tokenizer.vocab_size, seed=4)
    empty = np.exp(next_byte_logprobs(model, table, b""))
    assert abs(empty.sum() - 1) < 1e-9 and empty[EOT_OUTCOME] > 0
    for data in [b"\xff", b"\xc0\x80", b"\x00\x01", "日".encode()[:1] + b"A"]:
        q = next_byte_logprobs(model, table, data)
        assert not np.isnan(q).any() and abs(np.exp(q).sum() - 1) < 1e-9
    with pytest.raises(TokenizerError, match="not found"):
        load_tokenizer(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="cannot read"):
        load_tokenizer(tmp_path / "bad.json")
    tokenizer.save(tmp_path / "tok.json")
    assert load_tokenizer(tmp_path / "tok.json").encode(b"def pri") == tokenizer.encode(b"def pri")
