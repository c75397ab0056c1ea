"""Model tests: shapes, causality (the classic hierarchical-model leak), padding, pooling, remat, window, overfit.

Compiles dominate the runtime on a small CPU, so: every computation runs inside one `jit` per shape (an eager op
at a new shape is a compile too), models share parameter shapes, XLA's backend optimisation is off (a third less
compile time), and parameters are drawn with `rbg` keys, whose RNG kernels compile several times faster.
"""

from __future__ import annotations

import dataclasses
import functools
import random

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from support import golden

from hat.config import EOT_BYTE, ModelConfig, NgramConfig, PoolingConfig, TransformerConfig
from hat.models import HAT, FlatLM, build_model, convert_layer_layout, count_params, flops_per_byte
from hat.models.layers import Attention, apply_rope
from hat.text import split_words

SEQ = 64
NUM_WORDS = 40
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def rngs(seed: int = 0) -> nnx.Rngs:
    return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def tiny_config(**changes) -> ModelConfig:
    """A HAT small enough to compile in seconds, with GQA, QK-norm and sliding windows switched on."""
    cfg = ModelConfig(
        kind="hat",
        encoder=TransformerConfig(
            num_layers=1, hidden_size=32, num_heads=4, num_kv_heads=2, mlp_hidden_size=64, sliding_window=16
        ),
        pooling=PoolingConfig(num_heads=4, num_kv_heads=2, qk_norm=True),
        backbone=TransformerConfig(num_layers=1, hidden_size=48, num_heads=4, num_kv_heads=2, mlp_hidden_size=96),
        decoder=TransformerConfig(
            num_layers=2, hidden_size=32, num_heads=4, num_kv_heads=2, mlp_hidden_size=64, sliding_window=16
        ),
    )
    return dataclasses.replace(cfg, **changes)


def layout(words: list[bytes], seq_len: int = SEQ, num_words: int = NUM_WORDS) -> tuple[np.ndarray, np.ndarray]:
    """EOT (word 0), the words, then padding (byte 0, word id `num_words`), as the data pipeline lays it out."""
    data = bytes([EOT_BYTE]) + b"".join(words)
    ids = [0] + [i + 1 for i, word in enumerate(words) for _ in word]
    assert len(data) <= seq_len and len(words) + 1 <= num_words
    bytes_T = np.zeros(seq_len, np.int32)
    bytes_T[: len(data)] = list(data)
    ids_T = np.full(seq_len, num_words, np.int32)
    ids_T[: len(ids)] = ids
    return bytes_T, ids_T


def batch(*texts: str, seq_len: int = SEQ, num_words: int = NUM_WORDS) -> tuple[np.ndarray, np.ndarray]:
    rows = [layout(split_words(text), seq_len, num_words) for text in texts]
    return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])


@functools.cache
def model_and_forward(cfg: ModelConfig):
    """The model and a jitted forward pass over its params (compiled once per config and input shape)."""
    model = build_model(cfg, rngs=rngs())
    graphdef, params = nnx.split(model, nnx.Param)

    @functools.partial(jit, static_argnames="num_words")
    def forward(params, bytes_BxT, word_ids_BxT, num_words):
        return nnx.merge(graphdef, params)(bytes_BxT, word_ids_BxT, num_words=num_words)

    return model, functools.partial(forward, params)


OVERFIT_TEXTS = ("The quick brown fox jumps over the lazy dog.", "Pack my box with five dozen liquor jugs!")


def word_path_config(**changes) -> ModelConfig:
    """Byte windows of 1: a byte sees only itself at byte level, so everything it knows about earlier bytes must
    come through pooling, backbone and decoder connector. A byte-level model alone cannot memorise the batch."""
    cfg = tiny_config(**changes)
    return dataclasses.replace(
        cfg,
        encoder=dataclasses.replace(cfg.encoder, sliding_window=1),
        decoder=dataclasses.replace(cfg.decoder, sliding_window=1),
    )


@functools.cache
def overfit_loss_and_grad(cfg: ModelConfig):
    """Initial params and a jitted (loss, logits), grads of next-byte cross-entropy on a fixed two-sentence batch."""
    bytes_BxT, ids_BxT = batch(*OVERFIT_TEXTS, seq_len=48)
    targets_BxT = np.pad(bytes_BxT[:, 1:], ((0, 0), (0, 1)))
    lengths = np.array([len(t.encode()) for t in OVERFIT_TEXTS])
    mask_BxT = (np.arange(48)[None, :] < lengths[:, None]).astype(np.float32)
    graphdef, params = nnx.split(build_model(cfg, rngs=rngs()), nnx.Param)

    def loss_fn(params):
        logits = nnx.merge(graphdef, params)(bytes_BxT, ids_BxT, num_words=NUM_WORDS)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets_BxT)
        return jnp.sum(nll * mask_BxT) / jnp.sum(mask_BxT), logits

    return params, jit(jax.value_and_grad(loss_fn, has_aux=True))


@pytest.mark.parametrize("kind", ["hat", "byte_lm"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_shapes_dtypes_finite(kind, dtype):
    cfg = tiny_config(kind=kind, compute_dtype=dtype)
    model, forward = model_and_forward(cfg)
    assert isinstance(model, HAT if kind == "hat" else FlatLM)
    logits = forward(*batch("Hello, world! howAreYou 日本語", "x"), num_words=NUM_WORDS)
    assert logits.shape == (2, SEQ, cfg.vocab_size) and logits.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(logits)))


ALPHABET = "abcdefgh  ABCD,.!_\né日"


@pytest.mark.parametrize("kind,ngrams", [("hat", ()), ("byte_lm", ()), ("hat", (2, 3, 8)), ("byte_lm", (2, 5))])
def test_changing_byte_k_leaves_earlier_logits(kind, ngrams):
    """Hashed n-gram embeddings included: a position's n-grams must end at it, never read bytes ahead."""
    _, forward = model_and_forward(tiny_config(kind=kind, ngrams=NgramConfig(sizes=ngrams, buckets=64)))
    rng = random.Random(0)
    checked = set()
    for _ in range(4):
        chars = []
        while len("".join(chars).encode()) < SEQ - 4:
            chars.append(rng.choice(ALPHABET))
        words = split_words("".join(chars))
        # Sequence offsets (after the EOT) of each single-byte character, and of the words' first/middle/last bytes.
        char_at = {int(offset): i for i, offset in enumerate(np.cumsum([1] + [len(c.encode()) for c in chars])[:-1])}
        bounds = np.cumsum([1] + [len(w) for w in words])
        spots = {
            "first": [int(s) for s, e in zip(bounds[:-1], bounds[1:]) if e - s >= 3],
            "middle": [int(s) + 1 for s, e in zip(bounds[:-1], bounds[1:]) if e - s >= 3],
            "last": [int(e) - 1 for s, e in zip(bounds[:-1], bounds[1:]) if e - s >= 3],
        }
        for where, offsets in spots.items():
            offsets = [k for k in offsets if k in char_at and len(chars[char_at[k]].encode()) == 1]
            for k in rng.sample(offsets, min(2, len(offsets))):
                changed = list(chars)
                ascii_others = [c for c in ALPHABET if len(c.encode()) == 1 and c != chars[char_at[k]]]
                changed[char_at[k]] = rng.choice(ascii_others)
                a_T, a_ids = layout(words)
                b_T, b_ids = layout(split_words("".join(changed)))
                assert b_T[k] != a_T[k] and (b_T[:k] == a_T[:k]).all()
                logits = forward(np.stack([a_T, b_T]), np.stack([a_ids, b_ids]), num_words=NUM_WORDS)
                np.testing.assert_allclose(logits[0, :k], logits[1, :k], atol=1e-6, rtol=0)
                assert float(jnp.abs(logits[0, k] - logits[1, k]).max()) > 1e-4, "byte k must reach its own logit"
                checked.add(where)
    assert checked == {"first", "middle", "last"}


def test_word_vector_j_does_not_reach_bytes_of_words_up_to_j():
    model, _ = model_and_forward(tiny_config())
    bytes_BxT, ids_BxT = batch("The cat sat on the mat, quietly.")
    j = 3

    @jit
    def logits_with_word_j_moved(delta_D):
        enc = model.encode(bytes_BxT)
        words = model.pool(enc, ids_BxT, NUM_WORDS).at[:, j].add(delta_D)
        return model.decode(enc, model.predict_words(words), ids_BxT)[0]

    base = logits_with_word_j_moved(np.zeros(48, np.float32))
    moved = logits_with_word_j_moved(np.random.default_rng(0).normal(size=48).astype(np.float32))
    up_to_j = ids_BxT[0] <= j
    np.testing.assert_allclose(base[up_to_j], moved[up_to_j], atol=1e-6, rtol=0)
    assert float(jnp.abs(base[ids_BxT[0] == j + 1] - moved[ids_BxT[0] == j + 1]).max()) > 1e-4


def test_padding_and_empty_word_slots_do_not_change_real_logits():
    _, forward = model_and_forward(tiny_config())
    text = "Padding must not leak, ever."
    real = len(text) + 1
    reference = forward(*batch(text, text), num_words=NUM_WORDS)[0, :real]
    # 16 more padding bytes (zeros in row 0, random bytes in row 1) and 9 more empty word slots.
    long_BxT, long_ids = batch(text, text, seq_len=SEQ + 16, num_words=NUM_WORDS + 9)
    long_BxT[1, real:] = np.random.default_rng(0).integers(0, 256, SEQ + 16 - real)
    padded = forward(long_BxT, long_ids, num_words=NUM_WORDS + 9)
    np.testing.assert_allclose(padded[0, :real], reference, atol=1e-6, rtol=0)
    np.testing.assert_allclose(padded[1, :real], reference, atol=1e-6, rtol=0)


def dense_pooling_reference(model: HAT, enc_BxTxE, word_ids_BxT, num_words: int):
    """Per-word softmax attention written with an explicit W x T mask."""
    attn = model.encoder_connector.cross_attention_encoder_connector
    q_NxH = jnp.einsum("d,dnh->nh", model.encoder_connector.latent_query[...], attn.q_proj[...])
    k_BxTxKxH = jnp.einsum("btd,dkh->btkh", enc_BxTxE, attn.k_proj[...])
    v_BxTxKxH = jnp.einsum("btd,dkh->btkh", enc_BxTxE, attn.v_proj[...])
    q_NxH, k_BxTxKxH = attn.norm_query(q_NxH), attn.norm_key(k_BxTxKxH)
    heads, head_dim = q_NxH.shape
    group = heads // k_BxTxKxH.shape[2]
    q_WxNxH = apply_rope(jnp.broadcast_to(q_NxH, (1, num_words, heads, head_dim)), jnp.arange(num_words)[None], 1e4)[0]
    k_BxTxNxH = jnp.repeat(apply_rope(k_BxTxKxH, jnp.arange(enc_BxTxE.shape[1])[None], 1e4), group, axis=2)
    v_BxTxNxH = jnp.repeat(v_BxTxKxH, group, axis=2)
    scores_BxNxWxT = jnp.einsum("wnh,btnh->bnwt", q_WxNxH, k_BxTxNxH) / np.sqrt(head_dim)
    mask_Bx1xWxT = (word_ids_BxT[:, None, :] == jnp.arange(num_words)[None, :, None])[:, None]
    probs = jax.nn.softmax(jnp.where(mask_Bx1xWxT, scores_BxNxWxT, -jnp.inf), axis=-1)
    probs = jnp.where(mask_Bx1xWxT.any(-1, keepdims=True), probs, 0.0)
    return jnp.einsum("bnwt,btnh,nhd->bwd", probs, v_BxTxNxH, attn.o_proj[...])


def test_segment_pooling_equals_dense_reference():
    model = build_model(tiny_config(), rngs=rngs())
    # A sharper query (through the QK-norm scale) makes the softmax far from uniform, so a wrong mask would show.
    norm_query = model.encoder_connector.cross_attention_encoder_connector.norm_query
    norm_query.scale[...] = np.full(norm_query.scale.shape, 6.0, np.float32)
    bytes_BxT, ids_BxT = batch("Pool each word alone.", "howAreYou, 日本語 ok")

    @jit
    def pooled_and_reference():
        enc = model.encode(bytes_BxT)
        return model.pool(enc, ids_BxT, NUM_WORDS), dense_pooling_reference(model, enc, ids_BxT, NUM_WORDS)

    pooled, expected = pooled_and_reference()
    np.testing.assert_allclose(pooled, expected, atol=1e-5, rtol=1e-5)
    scale = float(jnp.abs(pooled).max())
    assert float(jnp.abs(pooled[0, 1] - pooled[0, 2]).max()) > 0.1 * scale > 0
    np.testing.assert_array_equal(pooled[:, -1], 0.0)  # an empty word slot


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["full", "dots", "dots_no_batch"])
def test_remat_gives_identical_logits_and_gradients(policy):
    params, loss_and_grad = overfit_loss_and_grad(word_path_config())
    (_, logits), grads = loss_and_grad(params)
    remat_params, remat_loss_and_grad = overfit_loss_and_grad(word_path_config(remat=policy))
    (_, remat_logits), remat_grads = remat_loss_and_grad(remat_params)
    np.testing.assert_allclose(remat_logits, logits, atol=1e-6, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-7, rtol=1e-5), remat_grads, grads)


def test_encoder_sliding_window_and_gqa():
    window, t0 = 4, 5
    cfg = TransformerConfig(
        num_layers=1, hidden_size=32, num_heads=4, num_kv_heads=2, mlp_hidden_size=64, sliding_window=window
    )
    gqa = Attention(cfg, dtype=jnp.float32, rngs=rngs(1))
    # The same attention with each kv head copied to its query group (full multi-head attention).
    mha = Attention(dataclasses.replace(cfg, num_kv_heads=4), dtype=jnp.float32, rngs=rngs(2))
    mha.q_proj[...], mha.o_proj[...] = gqa.q_proj[...], gqa.o_proj[...]
    mha.k_proj[...], mha.v_proj[...] = (jnp.repeat(p[...], 2, axis=1) for p in (gqa.k_proj, gqa.v_proj))
    model = build_model(tiny_config(encoder=cfg), rngs=rngs())
    bytes_BxT, _ = batch("abcdefghijklmnop qrstuvwxyz")
    x_BxTxD = np.random.default_rng(0).normal(size=(1, 16, 32)).astype(np.float32)

    @jit
    def run(x_BxTxD, bytes_BxT):
        positions = jnp.arange(16)[None]
        enc_diff = model.encode(bytes_BxT) - model.encode(bytes_BxT.at[0, t0].set(ord("Z")))
        return enc_diff, gqa(x_BxTxD, positions), mha(x_BxTxD, positions)

    enc_diff, gqa_out, mha_out = run(x_BxTxD, bytes_BxT)
    diff_T = np.abs(np.asarray(enc_diff)).max(-1)[0]
    assert (diff_T[:t0] == 0).all() and (diff_T[t0 + window :] == 0).all()
    assert (diff_T[t0 : t0 + window] > 0).all(), "a byte sees itself and the window - 1 bytes before it"
    np.testing.assert_allclose(gqa_out, mha_out, atol=1e-6)


def test_hat_overfits_a_tiny_batch_through_the_word_path():
    params, loss_and_grad = overfit_loss_and_grad(word_path_config())
    tx = optax.adamw(3e-3, weight_decay=0.0)
    opt_state = tx.init(params)

    @jit
    def update(params, opt_state, grads):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    losses = []
    for _ in range(150):
        (loss, _), grads = loss_and_grad(params)
        params, opt_state = update(params, opt_state, grads)
        losses.append(float(loss))
    assert losses[0] > 5.0, losses[0]  # about ln(256) = 5.5 at init
    # Golden numbers: the initial loss and the loss after one AdamW step, as this test computed them (CPU, float32,
    # at 21c1350 of branch tests). A change to initialisation or to the model's numerics moves them; update them only
    # for an intended change (the message prints the new values). test_golden.py pins whole training runs.
    assert losses[:2] == [golden(5.5346293449401855), golden(5.3164825439453125)], losses[:2]
    # Correct: about 0.04. With the decoder cross-attention or the pooling output zeroed: about 0.97.
    assert losses[-1] < 0.15, losses[-20:]


def test_param_counts_and_flops():
    cfg = tiny_config()
    counts = count_params(build_model(cfg, rngs=rngs()))
    assert list(counts) == ["embedding", "encoder", "pooling", "backbone", "decoder", "head", "total"]
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")
    assert counts["embedding"] == 256 * 32 and counts["head"] == 32 * 256 + 32
    every = count_params(build_model(dataclasses.replace(cfg, cross_attn_every_layer=True), rngs=rngs()))
    cross_attention = 48 + 48 * 2 * 8 + 4 * 8 * 32  # kv_norm, v_proj, o_proj of the second decoder layer
    assert every["decoder"] == counts["decoder"] + cross_attention
    lm_cfg = dataclasses.replace(cfg, kind="byte_lm")
    assert list(count_params(build_model(lm_cfg, rngs=rngs()))) == ["embedding", "backbone", "head", "total"]
    # The backbone runs once per word in HAT and once per byte in the flat LM.
    assert flops_per_byte(cfg, 1024, 5.0) < flops_per_byte(lm_cfg, 1024, 5.0)
    assert flops_per_byte(cfg, 1024, 10.0) < flops_per_byte(cfg, 1024, 5.0)


@pytest.mark.parametrize("kind", ["hat", "byte_lm"])
def test_scanned_backbone_equals_layer_list(kind):
    """The scanned layout (stacked parameters, lax.scan) computes exactly what the per-layer list computes."""
    cfg = tiny_config(kind=kind, backbone=dataclasses.replace(tiny_config().backbone, num_layers=3), remat="full")
    listed, listed_forward = model_and_forward(cfg)
    scanned_cfg = dataclasses.replace(cfg, scan_layers=True)
    scanned = build_model(scanned_cfg, rngs=rngs())
    graphdef, scanned_params = nnx.split(scanned, nnx.Param)
    assert nnx.to_pure_dict(scanned_params)["backbone"]["layers"]["mlp"]["up_proj"].shape[0] == 3
    # Load the list model's parameters into the scanned layout.
    stacked = convert_layer_layout(nnx.to_pure_dict(nnx.state(listed, nnx.Param)), scan_layers=True)
    nnx.replace_by_pure_dict(scanned_params, stacked)
    inputs = batch("Hello, world! howAreYou 日本語", "def f(x):\n    return x")
    scanned_logits = jit(lambda p: nnx.merge(graphdef, p)(*inputs, num_words=NUM_WORDS))(scanned_params)
    np.testing.assert_allclose(scanned_logits, listed_forward(*inputs, num_words=NUM_WORDS), atol=2e-5, rtol=1e-5)
    back = convert_layer_layout(nnx.to_pure_dict(scanned_params), scan_layers=False)
    jax.tree.map(np.testing.assert_array_equal, back, nnx.to_pure_dict(nnx.state(listed, nnx.Param)))
