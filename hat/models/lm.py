"""FlatLM: a Llama stack run directly over units (bytes, BPE tokens or compressed-text tokens); same call as HAT."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from hat.config import ModelConfig
from hat.models.layers import INIT_STD, ACT_BxTxD, LlamaStack, RMSNorm, normal_init
from hat.models.ngrams import NgramEmbedding
from hat.models.sharding import constrain, gathered_table, make_param


class FlatLM(nnx.Module):
    """Unit embedding -> `cfg.backbone` Llama layers (causal, RoPE at unit positions) -> RMSNorm -> head.

    With `vocab_size` 256 (+ specials) it is the flat byte baseline; with a token vocabulary, a token LM.
    With `tie_embeddings` the head is the embedding's transpose and there is no `lm_head` parameter. `cfg.ngrams`
    adds hashed n-gram embeddings of the units (byte LMs).
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.dtype = jnp.dtype(cfg.compute_dtype)
        dim = cfg.backbone.hidden_size
        self.embedding_layer = make_param(rngs, normal_init(INIT_STD), (cfg.vocab_size, dim), ("vocab", "embed"))
        self.ngram_embedding = NgramEmbedding(cfg.ngrams, dim, rngs=rngs) if cfg.ngrams.sizes else None
        self.backbone = LlamaStack(cfg.backbone, dtype=self.dtype, remat=cfg.remat, scan=cfg.scan_layers, rngs=rngs)
        self.layer_norm = RMSNorm(dim, eps=cfg.backbone.norm_eps, rngs=rngs)
        self.tie_embeddings = cfg.tie_embeddings
        if not cfg.tie_embeddings:
            self.lm_head = make_param(rngs, normal_init(INIT_STD), (dim, cfg.vocab_size), ("embed", "vocab"))

    def __call__(
        self, bytes_BxT: jax.Array, word_ids_BxT: jax.Array | None = None, num_words: int | None = None
    ) -> jax.Array:
        """Logits B x T x V (float32); the logit at position t predicts unit t + 1. Word ids are ignored."""
        del word_ids_BxT, num_words
        positions_1xT = jnp.arange(bytes_BxT.shape[1], dtype=jnp.int32)[None, :]
        return self.output_logits(self.backbone(self.embed(bytes_BxT), positions_1xT))

    def embed(self, units_BxT: jax.Array, history_BxH: jax.Array | None = None) -> jax.Array:
        """Input vectors B x T x D (compute dtype); `history_BxH`: the units before the chunk (`hat.models.ngrams`)."""
        x_BxTxD = jnp.take(gathered_table(self.embedding_layer), units_BxT, axis=0)
        if self.ngram_embedding is not None:
            x_BxTxD = x_BxTxD + self.ngram_embedding(units_BxT, history_BxH)
        return constrain(x_BxTxD, ACT_BxTxD).astype(self.dtype)

    def output_logits(self, x_BxTxD: jax.Array) -> jax.Array:
        """Final RMSNorm and head: backbone states -> logits (float32)."""
        head_DxV = self.embedding_layer[...].T if self.tie_embeddings else self.lm_head[...]
        logits_BxTxV = self.layer_norm(x_BxTxD.astype(jnp.float32)) @ head_DxV
        return constrain(logits_BxTxV, ("act_batch", "act_length", "act_vocab"))
