"""Aleph Alpha's released HAT format (TFree-HAT on Hugging Face): its config.json and tensor names <-> hat.

hat's parameter names follow the released model, so the mapping is mostly layout: `nn.Linear` weights are
`out x in` with heads flattened, norms are `.weight` (hat: `.scale`), the two learned vectors are `(1, 1, D)`.
Differences handled here:

- The released decoder cross-attention has q/k projections; with one key per word (`word_window_size: 1`) the
  softmax weight is 1 and they cannot change the output, so hat has none. Export writes zeros, import skips them.
- Every released decoder block has `query_norm` (feeds only q) and `kv_norm`; hat has `kv_norm` only where the
  block cross-attends. Export writes ones for the missing ones, import skips them.
- The released encoder connector rotates with the encoder config's RoPE, so hat's pooling RoPE settings (and its
  head dim) must be the encoder's to be exportable.

What the released runtime does around the network travels in the config too (`config_from_released`): the
context (top-level `max_position_embeddings` bytes, backbone `max_position_embeddings` words, the prompt fed as it
is, without hat's leading end-of-text), the special tokens (`special_token_dict`) and each part's sliding window.
An export records hat's own context rules in an extra `hat_context` entry the released runtimes ignore, so that a
hat model imported back keeps its trained layout.

Anything the format has that hat cannot represent is refused with a `ConversionError` naming the config field;
`word_window_size` is read by no released computation and is accepted whatever its value. An export is checked
against what the released runtimes assume (`RUNTIMES`: the HF remote code, or also Aleph Alpha's vLLM fork, which
serves only checkpoints with cross-attention in every decoder layer, no pooling QK-norm and a latent query as wide
as the backbone).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hat.checkpoint.store import ConversionError, ParamStoreWriter, model_param_shapes
from hat.config import (
    EOT_BYTE,
    Config,
    CrossAttentionConfig,
    DataConfig,
    ModelConfig,
    PoolingConfig,
    RopeScalingConfig,
    TransformerConfig,
)
from hat.convert.layout import HeadShape, llama_layer_names, to_hat, to_torch
from hat.convert.safetensors_io import SafetensorsDir
from hat.kinds import kind_of
from hat.kinds.hat_bytes import HatKind
from hat.models.hat import decoder_cross_heads, pooling_head_dim
from hat.text import SpecialTokenError, SpecialTokens

MODEL_TYPE = "hierarchical_autoregressive_transformer"
ARCHITECTURES = ["HATDecoderForCausalLM"]
AUTO_MAP = {"AutoConfig": "config.HATArchitectureConfig", "AutoModelForCausalLM": "model.HATForCausalLM"}
# Released HAT code version the exported config.json imitates (its `transformers_version` field).
TRANSFORMERS_VERSION = "4.46.3"
# A learned vector stored as (1, 1, D) in the released model and (D,) in hat.
VECTOR = "vector"
# The released runtimes an export can be checked against: "hf" (the remote code of the Hugging Face repositories)
# and "vllm" (Aleph Alpha's vLLM fork, which also needs everything "hf" does).
RUNTIMES = ("hf", "vllm")
# Released precision (`config_from_released(..., precision="released")`): bfloat16 compute with norms that do not
# upcast, as the released runtimes run the checkpoints.
PRECISIONS = ("float32", "released")


@dataclass(frozen=True)
class Row:
    """One tensor present on both sides: hat name, released name, layout role, attention geometry."""

    hat: str
    released: str
    role: str
    heads: HeadShape | None = None


def _cross_heads(cfg: ModelConfig) -> HeadShape:
    return HeadShape(cfg.pooling.num_heads, cfg.pooling.num_kv_heads, pooling_head_dim(cfg))


def _decoder_cross_heads(cfg: ModelConfig) -> HeadShape:
    return HeadShape(*decoder_cross_heads(cfg))


def _llama_rows(hat_prefix: str, released_prefix: str, cfg: TransformerConfig) -> list[Row]:
    heads = HeadShape.of(cfg)
    return [
        Row(hat_prefix + hat_name, released_prefix + torch_name, role, heads)
        for torch_name, (hat_name, role) in llama_layer_names(cfg.qk_norm).items()
    ]


def decoder_cross_layers(cfg: ModelConfig) -> list[int]:
    """Indices of the decoder blocks that cross-attend to the word vector."""
    return [i for i in range(cfg.decoder.num_layers) if cfg.cross_attn_every_layer or i == 0]


def released_rows(cfg: ModelConfig) -> list[Row]:
    """Every hat parameter of a HAT model with its released name, in the released model's module order."""
    rows = [Row("encoder.embedding_layer", "encoder.embedding_layer.weight", "copy")]
    for i in range(cfg.encoder.num_layers):
        rows += _llama_rows(f"encoder.layers.{i}.", f"encoder.layers.{i}.", cfg.encoder)
    pool, cross = "encoder_connector.cross_attention_encoder_connector.", _cross_heads(cfg)
    rows += [
        Row("encoder_connector.latent_query", "encoder_connector.latent_query", VECTOR),
        Row(pool + "q_proj", pool + "q_proj.weight", "q", cross),
        Row(pool + "k_proj", pool + "k_proj.weight", "kv", cross),
        Row(pool + "v_proj", pool + "v_proj.weight", "kv", cross),
        Row(pool + "o_proj", pool + "o_proj.weight", "o", cross),
    ]
    if cfg.pooling.qk_norm:
        # Per-head norms (released `key_query_norm_per_head: true`): vectors of head_dim.
        rows += [Row(pool + f"{n}.scale", pool + f"{n}.weight", "norm") for n in ("norm_query", "norm_key")]
    for i in range(cfg.backbone.num_layers):
        rows += _llama_rows(f"backbone.layers.{i}.", f"backbone.layers.{i}.", cfg.backbone)
    rows.append(Row("decoder_connector.first_word_embedding", "decoder_connector.first_word_embedding", VECTOR))
    cross_layers, cross = decoder_cross_layers(cfg), _decoder_cross_heads(cfg)
    for i in range(cfg.decoder.num_layers):
        block = f"decoder.decoder_layers.{i}."
        rows += _llama_rows(block + "llama_layer.", block + "llama_layer.", cfg.decoder)
        if i in cross_layers:
            rows += [
                Row(block + "kv_norm.scale", block + "kv_norm.weight", "norm"),
                Row(block + "cross_attention.v_proj", block + "cross_attention.v_proj.weight", "kv", cross),
                Row(block + "cross_attention.o_proj", block + "cross_attention.o_proj.weight", "o", cross),
            ]
    rows += [Row("layer_norm.scale", "layer_norm.weight", "norm"), Row("lm_head", "lm_head.weight", "dense")]
    return rows


def released_fillers(cfg: ModelConfig) -> list[tuple[str, tuple[int, ...], float]]:
    """Released-only tensors that cannot affect the output: `(name, shape, constant to export)`."""
    cross = _decoder_cross_heads(cfg)
    enc, dim = cfg.decoder.hidden_size, cfg.backbone.hidden_size
    cross_layers = decoder_cross_layers(cfg)
    fillers = []
    for i in range(cfg.decoder.num_layers):
        block = f"decoder.decoder_layers.{i}."
        fillers.append((block + "query_norm.weight", (enc,), 1.0))
        if i in cross_layers:
            fillers += [
                (block + "cross_attention.q_proj.weight", (cross.heads * cross.head_dim, enc), 0.0),
                (block + "cross_attention.k_proj.weight", (cross.kv_heads * cross.head_dim, dim), 0.0),
            ]
        else:
            fillers.append((block + "kv_norm.weight", (dim,), 1.0))
    return fillers


def _ignorable(cfg: ModelConfig) -> set[str]:
    """Released tensor names an import may skip: the fillers, plus decoder cross-attention q/k norms."""
    names = {name for name, _, _ in released_fillers(cfg)}
    for i in decoder_cross_layers(cfg):
        names |= {f"decoder.decoder_layers.{i}.cross_attention.{n}.weight" for n in ("norm_query", "norm_key")}
    return names


def released_shape(role: str, hat_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The released (PyTorch) shape of a tensor of role `role` whose hat shape is `hat_shape`."""
    if role in ("q", "kv"):
        return (int(np.prod(hat_shape[1:])), hat_shape[0])
    if role == "o":
        return (hat_shape[-1], int(np.prod(hat_shape[:-1])))
    if role == "dense":
        return tuple(reversed(hat_shape))
    if role == VECTOR:
        return (1, 1, *hat_shape)
    return tuple(hat_shape)


def hat_to_released(row: Row, array: np.ndarray) -> np.ndarray:
    """One hat parameter -> its released layout."""
    if row.role == VECTOR:
        return np.asarray(array).reshape(1, 1, -1)
    return to_torch(row.role, np.asarray(array))


def released_to_hat(row: Row, weight: np.ndarray) -> np.ndarray:
    """One released tensor -> its hat layout."""
    if row.role == VECTOR:
        return weight.reshape(-1)
    return to_hat(row.role, weight, row.heads)


# ---- config.json ----------------------------------------------------------------------------------------------


def _rope_scaling_json(scaling: RopeScalingConfig | None) -> dict[str, Any] | None:
    if scaling is None:
        return None
    return {"rope_type": "llama3", **dataclasses.asdict(scaling)}


def _stack_json(cfg: TransformerConfig, vocab_size: int, max_positions: int) -> dict[str, Any]:
    stack = {
        "vocab_size": vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "rms_norm_eps": cfg.norm_eps,
        "intermediate_size": cfg.mlp_hidden_size,
        "max_position_embeddings": max_positions,
        "rope_scaling": _rope_scaling_json(cfg.rope_scaling),
        "rope_theta": cfg.rope_theta,
        "mlp_bias": False,
        "use_cache": True,
        "sliding_window": cfg.sliding_window,
        "key_query_norm": cfg.qk_norm,
        "key_query_norm_per_head": cfg.qk_norm,
        "is_neox_style": True,
    }
    if cfg.head_dim is not None and cfg.head_dim != cfg.hidden_size // cfg.num_heads:
        stack["head_dim"] = cfg.head_dim  # only when it cannot be derived, as the released configs do
    return stack


def _cross_json(cross: HeadShape, q_dim: int, kv_dim: int, qk_norm: bool) -> dict[str, Any]:
    return {
        "hidden_size": cross.heads * cross.head_dim,
        "hidden_size_q": q_dim,
        "hidden_size_kv": kv_dim,
        "num_attention_heads": cross.heads,
        "attention_num_kv_heads": cross.kv_heads,
        "word_window_size": 1,
        "key_query_norm": qk_norm,
        "key_query_norm_per_head": qk_norm,
    }


def check_released_runtime(config: Config, runtime: str = "hf") -> None:
    """Raises a one-line `ConversionError` naming the config field when the released runtime `runtime` (see
    `RUNTIMES`) would misread or refuse an export of `config`."""
    cfg = config.model
    if runtime not in RUNTIMES:
        raise ConversionError(f"unknown released runtime {runtime!r} (choose from {', '.join(RUNTIMES)})")
    if not isinstance(kind_of(config), HatKind):
        raise ConversionError(f"model.kind is {cfg.kind!r}: the released HAT format holds kind 'hat' models only")
    if cfg.pooling.rope_theta != cfg.encoder.rope_theta:
        raise ConversionError(
            f"model.pooling.rope_theta ({cfg.pooling.rope_theta}) differs from model.encoder.rope_theta "
            f"({cfg.encoder.rope_theta}): the released format rotates pooling with the encoder's RoPE"
        )
    if cfg.pooling.rope_scaling != cfg.encoder.rope_scaling:
        raise ConversionError(
            "model.pooling.rope_scaling differs from model.encoder.rope_scaling: the released format rotates "
            "pooling with the encoder's RoPE"
        )
    if pooling_head_dim(cfg) != cfg.encoder.resolved_head_dim:
        raise ConversionError(
            f"model.pooling.head_dim ({pooling_head_dim(cfg)}) differs from the encoder's head dim "
            f"({cfg.encoder.resolved_head_dim}): the released connector builds its RoPE from encoder_config"
        )
    if cfg.decoder.sliding_window != cfg.encoder.sliding_window:
        raise ConversionError(
            f"model.decoder.sliding_window ({cfg.decoder.sliding_window}) differs from model.encoder.sliding_window "
            f"({cfg.encoder.sliding_window}): the released vLLM runtime applies the top-level sliding_window to both"
        )
    if runtime == "vllm":
        pool_width = cfg.pooling.num_heads * pooling_head_dim(cfg)
        if not cfg.cross_attn_every_layer:
            raise ConversionError(
                "model.cross_attn_every_layer is false: the released vLLM runtime builds cross-attention in every "
                "decoder layer"
            )
        if cfg.pooling.qk_norm:
            raise ConversionError("model.pooling.qk_norm is true: the released vLLM runtime has no pooling QK-norm")
        if pool_width != cfg.backbone.hidden_size:
            raise ConversionError(
                f"model.pooling.num_heads x head_dim ({pool_width}) differs from model.backbone.hidden_size "
                f"({cfg.backbone.hidden_size}): the released vLLM runtime sizes the latent query by the "
                "cross-attention width"
            )


def released_config_json(config: Config, torch_dtype: str, runtime: str = "hf") -> dict[str, Any]:
    """The released-format config.json of a hat HAT run config; refuses what the format, or the released runtime
    `runtime`, cannot express (`check_released_runtime`)."""
    check_released_runtime(config, runtime)
    cfg = config.model
    seq_bytes, max_words = config.data.seq_bytes, config.data.max_words
    encoder = _stack_json(cfg.encoder, cfg.vocab_size, seq_bytes)
    encoder["cross_attention_config"] = _cross_json(
        _cross_heads(cfg), cfg.backbone.hidden_size, cfg.encoder.hidden_size, cfg.pooling.qk_norm
    )
    decoder = _stack_json(cfg.decoder, cfg.vocab_size, seq_bytes)
    # q/k of the decoder cross-attention are exported as zeros, so no norm between them is needed.
    decoder["cross_attention_config"] = _cross_json(
        _decoder_cross_heads(cfg), cfg.decoder.hidden_size, cfg.backbone.hidden_size, False
    )
    decoder["cross_attn_every_layer"] = cfg.cross_attn_every_layer
    return {
        "model_type": MODEL_TYPE,
        "architectures": ARCHITECTURES,
        "auto_map": AUTO_MAP,
        # The released runtimes need end-of-text among the special tokens (their stop token).
        "special_token_dict": cfg.special_tokens or {"<|eot_id|>": EOT_BYTE},
        # Read by hat only: the context rules the model was trained with, restored on import.
        "hat_context": {"leading_end_of_text": cfg.leading_end_of_text, "special_tokens": cfg.special_tokens},
        "eos_token_id": EOT_BYTE,
        "max_word_size": cfg.max_word_bytes,
        "sliding_window": cfg.encoder.sliding_window,
        "max_position_embeddings": seq_bytes,
        "torch_dtype": torch_dtype,
        "transformers_version": TRANSFORMERS_VERSION,
        "encoder_config": encoder,
        # The backbone has no embedding of its own (released: vocab_size 0).
        "backbone_config": _stack_json(cfg.backbone, 0, max_words),
        "decoder_config": decoder,
    }


def _field(section: dict[str, Any], key: str, where: str, default: Any = ...) -> Any:
    if key in section:
        return section[key]
    if default is ...:
        raise ConversionError(f"config.json lacks {where}.{key}")
    return default


def _rope_scaling(value: Any, where: str) -> RopeScalingConfig | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConversionError(f"config.json {where} must be a mapping or null, got {value!r}")
    rope_type = value.get("rope_type", value.get("type"))
    if rope_type in (None, "default"):
        return None
    if rope_type != "llama3":
        raise ConversionError(f"unsupported config.json {where}.rope_type {rope_type!r} (hat supports llama3 only)")
    defaults = RopeScalingConfig()
    return RopeScalingConfig(
        factor=float(value.get("factor", defaults.factor)),
        low_freq_factor=float(value.get("low_freq_factor", defaults.low_freq_factor)),
        high_freq_factor=float(value.get("high_freq_factor", defaults.high_freq_factor)),
        original_max_position_embeddings=int(
            value.get("original_max_position_embeddings", defaults.original_max_position_embeddings)
        ),
    )


def _stack(section: dict[str, Any], where: str, default_window: int | None) -> TransformerConfig:
    """One released Llama stack config -> `TransformerConfig`."""
    if _field(section, "mlp_bias", where, False):
        raise ConversionError(f"unsupported config.json {where}.mlp_bias: true (hat's MLPs have no bias)")
    if not _field(section, "is_neox_style", where, True):
        raise ConversionError(f"unsupported config.json {where}.is_neox_style: false (hat rotates halves, neox style)")
    if _field(section, "hidden_act", where, "silu") != "silu":
        raise ConversionError(f"unsupported config.json {where}.hidden_act {section['hidden_act']!r} (hat: silu)")
    qk_norm = bool(_field(section, "key_query_norm", where, False))
    if qk_norm and not _field(section, "key_query_norm_per_head", where, False):
        raise ConversionError(f"unsupported config.json {where}.key_query_norm_per_head: false (hat: per head)")
    hidden, heads = int(_field(section, "hidden_size", where)), int(_field(section, "num_attention_heads", where))
    head_dim = section.get("head_dim")
    return TransformerConfig(
        num_layers=int(_field(section, "num_hidden_layers", where)),
        hidden_size=hidden,
        num_heads=heads,
        num_kv_heads=int(_field(section, "num_key_value_heads", where, heads)),
        head_dim=None if head_dim in (None, hidden // heads) else int(head_dim),
        mlp_hidden_size=int(_field(section, "intermediate_size", where)),
        sliding_window=_field(section, "sliding_window", where, default_window),
        rope_theta=float(_field(section, "rope_theta", where, 10000.0)),
        rope_scaling=_rope_scaling(section.get("rope_scaling"), f"{where}.rope_scaling"),
        norm_eps=float(_field(section, "rms_norm_eps", where, 1e-5)),
        qk_norm=qk_norm,
    )


def _cross(section: dict[str, Any], where: str, q_dim: int, kv_dim: int) -> HeadShape:
    """A released `cross_attention_config` -> its head geometry, checking the widths it connects."""
    where = f"{where}.cross_attention_config"
    cross = _field(section, "cross_attention_config", where.rsplit(".", 1)[0])
    # `word_window_size` is not checked: no released computation reads it.
    for key, expected in (("hidden_size_q", q_dim), ("hidden_size_kv", kv_dim)):
        if _field(cross, key, where) != expected:
            raise ConversionError(f"unsupported config.json {where}.{key} {cross[key]} (hat needs {expected})")
    heads, hidden = int(_field(cross, "num_attention_heads", where)), int(_field(cross, "hidden_size", where))
    if hidden % heads:
        raise ConversionError(f"config.json {where}.hidden_size {hidden} is not a multiple of num_attention_heads")
    return HeadShape(heads, int(_field(cross, "attention_num_kv_heads", where, heads)), hidden // heads)


def _special_tokens(released: dict[str, Any]) -> dict[str, int]:
    tokens = released.get("special_token_dict")
    if tokens is None:
        tokens = {"<|eot_id|>": EOT_BYTE}  # the released config class's default
    if not isinstance(tokens, dict) or not all(isinstance(v, int) for v in tokens.values()):
        raise ConversionError(f"config.json special_token_dict must map strings to byte values, got {tokens!r}")
    try:
        SpecialTokens(tokens)
    except SpecialTokenError as error:
        raise ConversionError(f"unsupported config.json special_token_dict: {error}") from None
    return dict(tokens)


def _context(released: dict[str, Any], enc_json: dict[str, Any], backbone_json: dict[str, Any]) -> DataConfig:
    """The released runtime's context: `max_position_embeddings` bytes (top level, else the encoder's) in the
    backbone's `max_position_embeddings` words."""
    seq_bytes = released.get("max_position_embeddings", enc_json.get("max_position_embeddings"))
    max_words = backbone_json.get("max_position_embeddings")
    if not isinstance(seq_bytes, int) or not isinstance(max_words, int):
        raise ConversionError(
            "config.json lacks max_position_embeddings (top level or encoder_config) or "
            "backbone_config.max_position_embeddings: the context length of the released runtime"
        )
    return DataConfig(seq_bytes=seq_bytes, max_words=max_words)


def _with_precision(stack: TransformerConfig, precision: str) -> TransformerConfig:
    return dataclasses.replace(stack, norm_dtype="compute" if precision == "released" else "float32")


def config_from_released(released: dict[str, Any], precision: str = "float32") -> Config:
    """A released HAT config.json -> a hat run config (`kind: hat`) that carries what the released runtime does
    around the network: its context length, special tokens, no leading end-of-text (unless the checkpoint is a hat
    export, whose `hat_context` is restored) and per-part windows. `precision="released"` also runs it as the
    released runtime does: bfloat16 compute, norms without upcast. Train and parallel sections default."""
    if precision not in PRECISIONS:
        raise ConversionError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    if released.get("model_type") != MODEL_TYPE:
        raise ConversionError(f"config.json model_type is {released.get('model_type')!r}, expected {MODEL_TYPE!r}")
    if released.get("eos_token_id", EOT_BYTE) != EOT_BYTE:
        raise ConversionError(f"unsupported config.json eos_token_id {released['eos_token_id']} (hat: {EOT_BYTE})")
    sections = {}
    for name in ("encoder_config", "backbone_config", "decoder_config"):
        if not isinstance(released.get(name), dict):
            raise ConversionError(f"config.json lacks the {name} section")
        sections[name] = released[name]
    enc_json, dec_json = sections["encoder_config"], sections["decoder_config"]
    window = released.get("sliding_window")
    # Each part's own `sliding_window` (as the HF remote code reads it), else the top-level one.
    encoder = _with_precision(_stack(enc_json, "encoder_config", window), precision)
    backbone = _with_precision(_stack(sections["backbone_config"], "backbone_config", None), precision)
    decoder = _with_precision(_stack(dec_json, "decoder_config", window), precision)
    if encoder.hidden_size != decoder.hidden_size:
        raise ConversionError("config.json decoder_config.hidden_size differs from encoder_config.hidden_size")
    pool = _cross(enc_json, "encoder_config", backbone.hidden_size, encoder.hidden_size)
    dec_cross = _cross(dec_json, "decoder_config", decoder.hidden_size, backbone.hidden_size)
    if dec_cross.heads % dec_cross.kv_heads:
        raise ConversionError(
            "config.json decoder_config.cross_attention_config.num_attention_heads must be a multiple of "
            "attention_num_kv_heads"
        )
    cross_json = enc_json["cross_attention_config"]
    pool_qk_norm = bool(cross_json.get("key_query_norm", False))
    if pool_qk_norm and not cross_json.get("key_query_norm_per_head", False):
        raise ConversionError(
            "unsupported config.json encoder_config.cross_attention_config.key_query_norm_per_head: false "
            "(hat's pooling QK-norm is per head)"
        )
    vocab = int(_field(enc_json, "vocab_size", "encoder_config"))
    if int(_field(dec_json, "vocab_size", "decoder_config")) != vocab:
        raise ConversionError("config.json decoder_config.vocab_size differs from encoder_config.vocab_size")
    pooling = PoolingConfig(
        num_heads=pool.heads,
        num_kv_heads=pool.kv_heads,
        head_dim=None if pool.head_dim == encoder.hidden_size // pool.heads else pool.head_dim,
        qk_norm=pool_qk_norm,
        # The released connector's rotary embedding is built from the encoder config.
        rope_theta=encoder.rope_theta,
        rope_scaling=encoder.rope_scaling,
    )
    decoder_cross = CrossAttentionConfig(dec_cross.heads, dec_cross.kv_heads, dec_cross.head_dim)
    special_tokens = _special_tokens(released)
    if any(value >= vocab for value in special_tokens.values()):
        raise ConversionError(f"config.json special_token_dict {special_tokens} holds ids outside vocab_size {vocab}")
    # A hat export records hat's own context rules; a released checkpoint is fed as the released runtime feeds it.
    hat_context = released.get("hat_context") or {}
    if not isinstance(hat_context, dict):
        raise ConversionError(f"config.json hat_context must be a mapping, got {hat_context!r}")
    if "special_tokens" in hat_context:
        special_tokens = _special_tokens({"special_token_dict": hat_context["special_tokens"]})
    model = ModelConfig(
        kind="hat",
        vocab_size=vocab,
        max_word_bytes=int(_field(released, "max_word_size", "root")),
        encoder=encoder,
        pooling=pooling,
        backbone=backbone,
        decoder=decoder,
        cross_attn_every_layer=bool(dec_json.get("cross_attn_every_layer", False)),
        compute_dtype="bfloat16" if precision == "released" else "float32",
        special_tokens=special_tokens,
        leading_end_of_text=bool(hat_context.get("leading_end_of_text", False)),
        decoder_cross_attention=None if dec_cross == pool else decoder_cross,
    )
    return Config(model=model, data=_context(released, enc_json, sections["backbone_config"]))


# ---- import ---------------------------------------------------------------------------------------------------


def import_released(released_dir: str | Path, out_dir: str | Path, precision: str = "float32") -> Path:
    """Converts a released HAT checkpoint directory (config.json + safetensors, single or sharded) into a hat
    parameter store at `out_dir`, one tensor in memory at a time; returns the store's path. `precision`: see
    `config_from_released`."""
    released_dir = Path(released_dir)
    if Path(out_dir).exists():
        raise ConversionError(f"output directory already exists: {Path(out_dir).resolve()} (choose a new path)")
    config_path = released_dir / "config.json"
    if not config_path.is_file():
        raise ConversionError(f"no config.json in {released_dir} (expected a released HAT checkpoint directory)")
    try:
        released_json = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise ConversionError(f"{config_path} is not valid JSON ({error})") from None
    config = config_from_released(released_json, precision)
    tensors = SafetensorsDir(released_dir)
    rows = released_rows(config.model)
    hat_shapes = model_param_shapes(config)
    problems = []
    known = {row.released for row in rows} | _ignorable(config.model)
    if unexpected := [name for name in tensors.names() if name not in known]:
        raise ConversionError(
            f"{len(unexpected)} tensors hat cannot represent, e.g. {unexpected[:3]} (does config.json match?)"
        )
    for row in rows:
        expected = released_shape(row.role, hat_shapes[row.hat])
        if row.released not in tensors.files:
            problems.append(f"missing tensor {row.released}")
        elif (shape := tensors.shape(row.released)) != expected:
            problems.append(f"tensor {row.released} has shape {shape}, config.json implies {expected}")
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConversionError(f"{released_dir}: {problems[0]}{more}")
    with ParamStoreWriter(out_dir, config) as writer:
        for row in rows:
            writer.write(row.hat, released_to_hat(row, tensors.read(row.released)))
        return writer.finalize({"source": {"format": "released-hat", "path": str(released_dir.resolve())}})
