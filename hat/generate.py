"""Generating bytes from a trained model: cached (the default) or uncached (the whole context re-run per byte).

Both lay the context out as in training, `[EOT] + words`, in the model's trained window of `data.seq_bytes` bytes
and `data.max_words` words.

* Uncached (`sample_bytes`): re-splits and re-runs the whole window for every byte; when the context outgrows the
  window, whole words are dropped from its front, one step at a time.
* Cached (`DecodeSession`, `generate`): prefill once, then one jitted step per byte with preallocated caches (see
  `hat.decoding`); a HAT runs its backbone once per word. The word splitter runs on the host on the current word
  only (`hat.text.continues_word`). Greedy decoding gives the uncached path's bytes as long as the context fits
  the window. A context that does not fit (a long prompt, or a long generation) is cut to its most recent whole
  words that fill at most half of the window (`fit_context`), and the caches are refilled from that: one refill
  per half window of bytes, instead of one per word, so from the first cut on the two paths see different
  windows. A refill re-encodes every row of the batch.

An empty prompt is valid: the model continues from the start-of-document marker alone. Prompts are bytes and may
hold invalid UTF-8: the models read any bytes.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hat.config import EOT_BYTE
from hat.inference import LoadedModel, with_layer_layout
from hat.models import decoding
from hat.sampling import StopMatcher, check_sampling, choose, filter_logits
from hat.text import continues_word, split_words


def layout_context(
    context: bytes, seq_bytes: int, max_words: int, max_word_bytes: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Returns (inputs, word_ids, last position) with the most recent whole words of `context` that fit."""
    words = split_words(context, max_word_bytes)
    total, keep = 0, 0
    for word in reversed(words):
        if total + len(word) + 1 > seq_bytes or keep + 2 > max_words:
            break
        total += len(word)
        keep += 1
    words = words[len(words) - keep :]
    inputs = np.zeros(seq_bytes, np.int32)
    word_ids = np.full(seq_bytes, max_words, np.int32)
    inputs[0], word_ids[0] = EOT_BYTE, 0
    position = 1
    for index, word in enumerate(words, start=1):
        inputs[position : position + len(word)] = np.frombuffer(word, np.uint8)
        word_ids[position : position + len(word)] = index
        position += len(word)
    return inputs, word_ids, position - 1


def sample_bytes(
    loaded: LoadedModel,
    prompt: bytes,
    max_new_bytes: int = 256,
    temperature: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
    top_p: float = 1.0,
) -> Iterator[int]:
    """Yields sampled bytes one at a time, uncached; stops after `max_new_bytes` or at end-of-text (not yielded).

    `temperature == 0` is greedy decoding; `top_k > 0` samples among the k most likely bytes, `top_p < 1` among
    the smallest set of most likely bytes whose probability reaches `top_p`.
    """
    if max_new_bytes < 0:
        raise ValueError(f"max_new_bytes must be >= 0, got {max_new_bytes}")
    check_sampling(temperature, top_k, top_p, loaded.config.model.vocab_size)
    config = loaded.config
    graphdef, params = nnx.split(loaded.model, nnx.Param)
    num_words = config.data.max_words
    settings = (np.float32(temperature), np.int32(top_k), np.float32(top_p))
    context = bytearray(prompt)
    key = jax.random.key(seed)
    for _ in range(max_new_bytes):
        inputs, word_ids, position = layout_context(
            bytes(context), config.data.seq_bytes, num_words, config.model.max_word_bytes
        )
        key, subkey = jax.random.split(key)
        value = int(next_byte_uncached(graphdef, num_words, params, inputs, word_ids, position, subkey, *settings))
        if value == EOT_BYTE:
            return
        context.append(value)
        yield value


@functools.partial(jax.jit, static_argnums=(0, 1))
def next_byte_uncached(
    graphdef: nnx.GraphDef,
    num_words: int,
    params: nnx.State,
    inputs_T: jax.Array,
    word_ids_T: jax.Array,
    position: jax.Array,
    key: jax.Array,
    temperature: jax.Array,
    top_k: jax.Array,
    top_p: jax.Array,
) -> jax.Array:
    """One uncached step: the model over a laid-out window (`layout_context`), the byte chosen at `position`."""
    logits_V = nnx.merge(graphdef, params)(inputs_T[None], word_ids_T[None], num_words=num_words)[0, position]
    sampled = jax.random.categorical(key, filter_logits(logits_V[None], temperature, top_k, top_p)[0])
    return jnp.where(temperature == 0, jnp.argmax(logits_V), sampled)


def context_fits(text: bytes, num_words: int, seq_bytes: int, max_words: int) -> bool:
    """Whether `[EOT] + text` (`num_words` words) fits the trained window whole."""
    return 1 + len(text) <= seq_bytes and num_words <= max_words - 1


def fit_context(text: bytes, seq_bytes: int, max_words: int, max_word_bytes: int) -> bytes:
    """`text` itself if it fits the window, else its most recent whole words filling at most half of it (always
    at least the last word, which fits: `max_word_bytes < seq_bytes`)."""
    words = split_words(text, max_word_bytes)
    if context_fits(text, len(words), seq_bytes, max_words):
        return text
    total, keep = 0, 0
    for word in reversed(words):
        if keep and (1 + total + len(word) > seq_bytes // 2 or 1 + keep + 1 > max_words // 2):
            break
        total += len(word)
        keep += 1
    return b"".join(words[len(words) - keep :])


@dataclass
class _Row:
    """The host's view of one row: the context text in the window, its open (last) word and its word count."""

    text: bytearray
    open_word: bytes  # b"": the open word is the end-of-text marker at position 0
    num_words: int

    @classmethod
    def of(cls, text: bytes, max_word_bytes: int) -> _Row:
        words = split_words(text, max_word_bytes)
        return cls(bytearray(text), words[-1] if words else b"", len(words))

    def push(self, value: int, max_word_bytes: int) -> list[int]:
        """Appends a byte; returns the positions at which words closed (ascending; usually none or one)."""
        position = 1 + len(self.text)
        self.text.append(value)
        new = bytes([value])
        if not self.open_word:
            self.open_word, self.num_words = new, self.num_words + 1
            return [position]
        if continues_word(self.open_word, new, max_word_bytes):
            self.open_word += new
            return []
        pieces = split_words(self.open_word + new, max_word_bytes)
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


class DecodeSession:
    """Cached decoding of a batch of byte contexts with a HAT or a flat byte LM.

        session = DecodeSession(loaded)
        logits_BxV = session.start([b"def f(", b"x"])
        logits_BxV = session.append(np.array([ord(" "), ord("=")]))

    `start` and `append` return each row's next-byte logits (a device array). `backbone_calls` counts backbone
    steps after the prefill (HAT: one per closed word; flat: one per byte).
    """

    def __init__(self, loaded: LoadedModel):
        # The caches step the backbone one layer at a time: a scanned (stacked) backbone is unstacked first.
        loaded = with_layer_layout(loaded, scan_layers=False)
        config = loaded.config
        self.kind = config.model.kind
        if self.kind not in ("hat", "byte_lm"):
            raise ValueError(f"cached generation supports HAT and byte LMs, not model kind {self.kind!r}")
        self.seq_bytes, self.max_words = config.data.seq_bytes, config.data.max_words
        self.max_word_bytes = config.model.max_word_bytes
        graphdef, self.params = nnx.split(loaded.model, nnx.Param)
        self.steps = _compiled_steps(graphdef, self.max_words, self.max_word_bytes)
        self.rows: list[_Row] = []
        self.state = None
        self.backbone_calls = 0
        self.refills = 0

    def start(self, contexts: Sequence[bytes]) -> jax.Array:
        """Prefills the caches with the contexts (each cut by `fit_context` if it does not fit the window)."""
        if not contexts:
            raise ValueError("give at least one prompt")
        self.rows = [
            _Row.of(fit_context(bytes(c), self.seq_bytes, self.max_words, self.max_word_bytes), self.max_word_bytes)
            for c in contexts
        ]
        return self._refill()

    def _refill(self) -> jax.Array:
        layouts = [
            layout_context(bytes(row.text), self.seq_bytes, self.max_words, self.max_word_bytes) for row in self.rows
        ]
        inputs = np.stack([inputs for inputs, _, _ in layouts])
        lengths = np.array([last + 1 for _, _, last in layouts], np.int32)
        if self.kind == "hat":
            word_ids = np.stack([ids for _, ids, _ in layouts])
            starts = np.array([int(np.argmax(ids == ids[last])) for _, ids, last in layouts], np.int32)
            self.state, logits = self.steps["hat_prefill"](self.params, inputs, word_ids, lengths, starts)
        else:
            self.state, logits = self.steps["flat_prefill"](self.params, inputs, lengths)
        return logits

    def append(self, values: Sequence[int], active: Sequence[bool] | None = None) -> jax.Array:
        """Appends one byte to every row (rows not `active` are finished: their byte is run but not recorded)."""
        active = [True] * len(self.rows) if active is None else list(active)
        closes = [row.push(int(v), self.max_word_bytes) if on else [] for row, v, on in zip(self.rows, values, active)]
        overflow = False
        for index, (row, on) in enumerate(zip(self.rows, active)):
            if on and not context_fits(bytes(row.text), row.num_words, self.seq_bytes, self.max_words):
                text = fit_context(bytes(row.text), self.seq_bytes, self.max_words, self.max_word_bytes)
                self.rows[index] = _Row.of(text, self.max_word_bytes)
                overflow = True
        if overflow:
            self.refills += 1
            return self._refill()
        values_B = np.asarray(values, np.int32)
        if self.kind != "hat":
            self.backbone_calls += 1
            self.state, logits = self.steps["flat_decode"](self.params, self.state, values_B)
            return logits
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


@dataclass(frozen=True)
class Sampling:
    """How to choose each byte: `temperature` 0 is greedy; `top_k` 0 and `top_p` 1 switch those limits off."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0


def check_request(prompts: Sequence[bytes], max_new_bytes: int, sampling: Sampling, stop: Sequence[bytes]) -> None:
    """Raises `ValueError` with a clear message for an unusable generation request."""
    if not prompts:
        raise ValueError("give at least one prompt")
    if any(not isinstance(p, bytes | bytearray) for p in prompts):
        raise ValueError("prompts must be bytes (encode text with .encode('utf-8'))")
    if max_new_bytes < 1:
        raise ValueError(f"max_new_bytes must be at least 1, got {max_new_bytes}")
    check_sampling(sampling.temperature, sampling.top_k, sampling.top_p, 256)
    if any(not s for s in stop):
        raise ValueError("stop strings must not be empty")


def generate(
    loaded: LoadedModel,
    prompts: Sequence[bytes],
    max_new_bytes: int = 256,
    sampling: Sampling = Sampling(),
    stop: Sequence[bytes] = (),
    use_cache: bool = True,
) -> Iterator[tuple[int, bytes]]:
    """Yields `(row, new bytes)` as generation proceeds, for a batch of prompts.

    A row ends at end-of-text (not shown), when a stop string completes (the stop string is not shown) or after
    `max_new_bytes` bytes. Bytes that could still begin a stop string are held back until that is decided.
    `use_cache=False` runs the uncached path one prompt after the other (same sampling settings; sampled bytes
    differ from the cached path's because the random draws are consumed differently; greedy bytes agree).
    """
    check_request(prompts, max_new_bytes, sampling, stop)
    matchers = [StopMatcher(stop) for _ in prompts]
    if not use_cache:
        for row, prompt in enumerate(prompts):
            stream = sample_bytes(
                loaded, bytes(prompt), max_new_bytes, sampling.temperature, sampling.top_k, sampling.seed,
                sampling.top_p,
            )
            for value in stream:
                shown, stopped = matchers[row].feed(bytes([value]))
                if shown:
                    yield row, shown
                if stopped:
                    break
            if rest := matchers[row].flush():
                yield row, rest
        return
    session = DecodeSession(loaded)
    logits = session.start(prompts)
    key = jax.random.key(sampling.seed)
    settings = (np.float32(sampling.temperature), np.int32(sampling.top_k), np.float32(sampling.top_p))
    active = [True] * len(prompts)
    for step in range(max_new_bytes):
        values = np.asarray(choose(logits, jax.random.fold_in(key, step), *settings))
        for row, value in enumerate(values.tolist()):
            if not active[row]:
                continue
            if value == EOT_BYTE:
                active[row] = False
                continue
            shown, stopped = matchers[row].feed(bytes([value]))
            if shown:
                yield row, shown
            active[row] = not stopped
        if not any(active) or step == max_new_bytes - 1:
            break
        logits = session.append(values, active)
    for row, matcher in enumerate(matchers):
        if rest := matcher.flush():
            yield row, rest


def generate_all(loaded: LoadedModel, prompts: Sequence[bytes], **kwargs) -> list[bytes]:
    """`generate` collected: each prompt's continuation."""
    out = [bytearray() for _ in prompts]
    for row, piece in generate(loaded, prompts, **kwargs):
        out[row] += piece
    return [bytes(b) for b in out]
