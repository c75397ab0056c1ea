"""Decode sessions of the byte models (HAT and the flat byte LM): cached (the default) or uncached.

Both lay the context out as in training (`hat.data.layout`: `[EOT] + words` in the model's trained window of
`data.seq_bytes` bytes and `data.max_words` words, or the words alone for a model imported from the released
runtime, `ContextRules`) and give next-byte logits for a batch of growing texts; the one sampler
(`hat.sampling.sample_session`) drives either. Contexts arrive with their special tokens already bytes
(`hat.text.SpecialTokens.encode`); each special byte is a word of its own.

* `UncachedSession` re-splits and re-runs the whole window for every byte; when a context outgrows the window,
  whole words are dropped from its front, one step at a time.
* `HatSession` and `FlatSession` prefill once, then take one jitted step per byte with preallocated caches (see
  `hat.models.decoding`); a HAT runs its backbone once per word. The word splitter runs on the host on the current word
  only (`hat.text.continues_word`). Its logits equal the uncached session's as long as the context fits the
  window. A context that does not fit (a long prompt, or a long generation) is cut to its most recent whole words
  that fill at most half of the window (`fit_context`), and the caches are refilled from that, so from the first
  cut on the two sessions see different windows. A refill re-encodes every row of the batch.

An empty prompt is valid for hat's own models: the model continues from the start-of-document marker alone. A
model fed without the leading end-of-text needs a non-empty prompt (`SamplingError` otherwise). Prompts are bytes
and may hold invalid UTF-8: the models read any bytes.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hat.checkpoint import LoadedModel, with_layer_layout
from hat.config import EOT_BYTE
from hat.data.layout import ContextRules, fit_context, fits_window, layout_context
from hat.models import decoding
from hat.sampling import SamplingError
from hat.text import continues_word, split_words


@functools.partial(jax.jit, static_argnums=(0, 1))
def uncached_logits(
    graphdef: nnx.GraphDef,
    num_words: int,
    params: nnx.State,
    inputs_BxT: jax.Array,
    word_ids_BxT: jax.Array,
    positions_B: jax.Array,
) -> jax.Array:
    """The model over laid-out windows (`layout_context`); each row's logits at its `positions_B`."""
    logits_BxTxV = nnx.merge(graphdef, params)(inputs_BxT, word_ids_BxT, num_words=num_words)
    return jnp.take_along_axis(logits_BxTxV, positions_B[:, None, None], axis=1)[:, 0]


class UncachedSession:
    """The reference decode session: every step lays out and re-runs each row's whole window."""

    end_of_text = EOT_BYTE

    def __init__(self, loaded: LoadedModel) -> None:
        config = loaded.config
        self.seq_bytes, self.max_words = config.data.seq_bytes, config.data.max_words
        self.max_word_bytes = config.model.max_word_bytes
        self.rules = ContextRules.of(config.model)
        self.graphdef, self.params = nnx.split(loaded.model, nnx.Param)
        self.texts: list[bytearray] = []

    def start(self, contexts: Sequence[bytes]) -> jax.Array:
        """See `hat.sampling.Session`."""
        check_contexts(contexts, self.rules)
        self.texts = [bytearray(c) for c in contexts]
        return self._logits()

    def append(self, values: Sequence[int], active: Sequence[bool] | None = None) -> jax.Array:
        """See `hat.sampling.Session`."""
        for text, value, on in zip(self.texts, values, active or [True] * len(self.texts)):
            if on:
                text.append(int(value))
        return self._logits()

    def _logits(self) -> jax.Array:
        layouts = [
            layout_context(bytes(text), self.seq_bytes, self.max_words, self.max_word_bytes, self.rules)
            for text in self.texts
        ]
        inputs_BxT = np.stack([inputs for inputs, _, _ in layouts])
        word_ids_BxT = np.stack([ids for _, ids, _ in layouts])
        positions_B = np.array([last for _, _, last in layouts], np.int32)
        return uncached_logits(self.graphdef, self.max_words, self.params, inputs_BxT, word_ids_BxT, positions_B)


def check_contexts(contexts: Sequence[bytes], rules: ContextRules) -> None:
    """Raises unless there are contexts, each non-empty where the model has no leading end-of-text."""
    if not contexts:
        raise ValueError("give at least one prompt")
    if not rules.leading_end_of_text and not all(contexts):
        raise SamplingError(
            "this model is fed without a leading end-of-text (model.leading_end_of_text: false, as the released "
            "runtime): give a non-empty prompt"
        )


@dataclass
class _Row:
    """The host's view of one row: the context text in the window, its open (last) word and its word count."""

    text: bytearray
    open_word: bytes  # b"": the open word is the end-of-text marker at position 0
    num_words: int
    rules: ContextRules

    @classmethod
    def of(cls, text: bytes, max_word_bytes: int, rules: ContextRules) -> _Row:
        words = split_words(text, max_word_bytes, rules.special_bytes)
        return cls(bytearray(text), words[-1] if words else b"", len(words), rules)

    def push(self, value: int, max_word_bytes: int) -> list[int]:
        """Appends a byte; returns the positions at which words closed (ascending; usually none or one)."""
        position = self.rules.lead + len(self.text)
        self.text.append(value)
        new = bytes([value])
        if not self.open_word:
            self.open_word, self.num_words = new, self.num_words + 1
            return [position]
        special = self.rules.special_bytes
        if continues_word(self.open_word, new, max_word_bytes, special):
            self.open_word += new
            return []
        pieces = split_words(self.open_word + new, max_word_bytes, special)
        start = position - len(self.open_word)
        ends = (start + np.cumsum([len(piece) for piece in pieces[:-1]])).tolist()
        self.open_word, self.num_words = pieces[-1], self.num_words + len(pieces) - 1
        return ends


@functools.cache
def _compiled_steps(graphdef: nnx.GraphDef, num_words: int, recent_slots: int) -> dict[str, Any]:
    """The jitted steps for one model structure, built once, so new sessions on the same model reuse the compiled
    code (and the graph definition is not hashed on every call). The state is donated: caches update in place."""

    def on_model(fn):
        return lambda params, *args: fn(nnx.merge(graphdef, params), *args)

    return {
        "hat_prefill": jax.jit(
            lambda params, *args: decoding.hat_prefill(nnx.merge(graphdef, params), *args, num_words, recent_slots)
        ),
        "hat_close": jax.jit(on_model(decoding.hat_close_word), static_argnums=5, donate_argnums=1),
        "hat_decode": jax.jit(on_model(decoding.hat_decode), donate_argnums=1),
        "flat_prefill": jax.jit(on_model(decoding.flat_prefill)),
        "flat_decode": jax.jit(on_model(decoding.flat_decode), donate_argnums=1),
    }


def _bucket(size: int) -> int:
    """Chunk lengths are powers of two, so the decode step compiles for few shapes."""
    return 1 << max(size - 1, 0).bit_length()


class CachedSession(abc.ABC):
    """Cached decoding of a batch of byte contexts (a `hat.sampling.Session`); `HatSession` and `FlatSession`
    say how a model's caches are filled and stepped.

        session = HatSession(loaded)
        logits_BxV = session.start([b"def f(", b"x"])
        logits_BxV = session.append(np.array([ord(" "), ord("=")]))

    `start` and `append` return each row's next-byte logits (a device array). `backbone_calls` counts backbone
    steps after the prefill (HAT: one per closed word; flat: one per byte).
    """

    end_of_text = EOT_BYTE

    def __init__(self, loaded: LoadedModel):
        # The caches step the backbone one layer at a time: a scanned (stacked) backbone is unstacked first.
        loaded = with_layer_layout(loaded, scan_layers=False)
        config = loaded.config
        self.seq_bytes, self.max_words = config.data.seq_bytes, config.data.max_words
        self.max_word_bytes = config.model.max_word_bytes
        self.rules = ContextRules.of(config.model)
        graphdef, self.params = nnx.split(loaded.model, nnx.Param)
        self.steps = _compiled_steps(graphdef, self.max_words, self.max_word_bytes)
        self.rows: list[_Row] = []
        self.state = None
        self.backbone_calls = 0
        self.refills = 0

    def start(self, contexts: Sequence[bytes]) -> jax.Array:
        """Prefills the caches with the contexts (each cut by `fit_context` if it does not fit the window)."""
        check_contexts(contexts, self.rules)
        self.rows = [self._row(bytes(c)) for c in contexts]
        return self._refill()

    def _row(self, text: bytes) -> _Row:
        """A row of the text's most recent words that fit (`fit_context`)."""
        fitted = fit_context(text, self.seq_bytes, self.max_words, self.max_word_bytes, self.rules)
        return _Row.of(fitted, self.max_word_bytes, self.rules)

    def _refill(self) -> jax.Array:
        layouts = [
            layout_context(bytes(row.text), self.seq_bytes, self.max_words, self.max_word_bytes, self.rules)
            for row in self.rows
        ]
        inputs_BxT = np.stack([inputs for inputs, _, _ in layouts])
        word_ids_BxT = np.stack([ids for _, ids, _ in layouts])
        lengths_B = np.array([last + 1 for _, _, last in layouts], np.int32)
        return self._prefill(inputs_BxT, word_ids_BxT, lengths_B)

    def append(self, values: Sequence[int], active: Sequence[bool] | None = None) -> jax.Array:
        """Appends one byte to every row (rows not `active` are finished: their byte is run but not recorded)."""
        active = [True] * len(self.rows) if active is None else list(active)
        closes = [row.push(int(v), self.max_word_bytes) if on else [] for row, v, on in zip(self.rows, values, active)]
        overflow = False
        for index, (row, on) in enumerate(zip(self.rows, active)):
            if on and not fits_window(len(row.text), row.num_words, self.seq_bytes, self.max_words, self.rules):
                self.rows[index] = self._row(bytes(row.text))
                overflow = True
        if overflow:
            self.refills += 1
            return self._refill()
        return self._advance(np.asarray(values, np.int32), closes)

    @abc.abstractmethod
    def _prefill(self, inputs_BxT: np.ndarray, word_ids_BxT: np.ndarray, lengths_B: np.ndarray) -> jax.Array:
        """Fills the caches from laid-out windows; returns each row's next-byte logits."""

    @abc.abstractmethod
    def _advance(self, values_B: np.ndarray, closes: list[list[int]]) -> jax.Array:
        """Steps the caches by one byte per row (`closes`: the positions where each row's words closed)."""


class HatSession(CachedSession):
    """A HAT's three caches: bytes (encoder, decoder) and words (backbone, one step per closed word)."""

    def _prefill(self, inputs_BxT: np.ndarray, word_ids_BxT: np.ndarray, lengths_B: np.ndarray) -> jax.Array:
        last_ids = word_ids_BxT[np.arange(len(lengths_B)), lengths_B - 1]
        starts_B = np.argmax(word_ids_BxT == last_ids[:, None], axis=1).astype(np.int32)
        self.state, logits = self.steps["hat_prefill"](self.params, inputs_BxT, word_ids_BxT, lengths_B, starts_B)
        return logits

    def _advance(self, values_B: np.ndarray, closes: list[list[int]]) -> jax.Array:
        # Round k closes each row's k-th word; the bytes up to the next closing (or the new byte) are recomputed.
        for round_ in range(max(map(len, closes))):
            ends, untils, mask = [], [], []
            for row, close in zip(self.rows, closes):
                mask.append(round_ < len(close))
                ends.append(close[round_] if mask[-1] else 0)
                untils.append((close[round_ + 1] if round_ + 1 < len(close) else len(row.text)) if mask[-1] else 0)
            redo = max(until - end for until, end in zip(untils, ends))
            args = (np.array(ends, np.int32), np.array(untils, np.int32), np.array(mask))
            self.state = self.steps["hat_close"](self.params, self.state, *args, _bucket(redo) if redo else 0)
            self.backbone_calls += 1
        self.state, logits = self.steps["hat_decode"](self.params, self.state, values_B)
        return logits


class FlatSession(CachedSession):
    """A flat byte LM's cache: one slot per position of the trained context, one step per byte."""

    def _prefill(self, inputs_BxT: np.ndarray, word_ids_BxT: np.ndarray, lengths_B: np.ndarray) -> jax.Array:
        self.state, logits = self.steps["flat_prefill"](self.params, inputs_BxT, lengths_B)
        return logits

    def _advance(self, values_B: np.ndarray, closes: list[list[int]]) -> jax.Array:
        self.backbone_calls += 1
        self.state, logits = self.steps["flat_decode"](self.params, self.state, values_B)
        return logits
