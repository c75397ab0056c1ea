"""Typed run configuration: dataclasses loaded from YAML with dotted command-line overrides.

Every key is checked: an unknown or mistyped key raises `ConfigError` naming the key and the closest valid
names, and a value of the wrong type names the key, the expected type and the value given.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "hat_tiny.yaml"

# Released HAT maps special tokens to byte values that never occur in valid UTF-8.
EOT_BYTE = 192
BYTE_VOCAB_SIZE = 256


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key and the fix."""


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """A stack of Llama decoder layers (pre-RMSNorm, RoPE, grouped-query attention, SwiGLU)."""

    num_layers: int = 2
    hidden_size: int = 128
    num_heads: int = 4
    num_kv_heads: int = 4
    head_dim: int | None = None
    mlp_hidden_size: int = 512
    sliding_window: int | None = None
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    # Apply RMSNorm to queries and keys per head before RoPE (released HAT: `key_query_norm`).
    qk_norm: bool = False

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads


@dataclasses.dataclass(frozen=True)
class PoolingConfig:
    """The encoder connector: one learned latent query per word cross-attends to that word's bytes."""

    num_heads: int = 4
    num_kv_heads: int = 4
    head_dim: int | None = None
    qk_norm: bool = True
    rope_theta: float = 10000.0


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which model to build and its sizes.

    `kind: hat` uses encoder, pooling, backbone and decoder; `kind: byte_lm` is the flat baseline: the
    `backbone` stack run directly over bytes with a byte embedding and a byte head; `kind: token_lm` is the same
    flat stack over a token vocabulary of `vocab_size` ids (BPE or compressed-text tokens).
    """

    kind: Literal["hat", "byte_lm", "token_lm"] = "hat"
    vocab_size: int = BYTE_VOCAB_SIZE
    max_word_bytes: int = 100
    encoder: TransformerConfig = TransformerConfig(num_layers=1, hidden_size=128, sliding_window=256)
    pooling: PoolingConfig = PoolingConfig()
    backbone: TransformerConfig = TransformerConfig(num_layers=4, hidden_size=256, mlp_hidden_size=1024)
    decoder: TransformerConfig = TransformerConfig(num_layers=1, hidden_size=128, sliding_window=256)
    # Add the decoder's cross-attention to the word vector in every decoder layer, not only the first.
    cross_attn_every_layer: bool = False
    # Dtype of activations and matmuls; parameters stay float32.
    compute_dtype: Literal["float32", "bfloat16"] = "float32"
    # Rematerialise each layer's activations in the backward pass (saves memory, costs compute).
    remat: bool = False


@dataclasses.dataclass(frozen=True)
class EqInfoConfig:
    """Compressed-text input (`data.format: eqinfo`): EqualInfoAC[window_bits, 2**token_bits] tokens of M1."""

    # A byte_lm checkpoint (run workdir or step directory) whose probabilities drive the arithmetic coder.
    m1_checkpoint: str = "runs/m1_tiny"
    window_bits: int = 16
    token_bits: int = 8
    # Bytes per window at most: M1 always runs on [m1_batch_size, max_window_bytes] inputs (bit-identical
    # probabilities in encoder and decoder need one fixed computation shape).
    max_window_bytes: int = 32
    m1_batch_size: int = 64
    precision: int = 14
    # Text is cut into independent segments that compress in parallel (a window never crosses one).
    segment_bytes: int = 4096
    # Tokens per M2 example.
    seq_tokens: int = 512
    # Byte budgets of the compressed training and held-out parts (0: all); CPU compression runs at kB/s.
    max_train_bytes: int = 0
    max_heldout_bytes: int = 0


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the bytes come from and how they are packed into training sequences."""

    # "stdlib" (the running Python's standard library sources), or a list of files, directories and globs.
    corpus: str | list[str] = "stdlib"
    # Fraction of files held out for evaluation, chosen deterministically by a hash of each file's path.
    eval_fraction: float = 0.02
    # Bytes per packed sequence (whole words only; the first byte of every sequence is EOT).
    seq_bytes: int = 1024
    # Word slots per sequence for HAT's backbone; packing stops a sequence early when they run out.
    max_words: int = 320
    # Directory for prepared tensorstore arrays; empty means `<workdir>/data`.
    cache_dir: str = ""
    seed: int = 0
    # "bytes": packed byte sequences; "eqinfo": EqualInfoAC tokens of the same corpus (see `eqinfo`).
    format: Literal["bytes", "eqinfo"] = "bytes"
    eqinfo: EqInfoConfig = EqInfoConfig()


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation, evaluation, logging and checkpointing schedule."""

    batch_size: int = 16
    steps: int = 2000
    # Stop early once this many seconds of training have passed (0: no limit). Used for equal-time comparisons.
    time_budget_s: float = 0.0
    learning_rate: float = 3e-3
    warmup_steps: int = 100
    # Cosine decay ends at learning_rate * min_lr_ratio.
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    grad_clip_norm: float = 1.0
    log_every: int = 10
    eval_every: int = 200
    # Held-out sequences per evaluation (batches of batch_size); 0 evaluates the whole held-out split.
    eval_sequences: int = 256
    checkpoint_every: int = 500
    keep_checkpoints: int = 3


@dataclasses.dataclass(frozen=True)
class Config:
    """A whole run: `python train.py [CONFIG.yaml] [key.sub=value ...]`."""

    workdir: str = "runs/default"
    seed: int = 0
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Checks `value` against the annotation `tp`, converting where YAML is loose (int -> float)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping of {tp.__name__} fields, got {value!r}")
        return _build(tp, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as error:
                errors.append(error)
        raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"config key '{key}' must be one of {list(choices)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(item, item_tp, f"{key}[{i}]") for i, item in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        # YAML 1.1 reads exponent floats without a dot ("1e-3") as strings.
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (int, float, str, bool) and not (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        raise ConfigError(f"config key '{key}' must be {tp.__name__}, got {value!r}")
    return value


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=3)
            hint = f"; did you mean {', '.join(prefix + c for c in close)}?" if close else ""
            raise ConfigError(
                f"unknown config key '{prefix}{key}'{hint} (valid keys here: {', '.join(names)})"
            )
        field_default = getattr(cls(), key)
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            # Nested sections override their defaults field by field.
            value = _deep_merge(dataclasses.asdict(field_default), value)
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise ConfigError(f"invalid config section '{prefix or 'root'}': {error}") from None


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = _deep_merge(merged[key], value)
        merged[key] = value
    return merged


def to_dict(config: Any) -> dict[str, Any]:
    """A plain nested dict of the config, suitable for YAML or JSON."""
    return dataclasses.asdict(config)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{dotted}': '{part}' is not a section")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Splits `a.b=value`; the value is parsed as YAML (so `3`, `1e-3`, `true`, `[a, b]` work)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.sub=value (e.g. train.steps=100)")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else ""


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Loads a YAML config (default: configs/hat_tiny.yaml) and applies `key.sub=value` overrides."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (pass a YAML file, e.g. configs/hat_tiny.yaml)")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(tree).__name__}")
    for override in overrides:
        key, value = parse_override(override)
        _set_dotted(tree, key, value)
    return config_from_dict(tree)


def config_from_dict(tree: dict[str, Any]) -> Config:
    """Builds and validates a `Config` from a nested dict (as stored beside checkpoints)."""
    config = _build(Config, tree)
    validate(config)
    return config


def validate(config: Config) -> None:
    """Cross-field checks that types alone cannot express."""
    model, data = config.model, config.data
    stacks = {"backbone": model.backbone}
    if model.kind == "hat":
        stacks |= {"encoder": model.encoder, "decoder": model.decoder}
    for name, stack in stacks.items():
        if stack.hidden_size % stack.num_heads and stack.head_dim is None:
            raise ConfigError(
                f"model.{name}.hidden_size ({stack.hidden_size}) must be divisible by num_heads "
                f"({stack.num_heads}), or set model.{name}.head_dim"
            )
        if stack.num_heads % stack.num_kv_heads:
            raise ConfigError(
                f"model.{name}.num_heads ({stack.num_heads}) must be a multiple of num_kv_heads ({stack.num_kv_heads})"
            )
    if model.kind == "hat" and model.encoder.hidden_size != model.decoder.hidden_size:
        raise ConfigError(
            "model.decoder.hidden_size must equal model.encoder.hidden_size: "
            "the decoder reads the encoder's byte states"
        )
    if not 0.0 <= data.eval_fraction < 1.0:
        raise ConfigError(f"data.eval_fraction must be in [0, 1), got {data.eval_fraction}")
    if model.max_word_bytes + 1 > data.seq_bytes:
        raise ConfigError("data.seq_bytes must exceed model.max_word_bytes so that every word fits a sequence")
    if data.max_words < 2:
        raise ConfigError("data.max_words must be at least 2")
    if data.format == "eqinfo" and (model.kind != "token_lm" or model.vocab_size != 1 << data.eqinfo.token_bits):
        raise ConfigError(
            f"data.format eqinfo needs model.kind token_lm with model.vocab_size 2**data.eqinfo.token_bits "
            f"({1 << data.eqinfo.token_bits})"
        )
    if config.train.batch_size < 1 or config.train.steps < 1:
        raise ConfigError("train.batch_size and train.steps must be positive")
