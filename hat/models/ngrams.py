"""Hashed n-gram embeddings (BLT, arXiv 2412.09871): position t also looks up, for every n in `sizes`, the n units
ending at t (units t - n + 1 .. t), hashed into one of `buckets` rows of a table of its own; the vectors are added
to the unit embedding. A byte embedding alone tells a small model which byte it is; the n-gram rows tell it which
word fragment it is in, which a 1-layer byte encoder otherwise has to work out with attention.

Causal by construction: position t reads units up to t only. Positions before the sequence start read a pad value
that no unit has, so an n-gram that reaches before the start hashes differently from every real one. Incremental
decoding passes the `max(sizes) - 1` units before the chunk as `history_BxH`, so a cached step and the full
sequence look up the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from hat.config import NgramConfig
from hat.models.layers import INIT_STD, normal_init
from hat.models.sharding import gathered_table, make_param

# Odd 32-bit constants: one multiplier for the rolling hash, then murmur3's finaliser, which spreads nearby n-grams
# ("abc" / "abd") over unrelated buckets.
_ROLL = 0x9E3779B1
_MIX_1 = 0x85EBCA6B
_MIX_2 = 0xC2B2AE35
# Units enter the hash as unit + 1; the pad (no unit before the sequence start) enters as 0.
PAD_UNIT = -1


def history_length(sizes: Sequence[int]) -> int:
    """How many earlier units an incremental step needs: max(sizes) - 1 (0 without n-grams)."""
    return max(sizes, default=1) - 1


def _mix(h: jax.Array) -> jax.Array:
    h = h ^ (h >> 16)
    h = h * jnp.uint32(_MIX_1)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(_MIX_2)
    return h ^ (h >> 16)


def ngram_ids(
    sizes: Sequence[int], buckets: int, units_BxT: jax.Array, history_BxH: jax.Array | None = None
) -> jax.Array:
    """Row ids B x T x N (N = len(sizes)) into the stacked table: n-gram i of position t is hashed into rows
    [i * buckets, (i + 1) * buckets). `history_BxH` holds the H = `history_length` units before `units_BxT[:, 0]`
    (PAD_UNIT where the sequence had not started); None: the chunk starts the sequence."""
    batch, length = units_BxT.shape
    hist = history_length(sizes)
    if history_BxH is None:
        history_BxH = jnp.full((batch, hist), PAD_UNIT, jnp.int32)
    seq_BxL = (jnp.concatenate([history_BxH.astype(jnp.int32), units_BxT.astype(jnp.int32)], axis=1) + 1).astype(
        jnp.uint32
    )
    ids = []
    for index, n in enumerate(sizes):
        h_BxT = jnp.full((batch, length), n, jnp.uint32)
        for back in range(n):
            # The unit `back` positions before t (uint32 arithmetic wraps, which is what a hash wants).
            h_BxT = (h_BxT * jnp.uint32(_ROLL)) ^ seq_BxL[:, hist - back : hist - back + length]
        ids.append((_mix(h_BxT) % jnp.uint32(buckets)).astype(jnp.int32) + index * buckets)
    return jnp.stack(ids, axis=-1)


def next_history(history_BxH: jax.Array, unit_B: jax.Array) -> jax.Array:
    """The history after appending one unit per row."""
    if not history_BxH.shape[1]:
        return history_BxH
    return jnp.concatenate([history_BxH[:, 1:], unit_B[:, None].astype(history_BxH.dtype)], axis=1)


def history_at(sizes: Sequence[int], units_BxT: jax.Array, lengths_B: jax.Array) -> jax.Array:
    """The H units before position `lengths_B[b]` of each row (PAD_UNIT before the start): the history after a
    prefill of `units_BxT[b, :lengths_B[b]]`."""
    hist = history_length(sizes)
    positions_BxH = lengths_B[:, None] - hist + jnp.arange(hist)[None]
    gathered_BxH = jnp.take_along_axis(units_BxT, jnp.maximum(positions_BxH, 0), axis=1)
    return jnp.where(positions_BxH >= 0, gathered_BxH, PAD_UNIT).astype(jnp.int32)


class NgramEmbedding(nnx.Module):
    """The hashed n-gram tables (len(sizes) * buckets rows, one block per n) and their summed lookup."""

    def __init__(self, cfg: NgramConfig, dim: int, *, rngs: nnx.Rngs):
        # A tuple: module attributes that are not arrays end up in the (hashed) graph definition.
        self.sizes = tuple(cfg.sizes)
        self.buckets = cfg.buckets
        self.table = make_param(rngs, normal_init(INIT_STD), (len(cfg.sizes) * cfg.buckets, dim), ("vocab", "embed"))

    def __call__(self, units_BxT: jax.Array, history_BxH: jax.Array | None = None) -> jax.Array:
        """B x T x dim (float32): the sum of each position's n-gram vectors."""
        ids_BxTxN = ngram_ids(self.sizes, self.buckets, units_BxT, history_BxH)
        return jnp.take(gathered_table(self.table), ids_BxTxN, axis=0).sum(axis=2)
