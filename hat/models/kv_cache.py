"""Ring key/value caches for incremental decoding: what `Attention(..., cache=cache)` reads and writes.

A cache has a fixed number of slots S, and position p lives in slot p % S. A layer with a sliding window w gets
S = w slots (a ring: a query at p reads positions p - w + 1 .. p, so the slot p - w it overwrites is never needed
again, and decoding costs O(w) per position however long the text); a full-attention layer gets one slot per
position of the context it can hold. Each slot records the position it holds (-1: empty), so masks need no other
bookkeeping. A chunk of new positions attends to the cache slots before its own first position plus its own keys,
and is then written into the cache; cached entries at or after the chunk's first position are stale (HAT recomputes
the decoder states of bytes that move to a new word) and are hidden, then overwritten. Chunk entries at negative
positions are padding: they are neither read by the other entries nor written. A single new position (a decoding
step) is written first and attends over the cache alone, which holds it by then.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from hat.models.attention import CausalMask, PositionMask, attend


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class KVCache:
    """Keys and values of one attention layer for a batch; `pos_BxS` is the position each slot holds (-1: empty).

    `empty` is known at trace time: a fresh cache (`KVCache.init`) holds nothing, so a chunk written into it (a
    prefill of positions 0, 1, ...) attends to itself alone, with the uncached layer's causal attention.
    """

    k_BxSxKxH: jax.Array
    v_BxSxKxH: jax.Array
    pos_BxS: jax.Array
    empty: bool = dataclasses.field(default=False, metadata=dict(static=True))

    @classmethod
    def init(cls, batch: int, slots: int, kv_heads: int, head_dim: int, dtype: jnp.dtype) -> KVCache:
        """An empty cache of `slots` slots."""
        zeros_BxSxKxH = jnp.zeros((batch, slots, kv_heads, head_dim), dtype)
        return cls(zeros_BxSxKxH, zeros_BxSxKxH, jnp.full((batch, slots), -1, jnp.int32), empty=True)

    @property
    def slots(self) -> int:
        """Number of slots S."""
        return self.pos_BxS.shape[1]

    def write(self, k_BxLxKxH: jax.Array, v_BxLxKxH: jax.Array, positions_BxL: jax.Array) -> KVCache:
        """Writes the chunk's entries at non-negative positions, of each row only the last S of them (consecutive
        positions), so no two written entries share a slot."""
        last_B = jnp.max(positions_BxL, axis=1)
        keep_BxL = (positions_BxL >= 0) & (positions_BxL > last_B[:, None] - self.slots)
        index_BxL = jnp.where(keep_BxL, positions_BxL % self.slots, self.slots)  # out of range: dropped

        def write_rows(buffer_BxSx_: jax.Array, values_BxLx_: jax.Array) -> jax.Array:
            return jax.vmap(lambda buffer, index, values: buffer.at[index].set(values, mode="drop"))(
                buffer_BxSx_, index_BxL, values_BxLx_.astype(buffer_BxSx_.dtype)
            )

        return KVCache(
            write_rows(self.k_BxSxKxH, k_BxLxKxH),
            write_rows(self.v_BxSxKxH, v_BxLxKxH),
            write_rows(self.pos_BxS, positions_BxL),
        )


def cache_slots(window: int | None, capacity: int, recompute: int = 0) -> int:
    """Slots a cache for a layer with this sliding window needs to serve contexts of up to `capacity` positions,
    when chunks may also recompute up to `recompute` positions before the newest one (a recomputed query at p < n
    reads keys from p - w + 1 on, which a ring of w slots has already overwritten)."""
    return capacity if window is None else min(window + recompute, capacity)


def attend_cached(
    q_BxLxNxH: jax.Array,
    k_BxLxKxH: jax.Array,
    v_BxLxKxH: jax.Array,
    positions_BxL: jax.Array,
    cache: KVCache,
    window: int | None,
) -> tuple[jax.Array, KVCache]:
    """`attend` for a chunk of L new positions per row (consecutive where non-negative) over the cache and the chunk
    itself, then the chunk written into the cache. Outputs at padding entries are meaningless."""
    if cache.empty:
        out_BxLxNxH = attend(q_BxLxNxH, k_BxLxKxH, v_BxLxKxH, CausalMask(window))
    elif q_BxLxNxH.shape[1] == 1:
        # One position (a decoding step): written first, then read back from its slot with the others, so the
        # cache is not copied into a concatenation. The entry it overwrites is one no query at that position
        # reads (p - S: outside a window of S slots; a full-attention cache holds the whole context).
        cache = cache.write(k_BxLxKxH, v_BxLxKxH, positions_BxL)
        mask = PositionMask(positions_BxL, cache.pos_BxS, window)
        return attend(q_BxLxNxH, cache.k_BxSxKxH, cache.v_BxSxKxH, mask), cache
    else:
        first_B = jnp.min(jnp.where(positions_BxL >= 0, positions_BxL, jnp.iinfo(jnp.int32).max), axis=1)
        seen_BxS = jnp.where(cache.pos_BxS < first_B[:, None], cache.pos_BxS, -1)
        key_positions_BxC = jnp.concatenate([seen_BxS, positions_BxL], axis=1)
        k_BxCxKxH = jnp.concatenate([cache.k_BxSxKxH, k_BxLxKxH.astype(cache.k_BxSxKxH.dtype)], axis=1)
        v_BxCxKxH = jnp.concatenate([cache.v_BxSxKxH, v_BxLxKxH.astype(cache.v_BxSxKxH.dtype)], axis=1)
        mask = PositionMask(positions_BxL, key_positions_BxC, window)
        out_BxLxNxH = attend(q_BxLxNxH, k_BxCxKxH, v_BxCxKxH, mask)
    return out_BxLxNxH, cache.write(k_BxLxKxH, v_BxLxKxH, positions_BxL)
