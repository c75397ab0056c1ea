"""Cached decoding steps for HAT and flat LMs: prefill a batch of contexts, then one byte per step.

Every step runs the model's own layers with their cache argument (`layer(x, positions, cache)`, see
`hat.models.kv_cache`); this module only decides which positions each stage runs and which caches it carries.

HAT keeps three caches (README.md, "Cached generation"): the encoder's (bytes, a ring of its sliding window), the
backbone's (one slot per word of the trained context) and the decoder's (bytes, a ring of its window). A step

* `hat_close_word`: when the splitter closes the current word of some rows, pools that word from its bytes' encoder
  states (the pooling is non-causal inside a word, so it waits for the word to close), runs one backbone step at
  the word's index and takes the output as the predictive vector of the next word. The decoder states of bytes
  already in the new word were computed with the old predictive vector: they are recomputed (a chunk of C
  positions; C = 0 in the common case, where the new word starts at the new byte). When one byte closes two
  words (a broken UTF-8 sequence), it is called once per word.
* `hat_decode`: encodes the new byte, runs the decoder on it and returns the next-byte logits.

The encoder states of the latest `max_word_bytes` bytes are kept in a ring (`ByteRing`, the pooling's cache): the
pooling and the decoder's recomputation read them. The decoder's rings hold `max_word_bytes` slots more than its
window, because a recomputed byte reads keys up to a window before itself, not before the newest byte. Every
function is a pure function of the model's parameters and a state pytree of fixed shape, so it jits once per batch
size (and chunk length). Padding entries of a chunk (a row with fewer new positions, or none) run at position -1.

Positions follow the training layout: position 0 holds end-of-text (word 0), text byte i sits at position i + 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import jax
import jax.numpy as jnp
from flax import nnx

from hat.models import HAT, FlatLM
from hat.models.hat import ByteRing
from hat.models.kv_cache import KVCache
from hat.models.ngrams import NgramEmbedding, history_at, next_history


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class HATState:
    """Everything a HAT needs to continue a batch of contexts. `length_B` is the next byte's position."""

    encoder: tuple[KVCache, ...]
    backbone: tuple[KVCache, ...]
    decoder: tuple[KVCache, ...]
    recent: ByteRing
    pred_BxD: jax.Array  # predictive vector of the current (open) word
    length_B: jax.Array
    word_start_B: jax.Array  # first position of the open word
    word_index_B: jax.Array
    history_BxH: jax.Array  # the latest bytes, for hashed n-gram embeddings (H = 0 without them)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class FlatState:
    """A flat LM's layer caches and each row's next position."""

    layers: tuple[KVCache, ...]
    length_B: jax.Array
    history_BxH: jax.Array  # the latest units, for hashed n-gram embeddings (H = 0 without them)


def _at(x_BxTx_: jax.Array, index_B: jax.Array) -> jax.Array:
    """Row b's entry `index_B[b]` along axis 1."""
    return jnp.take_along_axis(x_BxTx_, index_B.reshape(-1, *([1] * (x_BxTx_.ndim - 1))), axis=1)[:, 0]


def _ngram_sizes(embedding: NgramEmbedding | None) -> tuple[int, ...]:
    return embedding.sizes if embedding is not None else ()


def _prefix_positions(length: int, lengths_B: jax.Array) -> jax.Array:
    """Positions 0 .. length - 1 of each row, with -1 (padding) from the row's length on: B x length."""
    positions_1xT = jnp.arange(length, dtype=jnp.int32)[None]
    return jnp.where(positions_1xT < lengths_B[:, None], positions_1xT, -1)


def _run_layers(
    layers: Sequence[nnx.Module], x_BxLxD: jax.Array, positions_BxL: jax.Array, caches: Sequence[KVCache]
) -> tuple[jax.Array, tuple[KVCache, ...]]:
    """Llama layers over a chunk, each with its cache; returns the output and the updated caches."""
    updated = []
    for layer, cache in zip(layers, caches, strict=True):
        x_BxLxD, cache = layer(x_BxLxD, positions_BxL, cache)
        updated.append(cache)
    return x_BxLxD, tuple(updated)


def _run_decoder(
    model: HAT,
    x_BxLxE: jax.Array,
    pred_BxWxD: jax.Array,
    word_ids_BxL: jax.Array,
    positions_BxL: jax.Array,
    caches: Sequence[KVCache],
) -> tuple[jax.Array, tuple[KVCache, ...]]:
    """The decoder blocks over a chunk, each with its cache; returns the output and the updated caches."""
    updated = []
    for block, cache in zip(model.decoder.decoder_layers, caches, strict=True):
        x_BxLxE, cache = block(x_BxLxE, pred_BxWxD, word_ids_BxL, positions_BxL, cache)
        updated.append(cache)
    return x_BxLxE, tuple(updated)


def flat_prefill(model: FlatLM, inputs_BxT: jax.Array, lengths_B: jax.Array) -> tuple[FlatState, jax.Array]:
    """Runs the contexts `inputs_BxT[b, :lengths_B[b]]` (padded to T, the cache capacity); returns the state and
    the logits for each row's next unit."""
    batch, capacity = inputs_BxT.shape
    x_BxTxD = model.embed(inputs_BxT)
    layers = model.backbone.layers
    caches = [layer.init_cache(batch, capacity) for layer in layers]
    x_BxTxD, caches = _run_layers(layers, x_BxTxD, _prefix_positions(capacity, lengths_B), caches)
    history_BxH = history_at(_ngram_sizes(model.ngram_embedding), inputs_BxT, lengths_B)
    return FlatState(caches, lengths_B, history_BxH), model.output_logits(_at(x_BxTxD, lengths_B - 1))


def flat_decode(model: FlatLM, state: FlatState, unit_B: jax.Array) -> tuple[FlatState, jax.Array]:
    """Appends one unit per row; returns the new state and the logits for the unit after it."""
    x_Bx1xD = model.embed(unit_B[:, None], state.history_BxH)
    x_Bx1xD, caches = _run_layers(model.backbone.layers, x_Bx1xD, state.length_B[:, None], state.layers)
    state = FlatState(caches, state.length_B + 1, next_history(state.history_BxH, unit_B))
    return state, model.output_logits(x_Bx1xD[:, 0])


def hat_prefill(
    model: HAT,
    inputs_BxT: jax.Array,
    word_ids_BxT: jax.Array,
    lengths_B: jax.Array,
    word_start_B: jax.Array,
    num_words: int,
    recent_slots: int,
) -> tuple[HATState, jax.Array]:
    """Runs laid-out contexts (as `hat.generate.layout_context` builds them: T bytes = the byte capacity,
    `num_words` word slots = the word capacity) and returns the state and the logits for each row's next byte.

    The row's last word (starting at `word_start_B`) is open: it is not written to the backbone cache, and its
    predictive vector (the backbone output of the word before it) becomes the state's `pred`.
    """
    batch, capacity = inputs_BxT.shape
    positions_BxT = _prefix_positions(capacity, lengths_B)
    x_BxTxE = model.encoder.embed(inputs_BxT)
    encoder_caches = [layer.init_cache(batch, capacity) for layer in model.encoder.layers]
    enc_BxTxE, encoder_caches = _run_layers(model.encoder.layers, x_BxTxE, positions_BxT, encoder_caches)

    open_word_B = _at(word_ids_BxT, word_start_B)
    words_BxWxD = model.pool(enc_BxTxE, word_ids_BxT, num_words)
    backbone_caches = [layer.init_cache(batch, num_words) for layer in model.backbone.layers]
    words_BxWxD, backbone_caches = _run_layers(
        model.backbone.layers, words_BxWxD, _prefix_positions(num_words, open_word_B), backbone_caches
    )
    pred_BxWxD = model.decoder_connector(words_BxWxD)

    decoder_caches = [block.init_cache(batch, capacity, recent_slots) for block in model.decoder.decoder_layers]
    x_BxTxE, decoder_caches = _run_decoder(model, enc_BxTxE, pred_BxWxD, word_ids_BxT, positions_BxT, decoder_caches)

    # Slot s of the ring holds the latest position p < length with p % M == s.
    last_B = lengths_B - 1
    recent_positions_BxM = last_B[:, None] - (last_B[:, None] - jnp.arange(recent_slots)[None]) % recent_slots
    recent_BxMxE = jnp.take_along_axis(enc_BxTxE, jnp.maximum(recent_positions_BxM, 0)[..., None], axis=1)
    state = HATState(
        encoder=encoder_caches,
        backbone=backbone_caches,
        decoder=decoder_caches,
        recent=ByteRing(recent_BxMxE),
        pred_BxD=_at(pred_BxWxD, open_word_B),
        length_B=lengths_B,
        word_start_B=word_start_B,
        word_index_B=open_word_B,
        history_BxH=history_at(_ngram_sizes(model.encoder.ngram_embedding), inputs_BxT, lengths_B),
    )
    return state, model.output_logits(_at(x_BxTxE, last_B))


def _decode_bytes(model: HAT, state: HATState, positions_BxC: jax.Array) -> tuple[tuple[KVCache, ...], jax.Array]:
    """The decoder over a chunk of positions of the open word (their encoder states are in `recent`), with the
    state's predictive vector; returns the updated decoder caches and the last layer's states."""
    x_BxCxE = state.recent.read(positions_BxC)
    # Every byte of the chunk reads the one predictive vector: word 0 of a one-word sequence.
    word_ids_BxC = jnp.zeros_like(positions_BxC)
    x_BxCxE, caches = _run_decoder(model, x_BxCxE, state.pred_BxD[:, None], word_ids_BxC, positions_BxC, state.decoder)
    return caches, x_BxCxE


def hat_close_word(
    model: HAT, state: HATState, end_B: jax.Array, until_B: jax.Array, close_B: jax.Array, chunk: int
) -> HATState:
    """Closes the open word at position `end_B` in the rows where `close_B`: pool it, one backbone step, new
    predictive vector. The bytes `end_B .. until_B - 1` (at most `chunk`; already encoded) belong to the next
    word: their decoder states were computed with the old predictive vector and are recomputed."""
    word_BxD = model.encoder_connector.pool_word(state.recent, state.word_index_B, state.word_start_B, end_B)
    positions_Bx1 = jnp.where(close_B, state.word_index_B, -1)[:, None]
    x_Bx1xD, backbone_caches = _run_layers(model.backbone.layers, word_BxD[:, None], positions_Bx1, state.backbone)
    state = replace(
        state,
        backbone=backbone_caches,
        pred_BxD=jnp.where(close_B[:, None], x_Bx1xD[:, 0].astype(state.pred_BxD.dtype), state.pred_BxD),
        word_start_B=jnp.where(close_B, end_B, state.word_start_B),
        word_index_B=state.word_index_B + close_B.astype(jnp.int32),
    )
    if not chunk:
        return state
    positions_BxC = until_B[:, None] - chunk + jnp.arange(chunk)[None]
    redo_BxC = close_B[:, None] & (positions_BxC >= end_B[:, None]) & (positions_BxC < until_B[:, None])
    decoder_caches, _ = _decode_bytes(model, state, jnp.where(redo_BxC, positions_BxC, -1))
    return replace(state, decoder=decoder_caches)


def hat_decode(model: HAT, state: HATState, byte_B: jax.Array) -> tuple[HATState, jax.Array]:
    """Appends one byte per row (encoder step, decoder step); returns the new state and the logits for the byte
    after it."""
    positions_Bx1 = state.length_B[:, None]
    x_Bx1xE = model.encoder.embed(byte_B[:, None], state.history_BxH)
    x_Bx1xE, encoder_caches = _run_layers(model.encoder.layers, x_Bx1xE, positions_Bx1, state.encoder)
    state = replace(
        state,
        encoder=encoder_caches,
        recent=state.recent.write(x_Bx1xE[:, 0], state.length_B),
        history_BxH=next_history(state.history_BxH, byte_B),
    )
    decoder_caches, x_Bx1xE = _decode_bytes(model, state, positions_Bx1)
    state = replace(state, decoder=decoder_caches, length_B=state.length_B + 1)
    return state, model.output_logits(x_Bx1xE[:, 0])
