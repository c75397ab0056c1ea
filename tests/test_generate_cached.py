"""Cached generation: equal to the uncached path (logits and greedy bytes), sampling, stop strings, bad input.

Tiny random-weight models suffice: equality of two computations does not need a trained model. The text crosses
word boundaries, a word longer than `max_word_bytes` (8 here), multi-byte characters (whose word boundary moves
when they complete), broken UTF-8 (one byte closing two words) and the sliding windows (16 bytes).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from hat.checkpoint import LoadedModel, with_layer_layout
from hat.config import Config, DataConfig, ModelConfig, NgramConfig, PoolingConfig, TransformerConfig
from hat.data.layout import fit_context, layout_context
from hat.generate import decode_session, generate_all
from hat.models import build_model
from hat.sampling import Sampling, StopMatcher, Utf8Stream, filter_logits
from hat.text import split_words

# Every test runs batches of three rows, so the cached steps compile once per model.
PROMPTS = [b"def f(x):", b"\xff\xfe ab", b""]  # different lengths, invalid UTF-8, empty
TEXT = (
    b"Hello, world! supercalifragilistic \xe6\x97\xa5\xe6\x9c\xac x\xff\xedI camelCase\n\tdef f(x):"
    b" return x_y.z \xc3\xa9t\xc3\xa9 abc"
)


@functools.cache
def loaded_model(kind: str, ngrams: bool = False) -> LoadedModel:
    stack = functools.partial(TransformerConfig, num_heads=4, num_kv_heads=2)
    model_cfg = ModelConfig(
        kind=kind,
        max_word_bytes=8,
        encoder=stack(num_layers=1, hidden_size=32, mlp_hidden_size=64, sliding_window=16),
        pooling=PoolingConfig(num_heads=4, num_kv_heads=2, qk_norm=True),
        backbone=stack(num_layers=2, hidden_size=48, mlp_hidden_size=96, qk_norm=kind == "byte_lm"),
        decoder=stack(num_layers=2, hidden_size=32, mlp_hidden_size=64, sliding_window=16),
        # Cached steps must look up the same n-gram rows as the full sequence (the history crosses words).
        ngrams=NgramConfig(sizes=(2, 3, 6) if ngrams else (), buckets=64),
    )
    config = Config(model=model_cfg, data=DataConfig(seq_bytes=160, max_words=48))
    return LoadedModel(build_model(model_cfg, rngs=nnx.Rngs(jax.random.key(0, impl="rbg"))), config, 0, Path())


@functools.cache
def uncached_forward(kind: str, ngrams: bool = False):
    loaded = loaded_model(kind, ngrams)
    graphdef, params = nnx.split(loaded.model, nnx.Param)
    data = loaded.config.data

    @jax.jit
    def forward(inputs_BxT, word_ids_BxT):
        return nnx.merge(graphdef, params)(inputs_BxT, word_ids_BxT, num_words=data.max_words)

    def last_logits(contexts: list[bytes]) -> np.ndarray:
        rows = [layout_context(c, data.seq_bytes, data.max_words, loaded.config.model.max_word_bytes) for c in contexts]
        logits = forward(np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]))
        return np.asarray(logits[np.arange(len(rows)), [r[2] for r in rows]])

    return last_logits


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["hat", "byte_lm"])
def test_cached_logits_equal_uncached_at_every_byte(kind):
    """Prompts of different lengths (one empty) in one batch, then the text fed byte by byte; with hashed n-gram
    embeddings, whose cached steps carry the latest bytes (the other tests run the models without them)."""
    session = decode_session(loaded_model(kind, ngrams=True))
    reference = uncached_forward(kind, ngrams=True)
    contexts = [bytearray(TEXT[:5]), bytearray(), bytearray(TEXT[:40])]
    logits = session.start([bytes(c) for c in contexts])
    words_at_start = sum(len(split_words(bytes(c), 8)) for c in contexts)
    steps = len(TEXT) - 40
    for _ in range(steps):
        np.testing.assert_allclose(np.asarray(logits), reference([bytes(c) for c in contexts]), atol=2e-5)
        values = [TEXT[len(c)] for c in contexts]
        for context, value in zip(contexts, values):
            context.append(value)
        logits = session.append(values)
    assert session.refills == 0
    if kind == "hat":
        # At most one backbone step per closed word (rows closing words at the same byte share one), not per byte.
        closed = sum(len(split_words(bytes(c), 8)) for c in contexts) - words_at_start
        assert 0 < session.backbone_calls <= closed < steps


@pytest.mark.parametrize("kind", ["hat", "byte_lm"])
def test_greedy_cached_generation_equals_uncached(kind):
    loaded = loaded_model(kind)
    greedy = dict(max_new_bytes=24, sampling=Sampling(temperature=0.0))
    cached = generate_all(loaded, PROMPTS, **greedy)
    assert cached == generate_all(loaded, PROMPTS, **greedy, use_cache=False)
    assert all(len(c) == 24 for c in cached)


def test_a_scanned_backbone_generates_the_same_bytes():
    """A model trained with `scan_layers` (stacked backbone) is unstacked for the caches: same greedy bytes."""
    loaded = loaded_model("hat")
    scanned = with_layer_layout(loaded, scan_layers=True)
    assert scanned.config.model.scan_layers
    greedy = dict(max_new_bytes=24, sampling=Sampling(temperature=0.0))
    assert generate_all(scanned, PROMPTS, **greedy) == generate_all(loaded, PROMPTS, **greedy)


def test_seeded_sampling_is_reproducible():
    loaded = loaded_model("hat")
    sample = functools.partial(generate_all, loaded, PROMPTS, max_new_bytes=16)
    settings = Sampling(temperature=1.0, top_k=40, top_p=0.9, seed=3)
    first = sample(sampling=settings)
    assert first == sample(sampling=settings)
    assert first != sample(sampling=dataclasses.replace(settings, seed=4))


def test_stop_strings_stop_and_are_not_shown():
    loaded = loaded_model("hat")
    greedy = dict(max_new_bytes=20, sampling=Sampling(temperature=0.0))
    free = generate_all(loaded, PROMPTS, **greedy)
    stop = free[0][6:9]
    stopped = generate_all(loaded, PROMPTS, **greedy, stop=[stop])
    for row in range(3):
        assert stopped[row] == (free[row][: free[row].find(stop)] if stop in free[row] else free[row])


def test_stop_matcher_holds_back_possible_starts():
    matcher = StopMatcher([b"\n\n", b"END"])
    assert matcher.feed(b"ab\n") == (b"ab", False)
    assert matcher.feed(b"c") == (b"\nc", False)
    assert matcher.feed(b"EN") == (b"", False)
    assert matcher.feed(b"D tail") == (b"", True)
    assert matcher.feed(b"xE") == (b"x", False) and matcher.flush() == b"E"
    with pytest.raises(ValueError, match="empty"):
        StopMatcher([b""])


def test_filter_logits_matches_a_brute_force_reference():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 50)).astype(np.float32) * 3
    for top_k, top_p in [(0, 1.0), (5, 1.0), (0, 0.5), (10, 0.3), (0, 1e-6)]:
        got = np.asarray(filter_logits(logits, np.float32(0.7), np.int32(top_k), np.float32(top_p)))
        for row in range(3):
            scaled = logits[row] / 0.7
            order = np.argsort(-scaled)[: top_k or None]
            probs = np.exp(scaled[order] - scaled[order].max())
            probs /= probs.sum()
            before = np.cumsum(probs) - probs
            keep = set(order[(before < top_p) | (np.arange(len(order)) == 0) | (top_p == 1)].tolist())
            assert set(np.flatnonzero(np.isfinite(got[row])).tolist()) == keep
            np.testing.assert_allclose(got[row][list(keep)], scaled[list(keep)], rtol=1e-6)


def test_utf8_stream_shows_invalid_bytes_safely():
    stream = Utf8Stream()
    assert stream.feed(b"caf\xc3") == "caf"
    assert stream.feed(b"\xa9 \xff ok \xe6\x97") == "é \ufffd ok "
    assert stream.close() == "\ufffd"


def test_bad_requests_are_clear_errors():
    loaded = loaded_model("hat")
    for kwargs, message in [
        (dict(max_new_bytes=0), "max_new_bytes"),
        (dict(max_new_bytes=-3), "max_new_bytes"),
        (dict(sampling=Sampling(top_p=0.0)), "top_p"),
        (dict(sampling=Sampling(top_p=1.5)), "top_p"),
        (dict(sampling=Sampling(temperature=-1.0)), "temperature"),
        (dict(sampling=Sampling(top_k=300)), "top_k"),
        (dict(stop=[b""]), "stop"),
    ]:
        with pytest.raises(ValueError, match=message):
            generate_all(loaded, [b"x"], **kwargs)
    with pytest.raises(ValueError, match="at least one prompt"):
        generate_all(loaded, [])
    token_cfg = dataclasses.replace(loaded.config, model=dataclasses.replace(loaded.config.model, kind="token_lm"))
    with pytest.raises(ValueError, match="token_lm"):
        decode_session(dataclasses.replace(loaded, config=token_cfg))


def test_context_longer_than_the_window_keeps_recent_whole_words():
    loaded = loaded_model("hat")
    data, max_word = loaded.config.data, loaded.config.model.max_word_bytes
    long_prompt = TEXT * 4  # far more than seq_bytes
    kept = fit_context(long_prompt, data.seq_bytes, data.max_words, max_word)
    words = split_words(long_prompt, max_word)
    assert long_prompt.endswith(kept) and 0 < len(kept) + 1 <= data.seq_bytes // 2
    assert split_words(kept, max_word) == words[len(words) - len(split_words(kept, max_word)) :]
    assert fit_context(TEXT[:50], data.seq_bytes, data.max_words, max_word) == TEXT[:50]

    session = decode_session(loaded)
    prompts = [long_prompt, *PROMPTS[1:]]
    np.testing.assert_allclose(
        np.asarray(session.start(prompts)), uncached_forward("hat")([kept, *PROMPTS[1:]]), atol=2e-5
    )
    # Generating past the window refills the caches from the recent half and goes on.
    out = generate_all(loaded, prompts, max_new_bytes=120, sampling=Sampling(temperature=0.0))
    assert [len(o) for o in out] == [120] * 3
