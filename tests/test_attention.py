"""`attend` (every mask kind) against a brute-force masked softmax, and the ring writes of `KVCache`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hat.models.attention import CausalMask, PositionMask, SegmentMask, attend
from hat.models.kv_cache import KVCache, attend_cached

HEADS, KV_HEADS, HEAD_DIM = 4, 2, 8


def qkv(queries: int, keys: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    # Scaled up so that the softmax is far from uniform and a wrong mask shows.
    q = 3 * rng.normal(size=(2, queries, HEADS, HEAD_DIM)).astype(np.float32)
    k = rng.normal(size=(2, keys, KV_HEADS, HEAD_DIM)).astype(np.float32)
    v = rng.normal(size=(2, keys, KV_HEADS, HEAD_DIM)).astype(np.float32)
    return q, k, v


def reference(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, allowed_BxTxS) -> np.ndarray:
    """Softmax over the allowed keys in float64, query head n reading key head n // G; no key: zeros."""
    group = q_BxTxNxH.shape[2] // k_BxSxKxH.shape[2]
    k_BxSxNxH, v_BxSxNxH = (np.repeat(x.astype(np.float64), group, axis=2) for x in (k_BxSxKxH, v_BxSxKxH))
    scores_BxNxTxS = np.einsum("btnh,bsnh->bnts", q_BxTxNxH, k_BxSxNxH) / np.sqrt(q_BxTxNxH.shape[-1])
    scores_BxNxTxS = np.where(allowed_BxTxS[:, None], scores_BxNxTxS, -np.inf)
    peak = np.max(scores_BxNxTxS, axis=-1, keepdims=True)
    weights = np.exp(scores_BxNxTxS - np.where(np.isfinite(peak), peak, 0.0))
    weights /= np.maximum(weights.sum(-1, keepdims=True), 1e-300)
    return np.einsum("bnts,bsnh->btnh", weights, v_BxSxNxH)


@pytest.mark.parametrize("length, window", [(11, None), (11, 11), (11, 4), (12, 4), (11, 1)])
def test_causal_and_sliding_window(length, window):
    q, k, v = qkv(length, length)
    query_T1, key_1S = np.arange(length)[:, None], np.arange(length)[None, :]
    allowed_TxS = (key_1S <= query_T1) & ((query_T1 - key_1S < window) if window else True)
    expected = reference(q, k, v, np.broadcast_to(allowed_TxS, (2, length, length)))
    np.testing.assert_allclose(attend(q, k, v, CausalMask(window)), expected, atol=1e-5)


@pytest.mark.parametrize("window", [None, 3])
def test_chunk_against_a_ring_of_recorded_positions(window):
    """A chunk at positions 7, 8 (row 0) and 5 plus padding (row 1) over 6 ring slots holding scrambled positions
    and empty slots (-1)."""
    q, k, v = qkv(2, 8)
    query_positions_BxT = np.array([[7, 8], [5, -1]])
    slot_positions = np.array([[6, 1, 2, 3, 4, 5], [0, 1, 2, -1, 4, -1]])
    key_positions_BxS = np.concatenate([slot_positions, query_positions_BxT], axis=1)
    got = attend(q, k, v, PositionMask(jnp.asarray(query_positions_BxT), jnp.asarray(key_positions_BxS), window))
    query_BxTx1, key_Bx1xS = query_positions_BxT[:, :, None], key_positions_BxS[:, None, :]
    allowed = (key_Bx1xS >= 0) & (key_Bx1xS <= query_BxTx1) & ((query_BxTx1 - key_Bx1xS < window) if window else True)
    expected = reference(q, k, v, allowed)
    np.testing.assert_allclose(got[0], expected[0], atol=1e-5)
    np.testing.assert_allclose(got[1, :1], expected[1, :1], atol=1e-5)
    assert bool(jnp.all(jnp.isfinite(got))), "a query without keys (padding) stays finite"


def test_segments_read_only_their_own_keys():
    """Keys of segments 0, 0, 0, 1, 3, 3 then two padding keys; segment 2 is empty and gives zeros."""
    num_segments = 4
    segment_ids_BxS = np.array([[0, 0, 0, 1, 3, 3, 4, 4], [0, 1, 1, 1, 1, 3, -1, 9]])
    q_WxNxH = qkv(num_segments, 0, seed=1)[0]
    _, k, v = qkv(0, 8)
    # Every key carries its segment's query.
    q_BxSxNxH = np.take_along_axis(q_WxNxH, np.clip(segment_ids_BxS, 0, num_segments - 1)[..., None, None], axis=1)
    got = attend(q_BxSxNxH, k, v, SegmentMask(jnp.asarray(segment_ids_BxS), num_segments))
    allowed_BxWxS = segment_ids_BxS[:, None, :] == np.arange(num_segments)[None, :, None]
    assert got.shape == (2, num_segments, HEADS, HEAD_DIM)
    np.testing.assert_allclose(got, reference(q_WxNxH, k, v, allowed_BxWxS), atol=1e-5)
    np.testing.assert_array_equal(got[:, 2], 0.0)


def test_ring_write_keeps_the_latest_slots_and_skips_padding():
    cache = KVCache.init(2, 4, KV_HEADS, HEAD_DIM, jnp.float32)
    assert cache.empty and cache.slots == 4
    values = jnp.arange(2 * 6, dtype=jnp.float32).reshape(2, 6, 1, 1) * jnp.ones((1, 1, KV_HEADS, HEAD_DIM))
    positions = jnp.array([[0, 1, 2, 3, 4, 5], [0, 1, 2, -1, -1, -1]])
    written = cache.write(values, values, positions)
    assert not written.empty
    np.testing.assert_array_equal(written.pos_BxS, [[4, 5, 2, 3], [0, 1, 2, -1]])
    np.testing.assert_array_equal(written.k_BxSxKxH[:, :, 0, 0], [[4, 5, 2, 3], [6, 7, 8, 0]])
    again = jax.jit(lambda c: c.write(values[:, :1], values[:, :1], jnp.array([[6], [-1]])))(written)
    np.testing.assert_array_equal(again.pos_BxS, [[4, 5, 6, 3], [0, 1, 2, -1]])


def test_a_recomputed_chunk_hides_the_stale_entries_it_replaces():
    """A cache of positions 0..5 and a chunk recomputing 3, 4: the chunk reads cached 0..2 and itself, then
    replaces 3 and 4 (5 stays, stale, until overwritten)."""
    q, k, v = qkv(2, 8)
    cached_positions_BxS = jnp.broadcast_to(jnp.arange(6), (2, 6))
    cache = KVCache.init(2, 8, KV_HEADS, HEAD_DIM, jnp.float32).write(k[:, :6], v[:, :6], cached_positions_BxS)
    positions_BxL = jnp.array([[3, 4], [3, 4]])
    out, updated = attend_cached(q, k[:, 6:], v[:, 6:], positions_BxL, cache, None)
    keys = [0, 1, 2, 6, 7]  # cached 0..2, then the chunk
    allowed = np.array([[True, True, True, True, False], [True] * 5])
    expected = reference(q, k[:, keys], v[:, keys], np.broadcast_to(allowed, (2, 2, 5)))
    np.testing.assert_allclose(out, expected, atol=1e-5)
    np.testing.assert_array_equal(updated.k_BxSxKxH[:, 3:5], k[:, 6:])
    np.testing.assert_array_equal(updated.pos_BxS[0], [0, 1, 2, 3, 4, 5, -1, -1])
