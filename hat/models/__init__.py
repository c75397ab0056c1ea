"""Models: `HAT` (hierarchical, over bytes) and `FlatLM` (flat, over bytes or tokens), built from a `ModelConfig`.

    model = build_model(cfg, rngs=nnx.Rngs(seed))
    logits_BxTxV = model(bytes_BxT, word_ids_BxT, num_words=W)

Both are pure functions of their `nnx.Param`s (no other state), so `nnx.split(model, nnx.Param)` and
`nnx.merge(graphdef, params)(...)` inside `jax.jit` is all a trainer needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flax import nnx

from hat.config import ModelConfig, TransformerConfig
from hat.models.hat import HAT, pooling_head_dim
from hat.models.layers import stack_layer_states, unstack_layer_state
from hat.models.lm import FlatLM
from hat.models.sharding import logical_axes, make_param

__all__ = [
    "ARCHITECTURES",
    "HAT",
    "FlatLM",
    "build_model",
    "convert_layer_layout",
    "count_params",
    "flops_per_byte",
    "logical_axes",
    "make_param",
]

# Reporting groups: top-level parameter paths (first one or two path keys) that make up each part.
_PARAM_GROUPS = {
    "embedding": (
        ("encoder", "embedding_layer"),
        ("embedding_layer",),
        ("encoder", "ngram_embedding"),
        ("ngram_embedding",),
    ),
    "encoder": (("encoder", "layers"),),
    "pooling": (("encoder_connector",),),
    "backbone": (("backbone",),),
    "decoder": (("decoder_connector",), ("decoder",)),
    "head": (("layer_norm",), ("lm_head",)),
}


def build_model(cfg: ModelConfig, *, rngs: nnx.Rngs) -> HAT | FlatLM:
    """The network of `cfg.kind` (`ARCHITECTURES`): `HAT`, or `FlatLM` over bytes or tokens."""
    return ARCHITECTURES[cfg.kind].network(cfg, rngs=rngs)


def convert_layer_layout(params: dict[str, Any], scan_layers: bool) -> dict[str, Any]:
    """Pure-dict parameters (`nnx.to_pure_dict`) with the backbone in the scanned layout (one stacked layer) or the
    per-layer layout (`backbone.layers.0`, ...); returned unchanged when already in the requested layout."""
    layers = params.get("backbone", {}).get("layers")
    if layers is None:
        return params
    is_stacked = not all(isinstance(key, int) or str(key).isdigit() for key in layers)
    if is_stacked == scan_layers:
        return params
    if scan_layers:
        converted = stack_layer_states([layers[key] for key in sorted(layers, key=int)])
    else:
        converted = unstack_layer_state(layers)
    return params | {"backbone": params["backbone"] | {"layers": converted}}


def count_params(model: nnx.Module) -> dict[str, int]:
    """Parameter counts per part (embedding, encoder, pooling, backbone, decoder, head; parts a model lacks are
    omitted) and `total`."""
    counts = dict.fromkeys(_PARAM_GROUPS, 0)
    total = 0
    for path, param in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        size = math.prod(param.get_value().shape)
        total += size
        keys = tuple(str(key) for key in path)
        group = next(name for name, prefixes in _PARAM_GROUPS.items() if any(keys[: len(p)] == p for p in prefixes))
        counts[group] += size
    return {name: count for name, count in counts.items() if count} | {"total": total}


def _mean_context(length: float, window: int | None) -> float:
    """Average number of keys a causal query sees over `length` positions (a window caps it)."""
    if window is None or window >= length:
        return (length + 1) / 2
    return window - window * (window - 1) / (2 * length)


def _layer_flops(cfg: TransformerConfig, context: float) -> float:
    """Forward matmul FLOPs of one Llama layer at one position that attends to `context` keys."""
    dim, head_dim = cfg.hidden_size, cfg.resolved_head_dim
    projections = 2 * dim * head_dim * (2 * cfg.num_heads + 2 * cfg.num_kv_heads)
    mlp = 2 * 3 * dim * cfg.mlp_hidden_size
    attention = 2 * 2 * cfg.num_heads * head_dim * context
    return projections + mlp + attention


def _stack_flops(tcfg: TransformerConfig, length: float) -> float:
    return tcfg.num_layers * _layer_flops(tcfg, _mean_context(length, tcfg.sliding_window))


def _flat_flops(cfg: ModelConfig, seq_len: int, units_per_word: float) -> float:
    """Per unit (byte or token) of a flat LM: its stack over `seq_len` positions and the head."""
    return _stack_flops(cfg.backbone, seq_len) + 2 * cfg.backbone.hidden_size * cfg.vocab_size


def _hat_flops(cfg: ModelConfig, seq_bytes: int, bytes_per_word: float) -> float:
    """Per byte of a HAT: byte-level stacks, pooling and head per byte; backbone and cross-attention per word."""
    enc, pool, dec = cfg.encoder.hidden_size, cfg.pooling, cfg.decoder.hidden_size
    head_dim, width = pooling_head_dim(cfg), cfg.backbone.hidden_size
    per_byte = _stack_flops(cfg.encoder, seq_bytes) + _stack_flops(cfg.decoder, seq_bytes) + 2 * dec * cfg.vocab_size
    # Pooling: k and v of every byte, plus one score and one weighted value per byte and head.
    per_byte += 2 * 2 * enc * pool.num_kv_heads * head_dim + 2 * 2 * pool.num_heads * head_dim
    cross_layers = cfg.decoder.num_layers if cfg.cross_attn_every_layer else min(cfg.decoder.num_layers, 1)
    per_word = (
        _stack_flops(cfg.backbone, seq_bytes / bytes_per_word)
        + 2 * pool.num_heads * head_dim * width
        + cross_layers * (2 * width * pool.num_kv_heads * head_dim + 2 * pool.num_heads * head_dim * dec)
    )
    return per_byte + per_word / bytes_per_word


@dataclass(frozen=True)
class Architecture:
    """A network family: its module and its forward FLOPs per input unit."""

    network: Callable[..., HAT | FlatLM]
    flops: Callable[[ModelConfig, int, float], float]


# `model.kind` -> network. What a run does with it (data, scoring, sampling, export) is `hat.kinds`' business.
ARCHITECTURES = {
    "hat": Architecture(HAT, _hat_flops),
    "byte_lm": Architecture(FlatLM, _flat_flops),
    "token_lm": Architecture(FlatLM, _flat_flops),
}


def flops_per_byte(cfg: ModelConfig, seq_bytes: int, bytes_per_word: float) -> float:
    """Forward matmul FLOPs per input unit (a byte; a token for token LMs) for sequences of `seq_bytes` units
    (`seq_bytes / bytes_per_word` words for a HAT; flat LMs ignore `bytes_per_word`).

    Counts every projection, the attention score and value products (causal: each query sees its mean number of
    keys, capped by a sliding window) and the head; not the embedding lookups, norms or softmaxes.
    Backward is about twice this.
    """
    return ARCHITECTURES[cfg.kind].flops(cfg, seq_bytes, bytes_per_word)
