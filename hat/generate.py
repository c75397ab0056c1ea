"""Byte-by-byte sampling from a trained model (uncached: the whole context is re-run for every new byte).

The context is laid out as in training, `[EOT] + bytes`, re-split into words after every byte, in a fixed-shape
window of `data.seq_bytes` so the step compiles once. When the context outgrows the window, whole words are dropped
from its front.
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hat.config import EOT_BYTE
from hat.inference import LoadedModel
from hat.text import split_words


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
) -> Iterator[int]:
    """Yields sampled bytes one at a time; stops after `max_new_bytes` or at end-of-text (not yielded).

    `temperature == 0` is greedy decoding; `top_k > 0` samples among the k most likely bytes.
    """
    if max_new_bytes < 0:
        raise ValueError(f"max_new_bytes must be >= 0, got {max_new_bytes}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    config = loaded.config
    graphdef, params = nnx.split(loaded.model, nnx.Param)
    num_words = config.data.max_words

    @jax.jit
    def next_byte(params, inputs, word_ids, position, key):
        logits_V = nnx.merge(graphdef, params)(inputs[None], word_ids[None], num_words=num_words)[0, position]
        if top_k:
            kth = jax.lax.top_k(logits_V, top_k)[0][-1]
            logits_V = jnp.where(logits_V < kth, -jnp.inf, logits_V)
        greedy = jnp.argmax(logits_V)
        sampled = jax.random.categorical(key, logits_V / jnp.maximum(temperature, 1e-6))
        return jnp.where(temperature == 0, greedy, sampled)

    context = bytearray(prompt)
    key = jax.random.key(seed)
    for _ in range(max_new_bytes):
        inputs, word_ids, position = layout_context(
            bytes(context), config.data.seq_bytes, num_words, config.model.max_word_bytes
        )
        key, subkey = jax.random.split(key)
        value = int(next_byte(params, inputs, word_ids, position, subkey))
        if value == EOT_BYTE:
            return
        context.append(value)
        yield value
