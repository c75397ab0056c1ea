"""Key/value caches for incremental decoding with the Llama layers of `hat.models.layers`.

The functions here read the parameters of an existing `Attention` / `DecoderLayer` and compute what its
`__call__` computes, one chunk of positions at a time, against a cache of earlier keys and values.

A cache has a fixed number of slots S, and position p lives in slot p % S. A layer with a sliding window w gets
S = w slots (a ring: a query at p reads positions p - w + 1 .. p, so the slot p - w it overwrites is never needed
again, and decoding costs O(w) per byte however long the text); a full-attention layer gets one slot per position
of the context it can hold. Each slot records the position it holds (-1: empty), so masks need no other
bookkeeping. A chunk attends to the cache slots before its own first position plus its own keys, and is then
written into the cache; cached entries at or after the chunk's first position are stale (HAT recomputes the
decoder states of bytes that move to a new word) and are hidden, then overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from hat.models.attention import CausalMask, PositionMask, attend
from hat.models.layers import Attention, DecoderLayer, apply_rope, cast


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class KVCache:
    """Keys and values of one attention layer for a batch; `pos_BxS` is the position each slot holds (-1: empty)."""

    k_BxSxKxH: jax.Array
    v_BxSxKxH: jax.Array
    pos_BxS: jax.Array

    @property
    def slots(self) -> int:
        """Number of slots S."""
        return self.pos_BxS.shape[1]


def cache_slots(attn: Attention, capacity: int, recompute: int = 0) -> int:
    """Slots a cache for `attn` needs to serve contexts of up to `capacity` positions, when chunks may also
    recompute up to `recompute` positions before the newest one (a recomputed query at p < n reads keys from
    p - w + 1 on, which a ring of w slots has already overwritten)."""
    window = attn.sliding_window
    return capacity if window is None else min(window + recompute, capacity)


def _project(attn: Attention, x_BxLxD: jax.Array, positions_BxL: jax.Array) -> tuple[jax.Array, ...]:
    """Queries, keys and values of `attn` for a chunk, normed and rotated as in `Attention.__call__`."""
    q_BxLxNxH = jnp.einsum("btd,dnh->btnh", x_BxLxD, cast(attn.q_proj, attn.dtype))
    k_BxLxKxH = jnp.einsum("btd,dkh->btkh", x_BxLxD, cast(attn.k_proj, attn.dtype))
    v_BxLxKxH = jnp.einsum("btd,dkh->btkh", x_BxLxD, cast(attn.v_proj, attn.dtype))
    if attn.q_norm is not None:
        q_BxLxNxH, k_BxLxKxH = attn.q_norm(q_BxLxNxH), attn.k_norm(k_BxLxKxH)
    q_BxLxNxH = apply_rope(q_BxLxNxH, positions_BxL, attn.rope_theta, attn.rope_scaling)
    k_BxLxKxH = apply_rope(k_BxLxKxH, positions_BxL, attn.rope_theta, attn.rope_scaling)
    return q_BxLxNxH, k_BxLxKxH, v_BxLxKxH


def _write(cache: KVCache, k_BxLxKxH: jax.Array, v_BxLxKxH: jax.Array, positions_BxL: jax.Array,
           keep_BxL: jax.Array) -> KVCache:
    """Writes the kept chunk entries to their slots; the caller keeps at most S consecutive positions per row, so
    no two kept entries share a slot."""
    slots = cache.slots
    index_BxL = jnp.where(keep_BxL, positions_BxL % slots, slots)  # out of range: dropped

    def write_row(buffer, index, values):
        return buffer.at[index].set(values.astype(buffer.dtype), mode="drop")

    return KVCache(
        jax.vmap(write_row)(cache.k_BxSxKxH, index_BxL, k_BxLxKxH),
        jax.vmap(write_row)(cache.v_BxSxKxH, index_BxL, v_BxLxKxH),
        jax.vmap(write_row)(cache.pos_BxS, index_BxL, positions_BxL),
    )


def empty_cache(attn: Attention, batch: int, slots: int) -> KVCache:
    """An empty cache of `slots` slots for `attn`."""
    kv_heads, head_dim = attn.k_proj.shape[1], attn.k_proj.shape[2]
    zeros = jnp.zeros((batch, slots, kv_heads, head_dim), attn.dtype)
    return KVCache(zeros, zeros, jnp.full((batch, slots), -1, jnp.int32))


def attention_prefill(
    attn: Attention, x_BxTxD: jax.Array, lengths_B: jax.Array, slots: int
) -> tuple[jax.Array, KVCache]:
    """`attn(x, positions 0..T-1)` over a batch of contexts padded to T, and a cache of `slots` slots holding
    each row's first `lengths_B` positions (the last `slots` of them). Padding after a row's length cannot reach
    its earlier positions (the attention is causal), so its outputs there equal the uncached layer's."""
    batch, length = x_BxTxD.shape[:2]
    positions_BxT = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
    q_BxTxNxH, k_BxTxKxH, v_BxTxKxH = _project(attn, x_BxTxD, positions_BxT)
    out_BxTxNxH = attend(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, CausalMask(attn.sliding_window))
    keep_BxT = (positions_BxT < lengths_B[:, None]) & (positions_BxT >= lengths_B[:, None] - slots)
    cache = _write(empty_cache(attn, batch, slots), k_BxTxKxH, v_BxTxKxH, positions_BxT, keep_BxT)
    return jnp.einsum("btnh,nhd->btd", out_BxTxNxH, cast(attn.o_proj, attn.dtype)), cache


def attention_extend(
    attn: Attention, x_BxLxD: jax.Array, positions_BxL: jax.Array, valid_BxL: jax.Array, cache: KVCache
) -> tuple[jax.Array, KVCache]:
    """`attn` over a chunk of L new positions per row (consecutive where valid), reading the cache.

    Invalid chunk entries (a row with fewer new positions, or none) are neither read by the others nor written;
    their outputs are meaningless.
    """
    q_BxLxNxH, k_BxLxKxH, v_BxLxKxH = _project(attn, x_BxLxD, positions_BxL)
    big = jnp.iinfo(jnp.int32).max
    first_B = jnp.min(jnp.where(valid_BxL, positions_BxL, big), axis=1)
    last_B = jnp.max(jnp.where(valid_BxL, positions_BxL, -1), axis=1)
    seen_BxS = jnp.where(cache.pos_BxS < first_B[:, None], cache.pos_BxS, -1)
    key_positions_BxC = jnp.concatenate([seen_BxS, jnp.where(valid_BxL, positions_BxL, -1)], axis=1)
    k_BxCxKxH = jnp.concatenate([cache.k_BxSxKxH, k_BxLxKxH.astype(cache.k_BxSxKxH.dtype)], axis=1)
    v_BxCxKxH = jnp.concatenate([cache.v_BxSxKxH, v_BxLxKxH.astype(cache.v_BxSxKxH.dtype)], axis=1)
    mask = PositionMask(positions_BxL, key_positions_BxC, attn.sliding_window)
    out_BxLxNxH = attend(q_BxLxNxH, k_BxCxKxH, v_BxCxKxH, mask)
    keep_BxL = valid_BxL & (positions_BxL > last_B[:, None] - cache.slots)
    cache = _write(cache, k_BxLxKxH, v_BxLxKxH, positions_BxL, keep_BxL)
    return jnp.einsum("btnh,nhd->btd", out_BxLxNxH, cast(attn.o_proj, attn.dtype)), cache


def layer_prefill(
    layer: DecoderLayer, x_BxTxD: jax.Array, lengths_B: jax.Array, capacity: int, recompute: int = 0
) -> tuple[jax.Array, KVCache]:
    """`layer(x, positions 0..T-1)` and its attention cache of each row's first `lengths_B` positions, sized by
    `cache_slots(capacity, recompute)`."""
    slots = cache_slots(layer.self_attn, capacity, recompute)
    attn_out, cache = attention_prefill(layer.self_attn, layer.input_layernorm(x_BxTxD), lengths_B, slots)
    x_BxTxD = x_BxTxD + attn_out
    return x_BxTxD + layer.mlp(layer.post_attention_layernorm(x_BxTxD)), cache


def layer_extend(
    layer: DecoderLayer, x_BxLxD: jax.Array, positions_BxL: jax.Array, valid_BxL: jax.Array, cache: KVCache
) -> tuple[jax.Array, KVCache]:
    """`layer` over a chunk of new positions, reading and updating its attention cache."""
    attn_out, cache = attention_extend(layer.self_attn, layer.input_layernorm(x_BxLxD), positions_BxL, valid_BxL, cache)
    x_BxLxD = x_BxLxD + attn_out
    return x_BxLxD + layer.mlp(layer.post_attention_layernorm(x_BxLxD)), cache
