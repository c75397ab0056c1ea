"""Cached decoding steps for HAT and flat LMs: prefill a batch of contexts, then one byte per step.

HAT keeps three caches (DESIGN.md): the encoder's (bytes, a ring of its sliding window), the backbone's (one slot
per word of the trained context) and the decoder's (bytes, a ring of its window). A step

* `hat_close_word`: when the splitter closes the current word of some rows, pools that word from its bytes' encoder
  states (the pooling is non-causal inside a word, so it waits for the word to close), runs one backbone step at
  the word's index and takes the output as the predictive vector of the next word. The decoder states of bytes
  already in the new word were computed with the old predictive vector: they are recomputed (a chunk of C
  positions; C = 0 in the common case, where the new word starts at the new byte). When one byte closes two
  words (a broken UTF-8 sequence), it is called once per word.
* `hat_decode`: encodes the new byte, runs the decoder on it and returns the next-byte logits.

The encoder states of the current word's bytes are kept in a ring of `max_word_bytes` slots (`recent`): the pooling
and the decoder's recomputation read them. The decoder's rings hold `max_word_bytes` slots more than its window,
because a recomputed byte reads keys up to a window before itself, not before the newest byte. Every function is
a pure function of the model's parameters and a state pytree of fixed shape, so it jits once per batch size (and
chunk length).

Positions follow the training layout: position 0 holds end-of-text (word 0), text byte i sits at position i + 1.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import jax
import jax.numpy as jnp

from hat.models import HAT, FlatLM
from hat.models.cache import KVCache, layer_extend, layer_prefill


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class HATState:
    """Everything a HAT needs to continue a batch of contexts. `length_B` is the next byte's position."""

    encoder: tuple[KVCache, ...]
    backbone: tuple[KVCache, ...]
    decoder: tuple[KVCache, ...]
    recent_BxMxE: jax.Array  # encoder states of the latest M bytes, position p in slot p % M
    pred_BxD: jax.Array  # predictive vector of the current (open) word
    length_B: jax.Array
    word_start_B: jax.Array  # first position of the open word
    word_index_B: jax.Array


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class FlatState:
    """A flat LM's layer caches and each row's next position."""

    layers: tuple[KVCache, ...]
    length_B: jax.Array


def _logits(model: HAT | FlatLM, x_BxD: jax.Array) -> jax.Array:
    return model.output_logits(x_BxD)


def _at(x_BxTx_: jax.Array, index_B: jax.Array) -> jax.Array:
    """Row b's entry `index_B[b]` along axis 1."""
    return jnp.take_along_axis(x_BxTx_, index_B.reshape(-1, *([1] * (x_BxTx_.ndim - 1))), axis=1)[:, 0]


def flat_prefill(model: FlatLM, inputs_BxT: jax.Array, lengths_B: jax.Array) -> tuple[FlatState, jax.Array]:
    """Runs the contexts `inputs_BxT[b, :lengths_B[b]]` (padded to T, the cache capacity); returns the state and
    the logits for each row's next unit."""
    capacity = inputs_BxT.shape[1]
    x_BxTxD = jnp.take(model.embedding_layer[...], inputs_BxT, axis=0).astype(model.dtype)
    caches = []
    for layer in model.backbone.layers:
        x_BxTxD, cache = layer_prefill(layer, x_BxTxD, lengths_B, capacity)
        caches.append(cache)
    return FlatState(tuple(caches), lengths_B), _logits(model, _at(x_BxTxD, lengths_B - 1))


def flat_decode(model: FlatLM, state: FlatState, unit_B: jax.Array) -> tuple[FlatState, jax.Array]:
    """Appends one unit per row; returns the new state and the logits for the unit after it."""
    x_Bx1xD = jnp.take(model.embedding_layer[...], unit_B[:, None], axis=0).astype(model.dtype)
    positions_Bx1 = state.length_B[:, None]
    valid_Bx1 = jnp.ones_like(positions_Bx1, dtype=bool)
    caches = []
    for layer, cache in zip(model.backbone.layers, state.layers, strict=True):
        x_Bx1xD, cache = layer_extend(layer, x_Bx1xD, positions_Bx1, valid_Bx1, cache)
        caches.append(cache)
    return FlatState(tuple(caches), state.length_B + 1), _logits(model, x_Bx1xD[:, 0])


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
    capacity = inputs_BxT.shape[1]
    x_BxTxE = jnp.take(model.encoder.embedding_layer[...], inputs_BxT, axis=0).astype(model.encoder.dtype)
    encoder_caches = []
    for layer in model.encoder.layers:
        x_BxTxE, cache = layer_prefill(layer, x_BxTxE, lengths_B, capacity)
        encoder_caches.append(cache)
    enc_BxTxE = x_BxTxE

    open_word_B = _at(word_ids_BxT, word_start_B)
    words_BxWxD = model.pool(enc_BxTxE, word_ids_BxT, num_words)
    backbone_caches = []
    for layer in model.backbone.layers:
        words_BxWxD, cache = layer_prefill(layer, words_BxWxD, open_word_B, num_words)
        backbone_caches.append(cache)
    pred_BxWxD = model.decoder_connector(words_BxWxD)

    x_BxTxE = enc_BxTxE
    decoder_caches = []
    for block in model.decoder.decoder_layers:
        if block.cross_attention is not None:
            update_BxWxE = block.cross_attention(block.kv_norm(pred_BxWxD))
            update_BxSxE = jnp.pad(update_BxWxE, ((0, 0), (0, 1), (0, 0)))
            x_BxTxE = x_BxTxE + jnp.take_along_axis(update_BxSxE, word_ids_BxT[..., None], axis=1)
        x_BxTxE, cache = layer_prefill(block.llama_layer, x_BxTxE, lengths_B, capacity, recompute=recent_slots)
        decoder_caches.append(cache)

    # Slot s of the ring holds the latest position p < length with p % M == s.
    last_B = lengths_B - 1
    recent_positions_BxM = last_B[:, None] - (last_B[:, None] - jnp.arange(recent_slots)[None]) % recent_slots
    recent_BxMxE = jnp.take_along_axis(enc_BxTxE, jnp.maximum(recent_positions_BxM, 0)[..., None], axis=1)
    state = HATState(
        encoder=tuple(encoder_caches),
        backbone=tuple(backbone_caches),
        decoder=tuple(decoder_caches),
        recent_BxMxE=recent_BxMxE,
        pred_BxD=_at(pred_BxWxD, open_word_B),
        length_B=lengths_B,
        word_start_B=word_start_B,
        word_index_B=open_word_B,
    )
    return state, _logits(model, _at(x_BxTxE, last_B))


def _pool_open_word(model: HAT, state: HATState, end_B: jax.Array) -> jax.Array:
    """The word vector (B x D) of each row's open word, cut at `end_B`: `PoolingAttention` over its bytes only."""
    slots = state.recent_BxMxE.shape[1]
    positions_BxM = state.word_start_B[:, None] + jnp.arange(slots)[None]
    # The word's bytes are segment 0 (word 0 of one); the rest of the ring is padding (segment 1).
    segments_BxM = (positions_BxM >= end_B[:, None]).astype(jnp.int32)
    word_BxM = jnp.broadcast_to(state.word_index_B[:, None], positions_BxM.shape)
    enc_BxMxE = jnp.take_along_axis(state.recent_BxMxE, (positions_BxM % slots)[..., None], axis=1)
    pool = model.encoder_connector.cross_attention_encoder_connector
    query_D = model.encoder_connector.latent_query[...]
    return pool(query_D, enc_BxMxE, segments_BxM, 1, word_BxM, positions_BxM)[:, 0]


def _decode_bytes(
    model: HAT, state: HATState, positions_BxC: jax.Array, valid_BxC: jax.Array
) -> tuple[tuple[KVCache, ...], jax.Array]:
    """The decoder over a chunk of positions of the open word (their encoder states are in `recent`), with the
    state's predictive vector; returns the updated decoder caches and the last layer's states."""
    slots = state.recent_BxMxE.shape[1]
    x_BxCxE = jnp.take_along_axis(state.recent_BxMxE, (positions_BxC % slots)[..., None], axis=1)
    caches = []
    for block, cache in zip(model.decoder.decoder_layers, state.decoder, strict=True):
        if block.cross_attention is not None:
            x_BxCxE = x_BxCxE + block.cross_attention(block.kv_norm(state.pred_BxD[:, None]))
        x_BxCxE, cache = layer_extend(block.llama_layer, x_BxCxE, positions_BxC, valid_BxC, cache)
        caches.append(cache)
    return tuple(caches), x_BxCxE


def hat_close_word(
    model: HAT, state: HATState, end_B: jax.Array, until_B: jax.Array, close_B: jax.Array, chunk: int
) -> HATState:
    """Closes the open word at position `end_B` in the rows where `close_B`: pool it, one backbone step, new
    predictive vector. The bytes `end_B .. until_B - 1` (at most `chunk`; already encoded) belong to the next
    word: their decoder states were computed with the old predictive vector and are recomputed."""
    x_Bx1xD = _pool_open_word(model, state, end_B)[:, None]
    positions_Bx1 = state.word_index_B[:, None]
    caches = []
    for layer, cache in zip(model.backbone.layers, state.backbone, strict=True):
        x_Bx1xD, cache = layer_extend(layer, x_Bx1xD, positions_Bx1, close_B[:, None], cache)
        caches.append(cache)
    state = replace(
        state,
        backbone=tuple(caches),
        pred_BxD=jnp.where(close_B[:, None], x_Bx1xD[:, 0].astype(state.pred_BxD.dtype), state.pred_BxD),
        word_start_B=jnp.where(close_B, end_B, state.word_start_B),
        word_index_B=state.word_index_B + close_B.astype(jnp.int32),
    )
    if not chunk:
        return state
    positions_BxC = until_B[:, None] - chunk + jnp.arange(chunk)[None]
    valid_BxC = close_B[:, None] & (positions_BxC >= end_B[:, None]) & (positions_BxC < until_B[:, None])
    decoder_caches, _ = _decode_bytes(model, state, positions_BxC, valid_BxC)
    return replace(state, decoder=decoder_caches)


def hat_decode(model: HAT, state: HATState, byte_B: jax.Array) -> tuple[HATState, jax.Array]:
    """Appends one byte per row (encoder step, decoder step); returns the new state and the logits for the byte
    after it."""
    length_B = state.length_B
    x_Bx1xE = jnp.take(model.encoder.embedding_layer[...], byte_B[:, None], axis=0).astype(model.encoder.dtype)
    positions_Bx1 = length_B[:, None]
    valid_Bx1 = jnp.ones_like(positions_Bx1, dtype=bool)
    encoder_caches = []
    for layer, cache in zip(model.encoder.layers, state.encoder, strict=True):
        x_Bx1xE, cache = layer_extend(layer, x_Bx1xE, positions_Bx1, valid_Bx1, cache)
        encoder_caches.append(cache)
    slots = state.recent_BxMxE.shape[1]
    recent_BxMxE = jax.vmap(lambda ring, slot, value: ring.at[slot].set(value))(
        state.recent_BxMxE, length_B % slots, x_Bx1xE[:, 0].astype(state.recent_BxMxE.dtype)
    )
    state = replace(state, encoder=tuple(encoder_caches), recent_BxMxE=recent_BxMxE)
    decoder_caches, x_Bx1xE = _decode_bytes(model, state, positions_Bx1, valid_Bx1)
    state = replace(state, decoder=decoder_caches, length_B=length_B + 1)
    return state, _logits(model, x_Bx1xE[:, 0])
