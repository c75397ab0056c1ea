"""HAT: byte encoder -> word pooling -> word-level backbone -> byte decoder (arXiv 2501.10322).

Parameter groups and names follow Aleph Alpha's released model (`encoder.embedding_layer`, `encoder.layers.N`,
`encoder_connector.latent_query`, `encoder_connector.cross_attention_encoder_connector.{q,k,v,o}_proj`,
`backbone.layers.N`, `decoder_connector.first_word_embedding`,
`decoder.decoder_layers.N.{llama_layer,cross_attention,kv_norm}`, `layer_norm`, `lm_head`), so that a converter
maps names one to one; kernels are stored `in x out` (heads as their own axis), not PyTorch's `out x in`.

Shapes: B batch, T bytes, W word slots, E encoder/decoder width, D backbone width, V byte vocabulary,
N/K query/key-value heads, G = N / K, H head dim, S = W + 1 word slots plus one for padding bytes.
Inputs: `word_ids_BxT` gives each byte's word index in [0, W); padding bytes carry W and are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from hat.config import ModelConfig, PoolingConfig
from hat.models.attention import SegmentMask, attend
from hat.models.kv_cache import KVCache
from hat.models.layers import (
    INIT_STD,
    ACT_BxTxD,
    DecoderLayer,
    LlamaStack,
    RMSNorm,
    apply_rope,
    call_layer,
    cast,
    fan_in_init,
    make_layers,
    normal_init,
    output_init,
    run_layers,
    upcast_norms,
)
from hat.models.ngrams import NgramEmbedding
from hat.models.sharding import constrain, gathered_table, make_param


def pooling_head_dim(cfg: ModelConfig) -> int:
    """Head dim of the pooling and decoder cross-attention (default: encoder width / pooling heads)."""
    return cfg.pooling.head_dim or cfg.encoder.hidden_size // cfg.pooling.num_heads


def decoder_cross_heads(cfg: ModelConfig) -> tuple[int, int, int]:
    """`(heads, kv heads, head dim)` of the decoder cross-attention: `model.decoder_cross_attention`, else the
    pooling's."""
    if cfg.decoder_cross_attention is not None:
        cross = cfg.decoder_cross_attention
        return cross.num_heads, cross.num_kv_heads, cross.head_dim
    return cfg.pooling.num_heads, cfg.pooling.num_kv_heads, pooling_head_dim(cfg)


def _positions(length: int) -> jax.Array:
    return jnp.arange(length, dtype=jnp.int32)[None, :]


class Encoder(nnx.Module):
    """Byte embedding (plus hashed n-gram embeddings, `cfg.ngrams`), then causal sliding-window Llama layers over
    the flat byte stream; no final norm."""

    def __init__(self, cfg: ModelConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.dtype = dtype
        self.remat = cfg.remat
        self.embedding_layer = make_param(
            rngs, normal_init(INIT_STD), (cfg.vocab_size, cfg.encoder.hidden_size), ("vocab", "embed")
        )
        self.ngram_embedding = (
            NgramEmbedding(cfg.ngrams, cfg.encoder.hidden_size, rngs=rngs) if cfg.ngrams.sizes else None
        )
        self.layers = make_layers(cfg.encoder, dtype=dtype, rngs=rngs)

    def embed(self, bytes_BxT: jax.Array, history_BxH: jax.Array | None = None) -> jax.Array:
        """Input vectors B x T x E (compute dtype); `history_BxH`: the bytes before the chunk (`hat.models.ngrams`)."""
        x_BxTxE = jnp.take(gathered_table(self.embedding_layer), bytes_BxT, axis=0)
        if self.ngram_embedding is not None:
            x_BxTxE = x_BxTxE + self.ngram_embedding(bytes_BxT, history_BxH)
        return constrain(x_BxTxE, ACT_BxTxD).astype(self.dtype)

    def __call__(self, bytes_BxT: jax.Array) -> jax.Array:
        return run_layers(self.layers, self.embed(bytes_BxT), _positions(bytes_BxT.shape[1]), remat=self.remat)


class PoolingAttention(nnx.Module):
    """Per-word cross-attention: a word's query attends, non-causally, to that word's bytes only.

    The softmax over each word's bytes is a segment softmax over word ids (`SegmentMask`: O(T) memory, no T x W
    matrix). Each byte carries its own word's query, rotated to the word's position; keys are rotated to byte
    positions.
    """

    def __init__(
        self,
        pool: PoolingConfig,
        q_dim: int,
        kv_dim: int,
        head_dim: int,
        *,
        dtype: jnp.dtype,
        norm_eps: float,
        rngs: nnx.Rngs,
        upcast_norms: bool = True,
    ):
        self.dtype = dtype
        self.rope_theta = pool.rope_theta
        self.rope_scaling = pool.rope_scaling
        heads, kv_heads = pool.num_heads, pool.num_kv_heads
        # Variance-preserving, so that word vectors start at the scale of the encoder states: with two 0.02-std
        # projections in a row they would start far below the backbone's RMSNorm epsilon and be nearly invisible.
        kv_init = fan_in_init(kv_dim)
        self.q_proj = make_param(rngs, fan_in_init(q_dim), (q_dim, heads, head_dim), ("embed", "heads", "head_dim"))
        self.k_proj = make_param(rngs, kv_init, (kv_dim, kv_heads, head_dim), ("embed", "kv_heads", "head_dim"))
        self.v_proj = make_param(rngs, kv_init, (kv_dim, kv_heads, head_dim), ("embed", "kv_heads", "head_dim"))
        self.o_proj = make_param(
            rngs, fan_in_init(heads * head_dim), (heads, head_dim, q_dim), ("heads", "head_dim", "embed")
        )
        if pool.qk_norm:
            self.norm_query = RMSNorm(head_dim, eps=norm_eps, rngs=rngs, axis_name="head_dim", upcast=upcast_norms)
            self.norm_key = RMSNorm(head_dim, eps=norm_eps, rngs=rngs, axis_name="head_dim", upcast=upcast_norms)
        else:
            self.norm_query = self.norm_key = None

    def __call__(
        self,
        query_D: jax.Array,
        enc_BxTxE: jax.Array,
        word_ids_BxT: jax.Array,
        num_words: int,
        word_positions_BxT: jax.Array,
        byte_positions_BxT: jax.Array,
    ) -> jax.Array:
        """Word vectors B x W x D: word w's query over the bytes whose word id is w (sorted ids; W or more: padding).
        Byte t's key is rotated to `byte_positions_BxT`, the query it meets to its word's position
        `word_positions_BxT`."""
        q_NxH = jnp.einsum("d,dnh->nh", query_D.astype(self.dtype), cast(self.q_proj, self.dtype))
        k_BxTxKxH = jnp.einsum("btd,dkh->btkh", enc_BxTxE, cast(self.k_proj, self.dtype))
        v_BxTxKxH = jnp.einsum("btd,dkh->btkh", enc_BxTxE, cast(self.v_proj, self.dtype))
        if self.norm_query is not None:
            q_NxH, k_BxTxKxH = self.norm_query(q_NxH), self.norm_key(k_BxTxKxH)
        q_BxTxNxH = jnp.broadcast_to(q_NxH, (*word_positions_BxT.shape, *q_NxH.shape))
        q_BxTxNxH = apply_rope(q_BxTxNxH, word_positions_BxT, self.rope_theta, self.rope_scaling)
        k_BxTxKxH = apply_rope(k_BxTxKxH, byte_positions_BxT, self.rope_theta, self.rope_scaling)
        pooled_BxWxNxH = attend(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, SegmentMask(word_ids_BxT, num_words))
        return jnp.einsum("bwnh,nhd->bwd", pooled_BxWxNxH, cast(self.o_proj, self.dtype))


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class ByteRing:
    """The pooling's cache in incremental decoding: encoder states of each row's latest M bytes (M = the longest
    word), position p in slot p % M. Byte steps write it; closing a word pools that word's bytes from it."""

    enc_BxMxE: jax.Array

    @property
    def slots(self) -> int:
        """Number of slots M."""
        return self.enc_BxMxE.shape[1]

    def read(self, positions_BxL: jax.Array) -> jax.Array:
        """The states at the given positions (each among the latest M written): B x L x E."""
        return jnp.take_along_axis(self.enc_BxMxE, (positions_BxL % self.slots)[..., None], axis=1)

    def write(self, enc_BxE: jax.Array, position_B: jax.Array) -> ByteRing:
        """The ring with one new byte per row."""
        write_row = lambda ring_MxE, slot, enc_E: ring_MxE.at[slot].set(enc_E)  # noqa: E731
        enc_BxE = enc_BxE.astype(self.enc_BxMxE.dtype)
        return ByteRing(jax.vmap(write_row)(self.enc_BxMxE, position_B % self.slots, enc_BxE))


class EncoderConnector(nnx.Module):
    """Word pooling: one learned latent query (backbone width), shared by all words; output = word vector."""

    def __init__(self, cfg: ModelConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.latent_query = make_param(rngs, normal_init(INIT_STD), (cfg.backbone.hidden_size,), ("embed",))
        self.cross_attention_encoder_connector = PoolingAttention(
            cfg.pooling,
            q_dim=cfg.backbone.hidden_size,
            kv_dim=cfg.encoder.hidden_size,
            head_dim=pooling_head_dim(cfg),
            dtype=dtype,
            norm_eps=cfg.encoder.norm_eps,
            rngs=rngs,
            upcast_norms=upcast_norms(cfg.encoder),
        )

    def __call__(self, enc_BxTxE: jax.Array, word_ids_BxT: jax.Array, num_words: int) -> jax.Array:
        """One vector per word slot (B x W x D) from the byte states of a sequence; empty slots are zero."""
        # A word's position is its index.
        pool = self.cross_attention_encoder_connector
        positions_1xT = _positions(enc_BxTxE.shape[1])
        return pool(self.latent_query[...], enc_BxTxE, word_ids_BxT, num_words, word_ids_BxT, positions_1xT)

    def pool_word(self, cache: ByteRing, word_B: jax.Array, start_B: jax.Array, end_B: jax.Array) -> jax.Array:
        """The cached form of `__call__`: the vector (B x D) of word `word_B` made of the bytes `start_B ..
        end_B - 1` (at most M of them, all among the latest M bytes), whose states are in `cache`."""
        positions_BxM = start_B[:, None] + jnp.arange(cache.slots)[None]
        # The word's bytes are segment 0 (word 0 of one); the rest of the ring is padding (segment 1).
        segments_BxM = (positions_BxM >= end_B[:, None]).astype(jnp.int32)
        word_BxM = jnp.broadcast_to(word_B[:, None], positions_BxM.shape)
        pool = self.cross_attention_encoder_connector
        query_D, enc_BxMxE = self.latent_query[...], cache.read(positions_BxM)
        return pool(query_D, enc_BxMxE, segments_BxM, 1, word_BxM, positions_BxM)[:, 0]


class DecoderConnector(nnx.Module):
    """The predictive vector of word j is the backbone output at word j - 1; word 0 gets a learned vector."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.first_word_embedding = make_param(rngs, normal_init(INIT_STD), (cfg.backbone.hidden_size,), ("embed",))

    def __call__(self, backbone_BxWxD: jax.Array) -> jax.Array:
        batch, _, dim = backbone_BxWxD.shape
        first_Bx1xD = jnp.broadcast_to(self.first_word_embedding[...].astype(backbone_BxWxD.dtype), (batch, 1, dim))
        return jnp.concatenate([first_Bx1xD, backbone_BxWxD[:, :-1]], axis=1)


class DecoderCrossAttention(nnx.Module):
    """Cross-attention from every byte of word j to the single key pred_j.

    With one key the softmax weight is exactly 1, so the output is o_proj(v_proj(pred_j)) for every byte of the
    word: query-side and key-side projections cannot change the result and are not created (an exporter to the
    released format may write any values for them).
    """

    def __init__(
        self,
        heads: tuple[int, int, int],
        q_dim: int,
        kv_dim: int,
        num_layers: int,
        *,
        dtype: jnp.dtype,
        rngs: nnx.Rngs,
    ):
        num_heads, num_kv_heads, head_dim = heads
        self.dtype = dtype
        self.group_size = num_heads // num_kv_heads
        self.v_proj = make_param(
            rngs, normal_init(INIT_STD), (kv_dim, num_kv_heads, head_dim), ("embed", "kv_heads", "head_dim")
        )
        # Writes into the decoder's residual stream like an attention output, so it gets the same depth scaling.
        self.o_proj = make_param(
            rngs, output_init(num_layers), (num_heads, head_dim, q_dim), ("heads", "head_dim", "embed")
        )

    def __call__(self, pred_BxWxD: jax.Array) -> jax.Array:
        v_BxWxKxH = jnp.einsum("bwd,dkh->bwkh", pred_BxWxD, cast(self.v_proj, self.dtype))
        v_BxWxNxH = jnp.repeat(v_BxWxKxH, self.group_size, axis=2)
        return jnp.einsum("bwnh,nhe->bwe", v_BxWxNxH, cast(self.o_proj, self.dtype))


class DecoderBlock(nnx.Module):
    """Optional cross-attention to the byte's predictive word vector, then a sliding-window Llama layer."""

    def __init__(self, cfg: ModelConfig, cross_attention: bool, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        if cross_attention:
            self.kv_norm = RMSNorm(
                cfg.backbone.hidden_size, eps=cfg.decoder.norm_eps, rngs=rngs, upcast=upcast_norms(cfg.decoder)
            )
            self.cross_attention = DecoderCrossAttention(
                decoder_cross_heads(cfg),
                q_dim=cfg.decoder.hidden_size,
                kv_dim=cfg.backbone.hidden_size,
                num_layers=cfg.decoder.num_layers,
                dtype=dtype,
                rngs=rngs,
            )
        else:
            self.kv_norm = self.cross_attention = None
        self.llama_layer = DecoderLayer(cfg.decoder, dtype=dtype, rngs=rngs)

    def init_cache(self, batch: int, capacity: int, recompute: int = 0) -> KVCache:
        """An empty cache for the block's Llama layer (see `Attention.init_cache`)."""
        return self.llama_layer.init_cache(batch, capacity, recompute)

    def __call__(
        self,
        x_BxTxE: jax.Array,
        pred_BxWxD: jax.Array,
        word_ids_BxT: jax.Array,
        positions_BxT: jax.Array,
        cache: KVCache | None = None,
    ) -> jax.Array | tuple[jax.Array, KVCache]:
        """The block's output; with a cache, `(output, updated cache)` (see `Attention.__call__`)."""
        if self.cross_attention is not None:
            update_BxWxE = self.cross_attention(self.kv_norm(pred_BxWxD))
            # Padding bytes (word id W) read an all-zero row, so their states stay finite and nothing real moves.
            update_BxSxE = jnp.pad(update_BxWxE, ((0, 0), (0, 1), (0, 0)))
            x_BxTxE = x_BxTxE + jnp.take_along_axis(update_BxSxE, word_ids_BxT[..., None], axis=1)
        return self.llama_layer(x_BxTxE, positions_BxT, cache)


class Decoder(nnx.Module):
    """Byte decoder over the encoder's byte states; cross-attention in layer 0 (or every layer)."""

    def __init__(self, cfg: ModelConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.remat = cfg.remat
        self.decoder_layers = nnx.List(
            [
                DecoderBlock(cfg, cfg.cross_attn_every_layer or index == 0, dtype=dtype, rngs=rngs)
                for index in range(cfg.decoder.num_layers)
            ]
        )

    def __call__(self, enc_BxTxE: jax.Array, pred_BxWxD: jax.Array, word_ids_BxT: jax.Array) -> jax.Array:
        positions_1xT = _positions(enc_BxTxE.shape[1])
        x_BxTxE = enc_BxTxE
        for block in self.decoder_layers:
            x_BxTxE = call_layer(block, self.remat, x_BxTxE, pred_BxWxD, word_ids_BxT, positions_1xT)
        return x_BxTxE


class HAT(nnx.Module):
    """Hierarchical autoregressive transformer over bytes; `model(bytes, word_ids, num_words=W)` gives logits.

    The stages are public methods so that tests and generation can run them one at a time:
    `encode` -> `pool` -> `predict_words` (backbone + decoder connector) -> `decode`.
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        if cfg.encoder.hidden_size != cfg.decoder.hidden_size:
            raise ValueError("HAT needs decoder.hidden_size == encoder.hidden_size: the decoder reads encoder states")
        dtype = jnp.dtype(cfg.compute_dtype)
        self.encoder = Encoder(cfg, dtype=dtype, rngs=rngs)
        self.encoder_connector = EncoderConnector(cfg, dtype=dtype, rngs=rngs)
        self.backbone = LlamaStack(cfg.backbone, dtype=dtype, remat=cfg.remat, scan=cfg.scan_layers, rngs=rngs)
        self.decoder_connector = DecoderConnector(cfg, rngs=rngs)
        self.decoder = Decoder(cfg, dtype=dtype, rngs=rngs)
        self.layer_norm = RMSNorm(
            cfg.decoder.hidden_size, eps=cfg.decoder.norm_eps, rngs=rngs, upcast=upcast_norms(cfg.decoder)
        )
        self.lm_head = make_param(
            rngs, normal_init(INIT_STD), (cfg.decoder.hidden_size, cfg.vocab_size), ("embed", "vocab")
        )

    def encode(self, bytes_BxT: jax.Array) -> jax.Array:
        """Encoder byte states (B x T x E, compute dtype)."""
        return self.encoder(bytes_BxT)

    def pool(self, enc_BxTxE: jax.Array, word_ids_BxT: jax.Array, num_words: int) -> jax.Array:
        """One vector per word slot (B x W x D); empty slots are zero."""
        return self.encoder_connector(enc_BxTxE, word_ids_BxT, num_words)

    def predict_words(self, words_BxWxD: jax.Array) -> jax.Array:
        """Backbone over word vectors (positions = word index), shifted: row j only sees words < j."""
        backbone_BxWxD = self.backbone(words_BxWxD, _positions(words_BxWxD.shape[1]))
        return self.decoder_connector(backbone_BxWxD)

    def decode(self, enc_BxTxE: jax.Array, pred_BxWxD: jax.Array, word_ids_BxT: jax.Array) -> jax.Array:
        """Next-byte logits (B x T x V, float32) from byte states and each word's predictive vector."""
        return self.output_logits(self.decoder(enc_BxTxE, pred_BxWxD, word_ids_BxT))

    def output_logits(self, x_BxTxE: jax.Array) -> jax.Array:
        """Final RMSNorm and byte head: decoder states -> logits (float32)."""
        if self.layer_norm.upcast:
            logits_BxTxV = self.layer_norm(x_BxTxE.astype(jnp.float32)) @ self.lm_head[...]
        else:
            # Released precision: the final norm and the head run in the compute dtype too.
            logits_BxTxV = (self.layer_norm(x_BxTxE) @ cast(self.lm_head, x_BxTxE.dtype)).astype(jnp.float32)
        return constrain(logits_BxTxV, ("act_batch", "act_length", "act_vocab"))

    def __call__(self, bytes_BxT: jax.Array, word_ids_BxT: jax.Array, num_words: int) -> jax.Array:
        """Logits B x T x V (float32); the logit at position t predicts byte t + 1."""
        enc_BxTxE = self.encode(bytes_BxT)
        words_BxWxD = self.pool(enc_BxTxE, word_ids_BxT, num_words)
        pred_BxWxD = self.predict_words(words_BxWxD)
        return self.decode(enc_BxTxE, pred_BxWxD, word_ids_BxT)
