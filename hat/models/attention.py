"""Grouped-query attention: one function, `attend`, for every attention in the models.

Queries have N heads and keys/values K heads (N a multiple of K; query head n reads key head n // G, G = N / K).
Which keys a query may read is a mask object:

* `CausalMask(window)`: self-attention over one sequence, query t reads keys t - window + 1 .. t (all earlier keys
  without a window). A window shorter than the sequence forms only T x 2w scores.
* `PositionMask(query_positions, key_positions, window)`: queries and keys carry explicit positions (a chunk of new
  positions against a cache whose slots record the position they hold); a query reads the keys at or before its
  position and within the window. A negative key position is no key (an empty or hidden slot, padding).
* `SegmentMask(segment_ids, num_segments)`: segment w's query reads, non-causally, the keys whose segment id is w
  and nothing else (HAT's pooling: a word's query attends to that word's bytes). Every key carries its segment's
  query (q is B x S x N x H, the output B x W x N x H), so memory is O(S): no W x S score matrix is formed.

Scores and the softmax run in float32; the output has the values' dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

# Masked scores: finite, so that a query with no key at all (a padding entry) gets a harmless average instead of NaN;
# next to any real score its weight is exactly 0, as with -inf.
_MASKED = -0.7 * float(jnp.finfo(jnp.float32).max)


@dataclass(frozen=True)
class CausalMask:
    """Self-attention over a sequence of consecutive positions (queries and keys are the same T entries)."""

    window: int | None = None


@dataclass(frozen=True)
class PositionMask:
    """Query t (at `query_positions_BxT[b, t]`) reads key s (at `key_positions_BxS[b, s]`) when
    0 <= key position <= query position and, with a window, query position - key position < window."""

    query_positions_BxT: jax.Array
    key_positions_BxS: jax.Array
    window: int | None = None

    def allowed(self) -> jax.Array:
        """The B x T x S boolean mask."""
        query_BxTx1 = self.query_positions_BxT[:, :, None]
        key_Bx1xS = self.key_positions_BxS[:, None, :]
        allowed_BxTxS = (key_Bx1xS >= 0) & (key_Bx1xS <= query_BxTx1)
        if self.window is not None:
            allowed_BxTxS &= query_BxTx1 - key_Bx1xS < self.window
        return allowed_BxTxS


@dataclass(frozen=True)
class SegmentMask:
    """Segment w's query reads the keys with `segment_ids_BxS == w`, w < `num_segments` (W). Ids are sorted along S;
    an id outside [0, W) (padding) belongs to no segment. A segment without keys gives zeros."""

    segment_ids_BxS: jax.Array
    num_segments: int


Mask = CausalMask | PositionMask | SegmentMask


def attend(q_BxTxNxH: jax.Array, k_BxSxKxH: jax.Array, v_BxSxKxH: jax.Array, mask: Mask) -> jax.Array:
    """Softmax attention of the queries over the keys that `mask` allows, scaled by 1/sqrt(H): B x T x N x H
    (B x W x N x H for a `SegmentMask`, whose queries are given per key)."""
    if isinstance(mask, SegmentMask):
        return _segment_attention(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, mask.segment_ids_BxS, mask.num_segments)
    if isinstance(mask, PositionMask):
        return _masked_attention(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, mask.allowed())
    length = q_BxTxNxH.shape[1]
    if mask.window is None or mask.window >= length:
        # XLA's fused causal attention (cuDNN can replace it on GPU); a window this long is no restriction.
        return jax.nn.dot_product_attention(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, is_causal=True)
    return _blocked_window_attention(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, mask.window)


def _grouped(q_xTxNxH: jax.Array, kv_heads: int) -> jax.Array:
    """Queries with their heads split into K groups of G: ... x T x K x G x H."""
    *lead, heads, head_dim = q_xTxNxH.shape
    return q_xTxNxH.reshape(*lead, kv_heads, heads // kv_heads, head_dim)


def _masked_attention(
    q_xTxNxH: jax.Array, k_xSxKxH: jax.Array, v_xSxKxH: jax.Array, allowed_xTxS: jax.Array
) -> jax.Array:
    """Dense attention with an explicit boolean mask; any number of leading batch axis (`...`)."""
    head_dim = q_xTxNxH.shape[-1]
    scores_xKxGxTxS = jnp.einsum(
        "...tkgh,...skh->...kgts",
        _grouped(q_xTxNxH, k_xSxKxH.shape[-2]),
        k_xSxKxH,
        preferred_element_type=jnp.float32,
    ) / jnp.sqrt(jnp.float32(head_dim))
    scores_xKxGxTxS = jnp.where(allowed_xTxS[..., None, None, :, :], scores_xKxGxTxS, _MASKED)
    weights_xKxGxTxS = jax.nn.softmax(scores_xKxGxTxS, axis=-1).astype(v_xSxKxH.dtype)
    out_xTxKxGxH = jnp.einsum("...kgts,...skh->...tkgh", weights_xKxGxTxS, v_xSxKxH)
    return out_xTxKxGxH.reshape(q_xTxNxH.shape)


def _blocked_window_attention(
    q_BxTxNxH: jax.Array, k_BxTxKxH: jax.Array, v_BxTxKxH: jax.Array, window: int
) -> jax.Array:
    """Sliding-window causal attention in blocks of `window` queries, each reading its own and the previous block.

    A query at t sees keys t - window + 1 .. t, which always lie in those two blocks. (`jax.nn.dot_product_attention`
    with `local_window_size` still forms every T x T score, on CPU and in its XLA path.)
    """
    batch, length = q_BxTxNxH.shape[:2]
    blocks = -(-length // window)
    pad = blocks * window - length

    def to_blocks(x: jax.Array) -> jax.Array:
        x = jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0)))
        return x.reshape(batch, blocks, window, *x.shape[2:])

    k_BxCxWxKxH, v_BxCxWxKxH = to_blocks(k_BxTxKxH), to_blocks(v_BxTxKxH)
    shift = lambda x: jnp.pad(x, ((0, 0), (1, 0), (0, 0), (0, 0), (0, 0)))[:, :-1]  # noqa: E731
    k_BxCxSxKxH = jnp.concatenate([shift(k_BxCxWxKxH), k_BxCxWxKxH], axis=2)
    v_BxCxSxKxH = jnp.concatenate([shift(v_BxCxWxKxH), v_BxCxWxKxH], axis=2)
    # Query i of a block sits at key slot i + window; it may read slots i + 1 .. i + window. Block 0 has no
    # previous block, so its first `window` slots are padding.
    query_W1 = jnp.arange(window)[:, None] + window
    key_1S = jnp.arange(2 * window)[None, :]
    allowed_WxS = (key_1S <= query_W1) & (key_1S > query_W1 - window)
    allowed_CxWxS = allowed_WxS[None] & ((jnp.arange(blocks)[:, None, None] > 0) | (key_1S >= window)[None])
    out_BxCxWxNxH = _masked_attention(to_blocks(q_BxTxNxH), k_BxCxSxKxH, v_BxCxSxKxH, allowed_CxWxS[None])
    return out_BxCxWxNxH.reshape(batch, blocks * window, *q_BxTxNxH.shape[2:])[:, :length]


def _segment_attention(
    q_BxSxNxH: jax.Array, k_BxSxKxH: jax.Array, v_BxSxKxH: jax.Array, segment_ids_BxS: jax.Array, num_segments: int
) -> jax.Array:
    """`attend` with a `SegmentMask`: each key is scored against the query it carries (S scores per head), then a
    softmax within each segment (segment max and sums)."""
    batch, _, heads, head_dim = q_BxSxNxH.shape
    # Padding keys go to one extra segment, W, which is dropped.
    valid_BxS = (segment_ids_BxS >= 0) & (segment_ids_BxS < num_segments)
    ids_BxS = jnp.where(valid_BxS, segment_ids_BxS, num_segments)
    scores_BxSxKxG = jnp.einsum(
        "bskgh,bskh->bskg", _grouped(q_BxSxNxH, k_BxSxKxH.shape[2]), k_BxSxKxH, preferred_element_type=jnp.float32
    ) / jnp.sqrt(jnp.float32(head_dim))
    # vmap over the batch keeps it a batch axis of the scatter, which partitions cleanly under data sharding.
    out_BxWxKxGxH = jax.vmap(_segment_softmax, in_axes=(0, 0, 0, None))(
        scores_BxSxKxG, v_BxSxKxH, ids_BxS, num_segments + 1
    )
    return out_BxWxKxGxH[:, :num_segments].reshape(batch, num_segments, heads, head_dim).astype(v_BxSxKxH.dtype)


def _segment_softmax(scores_SxKxG: jax.Array, v_SxKxH: jax.Array, ids_S: jax.Array, num_segments: int) -> jax.Array:
    """Softmax of `scores` within each segment of `ids` (sorted), applied to `v`; empty segments give zeros."""
    segment = dict(segment_ids=ids_S, num_segments=num_segments, indices_are_sorted=True)
    # The max only stabilises exp(); softmax does not depend on it, so no gradient needs to flow through it.
    max_WxKxG = jax.lax.stop_gradient(jax.ops.segment_max(scores_SxKxG, **segment))
    weights_SxKxG = jnp.exp(scores_SxKxG - max_WxKxG[ids_S])
    denom_WxKxG = jax.ops.segment_sum(weights_SxKxG, **segment)
    weighted_SxKxGxH = weights_SxKxG[..., None] * v_SxKxH[:, :, None, :].astype(jnp.float32)
    numer_WxKxGxH = jax.ops.segment_sum(weighted_SxKxGxH, **segment)
    return numer_WxKxGxH / jnp.where(denom_WxKxG > 0, denom_WxKxG, 1.0)[..., None]
