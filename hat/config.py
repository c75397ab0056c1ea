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

from hat.errors import HatError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "hat_tiny.yaml"

# Released HAT maps special tokens to byte values that never occur in valid UTF-8.
EOT_BYTE = 192
BYTE_VOCAB_SIZE = 256


class ConfigError(HatError, ValueError):
    """A configuration file or override is invalid; the message names the key and the fix."""


@dataclasses.dataclass(frozen=True)
class RopeScalingConfig:
    """Llama 3.x RoPE frequency scaling (HF `rope_scaling` with `rope_type: llama3`).

    Wavelengths longer than `original_max_position_embeddings / low_freq_factor` are stretched by `factor`,
    those shorter than `original_max_position_embeddings / high_freq_factor` are kept, and the band between is
    interpolated smoothly.
    """

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


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
    rope_scaling: RopeScalingConfig | None = None
    norm_eps: float = 1e-5
    # Apply RMSNorm to queries and keys per head before RoPE (released HAT: `key_query_norm`).
    qk_norm: bool = False
    # Precision of the stack's RMSNorms: "float32" upcasts; "compute" runs them in model.compute_dtype without an
    # upcast, as the released TFree-HAT runtime does in bfloat16.
    norm_dtype: Literal["float32", "compute"] = "float32"

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
    rope_scaling: RopeScalingConfig | None = None


@dataclasses.dataclass(frozen=True)
class NgramConfig:
    """Hashed byte n-gram embeddings added to the byte embedding (`hat.models.ngrams`; BLT uses n = 3..8): of the
    HAT encoder, or of a flat byte LM. Each n gets `buckets` rows of width encoder (flat: backbone) width."""

    # The n-gram lengths, e.g. [2, 3, 4, 5, 6]; empty: no n-gram embeddings. A tuple, so that configs stay hashable.
    sizes: tuple[int, ...] = ()
    buckets: int = 4096


@dataclasses.dataclass(frozen=True)
class CrossAttentionConfig:
    """Head geometry of the decoder's cross-attention when it differs from the pooling's (released checkpoints may
    size the two `cross_attention_config`s apart)."""

    num_heads: int = 4
    num_kv_heads: int = 4
    head_dim: int = 32


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
    ngrams: NgramConfig = NgramConfig()
    # Add the decoder's cross-attention to the word vector in every decoder layer, not only the first.
    cross_attn_every_layer: bool = False
    # Mixed precision: dtype of activations and matmuls; parameters, optimizer state, norms, softmaxes and the
    # loss stay float32. bfloat16 is the accelerator setting (on CPUs it is slower than float32).
    compute_dtype: Literal["float32", "bfloat16"] = "float32"
    # Activation rematerialisation per layer: "none" keeps every activation for the backward pass; "full" keeps
    # only each layer's input and recomputes the rest; "dots" also keeps matmul outputs; "dots_no_batch" keeps
    # matmul outputs without batch dimensions (weights-only products), as in MaxText's policies.
    remat: Literal["none", "full", "dots", "dots_no_batch"] = "none"
    # Store the backbone's layers stacked on a leading "layers" axis and run them with `jax.lax.scan`, so compile
    # time does not grow with depth. Checkpoints convert between layouts (`hat.models.convert_layer_layout`).
    scan_layers: bool = False
    # Flat models only: the output head is the transpose of the unit embedding (HF `tie_word_embeddings`).
    tie_embeddings: bool = False
    # --- What the released TFree-HAT runtime does (set by `hat-import`); the defaults keep hat's trained layout. ---
    # Special-token strings fed as one byte each, a word of its own (released `special_token_dict`); prompts and
    # evaluated text are cut at them first. Empty: none.
    # (Left out of the hash, so that model configs stay usable as cache keys; equality still compares it.)
    special_tokens: dict[str, int] = dataclasses.field(default_factory=dict, hash=False)
    # Put end-of-text in front of every window as word 0 (hat's training layout); false: the text as it is over
    # the whole window, as the released runtime feeds a prompt.
    leading_end_of_text: bool = True
    # The decoder cross-attention's heads when they differ from the pooling's (null: the pooling's geometry).
    decoder_cross_attention: CrossAttentionConfig | None = None


@dataclasses.dataclass(frozen=True)
class BPEConfig:
    """Byte-level BPE data (`data.format: bpe`) for a `token_lm`: tokenizer and token sequence length."""

    # Ids in the tokenizer (end-of-text and the 256 bytes included); must equal model.vocab_size.
    vocab_size: int = 4096
    # A tokenizer.json written by hat; empty: train one on the training split (cached beside the prepared data).
    tokenizer: str = ""
    # Tokens per training sequence.
    seq_tokens: int = 256
    # Train the tokenizer on at most this many bytes of the training split (0: all of it).
    train_bytes: int = 0


@dataclasses.dataclass(frozen=True)
class EqInfoConfig:
    """Compressed-text input (`data.format: eqinfo`): EqualInfoAC[window_bits, 2**token_bits] tokens of M1."""

    # A byte_lm checkpoint (run workdir or step directory) whose probabilities drive the arithmetic coder.
    m1_checkpoint: str = "runs/m1_tiny"
    window_bits: int = 16
    token_bits: int = 8
    # Bytes per window at most (M1's cache slots). M1 runs as a cached step over m1_batch_size lanes, segment i in
    # lane i % m1_batch_size (bit-identical probabilities in encoder and decoder need one computation shape).
    max_window_bytes: int = 32
    m1_batch_size: int = 256
    precision: int = 14
    # Text is cut into independent segments that compress in parallel (a window never crosses one).
    segment_bytes: int = 4096
    # Tokens per M2 example.
    seq_tokens: int = 512
    # Byte budgets of the compressed training and held-out parts (0: all); CPU compression runs at kB/s.
    max_train_bytes: int = 0
    max_heldout_bytes: int = 0
    # Processes that compress chunks of the corpus at once, each with its own M1 (hat.compress.workers; the tokens
    # are the same whatever their number). 0: one per CPU core when M1 runs on a CPU, else 1.
    workers: int = 0


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
    # Bytes of synthetic text in many scripts added to the training split (`hat.data.primer`): teaches a byte model
    # UTF-8's byte grammar beyond the corpus's scripts, so that unseen scripts score no worse than uniform. 0: none.
    script_primer_bytes: int = 0
    seed: int = 0
    # "bytes": packed byte sequences (HAT, byte LM); "bpe": byte-level BPE token sequences (token LM);
    # "eqinfo": EqualInfoAC tokens of the same corpus (token LM M2; see `eqinfo`).
    format: Literal["bytes", "bpe", "eqinfo"] = "bytes"
    bpe: BPEConfig = BPEConfig()
    eqinfo: EqInfoConfig = EqInfoConfig()


def _default_mesh() -> dict[str, int]:
    return {"data": -1, "fsdp": 1, "tensor": 1}


def _default_rules() -> dict[str, list[str]]:
    # Parameters: FSDP shards the model width, tensor parallelism splits heads and MLP. A byte vocabulary (256)
    # is too small to split; token models with large vocabularies may map "vocab" to tensor.
    # Activations ("act_*") keep the batch on data x fsdp and split heads and MLP over tensor.
    return {
        "embed": ["fsdp"],
        "vocab": [],
        "heads": ["tensor"],
        "kv_heads": ["tensor"],
        "mlp": ["tensor"],
        "head_dim": [],
        "layers": [],
        "act_batch": ["data", "fsdp"],
        "act_length": [],
        "act_embed": [],
        "act_heads": ["tensor"],
        "act_kv_heads": ["tensor"],
        "act_mlp": ["tensor"],
        "act_vocab": [],
    }


@dataclasses.dataclass(frozen=True)
class ParallelConfig:
    """The device mesh and the one table that maps logical axis names to mesh axes (MaxText style).

    Model code names every parameter and activation axis logically ("embed", "heads", "act_batch", ...);
    `rules` says which mesh axes shard each name (an empty list replicates it). `part_rules` overrides the rules
    for the parameters of one top-level part (`encoder`, `encoder_connector`, `backbone`, `decoder`, ...), so the
    small byte-level parts can, say, stay replicated while the backbone is split. A dimension that a mesh axis does
    not divide is replicated instead (reported by `train.py --dry-run`).
    """

    # Mesh axis sizes in order; one axis may be -1 and takes the remaining devices.
    mesh: dict[str, int] = dataclasses.field(default_factory=_default_mesh)
    rules: dict[str, list[str]] = dataclasses.field(default_factory=_default_rules)
    part_rules: dict[str, dict[str, list[str]]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """Multi-process runs through JAX's own runtime (`jax.distributed.initialize`).

    "auto" initialises when a coordinator address is given here or in `JAX_COORDINATOR_ADDRESS`; "always" also
    lets JAX detect the cluster itself (TPU pods, SLURM, Open MPI, Kubernetes); "never" runs one process.
    Process count and id come from here, else `JAX_NUM_PROCESSES` / `JAX_PROCESS_ID`, else JAX's detection.
    """

    initialize: Literal["auto", "always", "never"] = "auto"
    coordinator_address: str = ""
    num_processes: int = 0
    process_id: int = -1
    # CPU-only runs need a collectives backend between processes.
    cpu_collectives: Literal["gloo", "mpi", "none"] = "gloo"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation, evaluation, logging and checkpointing schedule."""

    batch_size: int = 16
    steps: int = 2000
    # Stop early once this many seconds of training have passed (0: no limit), counted over the whole run, resumes
    # included (a run extended with more steps may need a larger budget). Used for equal-time comparisons.
    time_budget_s: float = 0.0
    # Fit `steps` to `time_budget_s` on this machine: the warmup's steps are timed and, when it ends, `steps` becomes
    # what the rest of the budget holds (`hat.train.budget`: the run is exactly the run with that `steps`, which is
    # printed and saved with the run; a resume keeps it).
    fit_steps_to_budget: bool = False
    # Stop this invocation after this many steps and checkpoint (0: run to `steps`); the learning-rate schedule
    # still spans `steps`, so a long run can be trained in chunks (e.g. on preemptible machines).
    stop_after_steps: int = 0
    learning_rate: float = 3e-3
    warmup_steps: int = 100
    # Cosine decay ends at learning_rate * min_lr_ratio.
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    grad_clip_norm: float = 1.0
    log_every: int = 10
    # Evaluation and checkpoints every so many steps (0: only at the end of the run).
    eval_every: int = 200
    # Held-out sequences per evaluation (batches of batch_size); 0 evaluates the whole held-out split.
    eval_sequences: int = 256
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    # Save checkpoints in a background thread while training goes on.
    async_checkpoints: bool = True
    # Gradient accumulation: each step's batch is split into this many micro-batches run one after another.
    microbatches: int = 1
    # Peak FLOP/s of one device for the MFU metric; 0 measures a float32 matmul at start-up (CPU) instead.
    peak_flops_per_device: float = 0.0
    # Start a new run from these parameters instead of a random init: a parameter store (scripts/convert_llama.py,
    # scripts/import_hat.py) or a hat run / checkpoint step. Resuming the run's own checkpoint takes precedence.
    init_from: str = ""
    # Top-level parts (encoder, encoder_connector, backbone, decoder_connector, decoder, layer_norm, lm_head,
    # embedding_layer) that get no updates and no optimizer state, e.g. [backbone] for conversion stage 1.
    freeze: list[str] = dataclasses.field(default_factory=list)
    # Per-part learning-rate multipliers, e.g. {backbone: 0.1} for conversion stage 2.
    lr_scale: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Config:
    """A whole run: `python train.py [CONFIG.yaml] [key.sub=value ...]`."""

    workdir: str = "runs/default"
    seed: int = 0
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    parallel: ParallelConfig = ParallelConfig()
    distributed: DistributedConfig = DistributedConfig()


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
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        key_tp, item_tp = typing.get_args(tp)
        return {_coerce(k, key_tp, key): _coerce(item, item_tp, f"{key}.{k}") for k, item in value.items()}
    if origin is tuple and typing.get_args(tp)[1:] == (Ellipsis,):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        return tuple(_coerce(item, typing.get_args(tp)[0], f"{key}[{i}]") for i, item in enumerate(value))
    if origin is list:
        if isinstance(value, str) and typing.get_args(tp) == (str,):
            value = [value]  # a rule may name a single mesh axis without brackets
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
            raise ConfigError(f"unknown config key '{prefix}{key}'{hint} (valid keys here: {', '.join(names)})")
        field_default = getattr(cls(), key)
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            # Nested sections override their defaults field by field.
            value = _deep_merge(dataclasses.asdict(field_default), value)
        elif isinstance(field_default, dict) and isinstance(value, dict):
            # Mappings (mesh axes, sharding rules) too: an override changes one entry, not the whole table.
            value = _deep_merge(field_default, value)
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
    """A plain nested dict of the config (tuples as lists), suitable for YAML or JSON."""
    return dataclasses.asdict(config, dict_factory=lambda items: {key: _plain(value) for key, value in items})


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


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
    tree = _resolve_base(_read_yaml(path), path, seen=(path.resolve(),))
    for override in overrides:
        key, value = parse_override(override)
        _set_dotted(tree, key, value)
    return config_from_dict(tree)


def _read_yaml(path: Path) -> dict[str, Any]:
    """The mapping in a YAML config file; invalid YAML or anything but a mapping is a `ConfigError`."""
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(tree).__name__}")
    return tree


def _resolve_base(tree: dict[str, Any], path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    """A config may start from another: `base: other.yaml` (relative to its own directory), then override keys."""
    base = tree.pop("base", None)
    if base is None:
        return tree
    base_path = (path.parent / str(base)).resolve()
    if base_path in seen:
        raise ConfigError(f"config file {path} has a cycle of `base:` files through {base_path}")
    if not base_path.is_file():
        raise ConfigError(f"config file {path}: base file not found: {base_path}")
    return _deep_merge(_resolve_base(_read_yaml(base_path), base_path, (*seen, base_path)), tree)


def config_from_dict(tree: dict[str, Any]) -> Config:
    """Builds and validates a `Config` from a nested dict (as stored beside checkpoints)."""
    model = tree.get("model")
    if isinstance(model, dict) and isinstance(model.get("remat"), bool):
        # Checkpoints written before remat policies stored a bool.
        tree = tree | {"model": model | {"remat": "full" if model["remat"] else "none"}}
    config = _build(Config, tree)
    validate(config)
    return config


def check_stack(name: str, stack: TransformerConfig) -> None:
    """Raises `ConfigError` when the heads of `model.<name>` do not divide its width."""
    if stack.hidden_size % stack.num_heads and stack.head_dim is None:
        raise ConfigError(
            f"model.{name}.hidden_size ({stack.hidden_size}) must be divisible by num_heads "
            f"({stack.num_heads}), or set model.{name}.head_dim"
        )
    if stack.num_heads % stack.num_kv_heads:
        raise ConfigError(
            f"model.{name}.num_heads ({stack.num_heads}) must be a multiple of num_kv_heads ({stack.num_kv_heads})"
        )


def validate(config: Config) -> None:
    """Cross-field checks that types alone cannot express and that hold for every model kind; what one kind
    needs (a HAT's encoder and decoder, a token LM's vocabulary) is checked by `hat.kinds.kind_of`."""
    model, data = config.model, config.data
    check_stack("backbone", model.backbone)
    if not 0.0 <= data.eval_fraction < 1.0:
        raise ConfigError(f"data.eval_fraction must be in [0, 1), got {data.eval_fraction}")
    if model.max_word_bytes + 1 > data.seq_bytes:
        raise ConfigError("data.seq_bytes must exceed model.max_word_bytes so that every word fits a sequence")
    if data.max_words < 2:
        raise ConfigError("data.max_words must be at least 2")
    if data.eqinfo.workers < 0:
        raise ConfigError(f"data.eqinfo.workers must be 0 (one per CPU core) or positive, got {data.eqinfo.workers}")
    ngrams = model.ngrams
    if any(n < 1 for n in ngrams.sizes) or len(set(ngrams.sizes)) != len(ngrams.sizes) or ngrams.buckets < 1:
        raise ConfigError(
            f"model.ngrams.sizes must be distinct positive n-gram lengths and buckets positive, got {ngrams}"
        )
    if config.train.batch_size < 1 or config.train.steps < 1:
        raise ConfigError("train.batch_size and train.steps must be positive")
    if config.train.microbatches < 1 or config.train.batch_size % config.train.microbatches:
        raise ConfigError(
            f"train.batch_size ({config.train.batch_size}) must be a multiple of train.microbatches "
            f"({config.train.microbatches})"
        )
    _validate_parallel(config.parallel)


def _validate_parallel(parallel: ParallelConfig) -> None:
    sizes = list(parallel.mesh.values())
    if sizes.count(-1) > 1 or any(size == 0 or size < -1 for size in sizes):
        raise ConfigError(f"parallel.mesh sizes must be positive, with at most one -1; got {parallel.mesh}")
    tables = {"parallel.rules": parallel.rules} | {
        f"parallel.part_rules.{part}": rules for part, rules in parallel.part_rules.items()
    }
    for name, rules in tables.items():
        for logical, axes in rules.items():
            unknown = [axis for axis in axes if axis not in parallel.mesh]
            if unknown:
                raise ConfigError(
                    f"{name}.{logical} names mesh axes {unknown} that parallel.mesh lacks "
                    f"(mesh axes: {', '.join(parallel.mesh)})"
                )
