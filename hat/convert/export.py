"""Export a hat checkpoint as a standalone `config.json` + safetensors directory.

Each model kind names its layout (`hat.kinds`, `export_format`):
- flat models (byte LM, token LMs) -> the Hugging Face Llama layout, loadable with
  `transformers.LlamaForCausalLM.from_pretrained(OUT_DIR)`;
- HAT -> the released TFree-HAT layout (`hat.convert.released`).

Only parameters are written (never optimizer state), in float32 or bfloat16, sharded like HF's `save_pretrained`
when larger than `max_shard_size`. The directory appears only when complete (written under a hidden name, then
renamed). A `tokenizer.json` that belongs to the checkpoint is copied beside the weights. A parameter store is
exported tensor by tensor (memory: one output shard); a training checkpoint is restored whole first.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from hat.checkpoint import load_model
from hat.checkpoint.store import (
    ConversionError,
    StoreTensors,
    flatten_params,
    is_param_store,
    load_store_config,
    read_manifest,
    staging_dir,
)
from hat.config import Config
from hat.convert.layout import llama_layer_names, to_torch
from hat.convert.released import hat_to_released, released_config_json, released_fillers, released_rows
from hat.convert.safetensors_io import ShardedWriter, parse_size
from hat.kinds import kind_of

# jnp.bfloat16 is ml_dtypes' numpy bfloat16, which safetensors writes as BF16.
DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(jnp.bfloat16)}
FORMATS = ("auto", "hf", "released")


def hf_llama_config(config: Config, torch_dtype: str, special_ids: dict[str, int | None]) -> dict[str, Any]:
    """`config.json` of `transformers.LlamaForCausalLM` for a flat hat model; refuses what HF Llama lacks."""
    model, stack = config.model, config.model.backbone
    if stack.qk_norm:
        raise ConversionError("model.backbone.qk_norm is set: HF Llama has no QK-norm (export needs qk_norm: false)")
    if stack.sliding_window is not None:
        raise ConversionError(
            "model.backbone.sliding_window is set: HF Llama has no sliding window (export needs sliding_window: null)"
        )
    # Positions the model was trained at; with Llama 3 scaling, the context the scaling was made for.
    max_positions = kind_of(config).sequence_length(config)
    rope_scaling = None
    if stack.rope_scaling is not None:
        rope_scaling = {"rope_type": "llama3", **dataclasses.asdict(stack.rope_scaling)}
        scaled = stack.rope_scaling.original_max_position_embeddings * stack.rope_scaling.factor
        max_positions = max(max_positions, int(scaled))
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": model.vocab_size,
        "hidden_size": stack.hidden_size,
        "intermediate_size": stack.mlp_hidden_size,
        "num_hidden_layers": stack.num_layers,
        "num_attention_heads": stack.num_heads,
        "num_key_value_heads": stack.num_kv_heads,
        "head_dim": stack.resolved_head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": stack.norm_eps,
        "rope_theta": stack.rope_theta,
        "rope_scaling": rope_scaling,
        "max_position_embeddings": max_positions,
        "tie_word_embeddings": model.tie_embeddings,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "torch_dtype": torch_dtype,
        **special_ids,
    }


def hf_llama_tensors(config: Config, flat: Mapping[str, Any]) -> Iterator[tuple[str, np.ndarray]]:
    """`(HF name, float32 array in PyTorch layout)` for every parameter of a flat model (per-layer names)."""
    stack = config.model.backbone
    yield "model.embed_tokens.weight", np.asarray(flat["embedding_layer"], np.float32)
    for index in range(stack.num_layers):
        for torch_name, (hat_name, kind) in llama_layer_names(stack.qk_norm).items():
            kernel = np.asarray(flat[f"backbone.layers.{index}.{hat_name}"], np.float32)
            yield f"model.layers.{index}.{torch_name}", to_torch(kind, kernel)
    yield "model.norm.weight", np.asarray(flat["layer_norm.scale"], np.float32)
    if not config.model.tie_embeddings:
        yield "lm_head.weight", to_torch("dense", np.asarray(flat["lm_head"], np.float32))


def released_tensors(config: Config, flat: Mapping[str, Any]) -> Iterator[tuple[str, np.ndarray]]:
    """`(released name, float32 array)` for a HAT model, including the released-only tensors (constants)."""
    for row in released_rows(config.model):
        yield row.released, hat_to_released(row, np.asarray(flat[row.hat], np.float32))
    for name, shape, value in released_fillers(config.model):
        yield name, np.full(shape, value, np.float32)


def _special_ids(config: Config, source: Path) -> dict[str, int | None]:
    """bos/eos ids: a store's manifest may carry them (Llama imports); else hat's end-of-text for the data."""
    if is_param_store(source):
        manifest = read_manifest(source)
        if "eos_token_id" in manifest or "bos_token_id" in manifest:
            return {key: manifest.get(key) for key in ("bos_token_id", "eos_token_id")}
    end_of_text = kind_of(config).end_of_text_id(config)
    return {"bos_token_id": end_of_text, "eos_token_id": end_of_text}


def find_tokenizer(config: Config, source: Path) -> Path | None:
    """The checkpoint's `tokenizer.json`: the configured one, one inside a store, or the run workdir's."""
    candidates = [source / "tokenizer.json", source.parent.parent / "tokenizer.json"]
    if config.data.bpe.tokenizer:
        candidates.insert(0, Path(config.data.bpe.tokenizer))
    return next((path for path in candidates if path.is_file()), None)


def resolve_format(config: Config, fmt: str) -> str:
    """`auto` -> the kind's export format (`released` for HAT, `hf` for flat models); an explicit format must be
    that one."""
    if fmt not in FORMATS:
        raise ConversionError(f"unknown export format {fmt!r} (choose from {', '.join(FORMATS)})")
    natural = kind_of(config).export_format
    if fmt not in ("auto", natural):
        raise ConversionError(
            f"format {fmt!r} cannot hold a model.kind {config.model.kind!r} model (use --format {natural})"
        )
    return natural


def export_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    dtype: str = "float32",
    max_shard_size: str | int = "5GB",
    fmt: str = "auto",
    runtime: str = "hf",
) -> Path:
    """Writes the parameters at `checkpoint` (anything `hat.checkpoint.load_model` reads) to `out_dir`; returns it.
    A HAT export is checked against the released runtime `runtime` (`hat.convert.released.RUNTIMES`)."""
    out_dir = Path(out_dir).resolve()
    if out_dir.exists():
        raise ConversionError(f"output directory already exists: {out_dir} (choose a new path or delete it)")
    if dtype not in DTYPES:
        raise ConversionError(f"unknown dtype {dtype!r} (choose from {', '.join(DTYPES)})")
    max_bytes = parse_size(max_shard_size)
    if is_param_store(checkpoint):
        # Streamed: each tensor is read from the store when its turn comes (at most one shard is in memory).
        config, source = load_store_config(checkpoint), Path(checkpoint).resolve()
        flat: Mapping[str, Any] = StoreTensors(checkpoint)
    else:
        loaded = load_model(checkpoint, scan_layers=False)  # per-layer names, whatever the training layout
        config, source = loaded.config, Path(loaded.path)
        flat = flatten_params(nnx.state(loaded.model, nnx.Param))
    fmt = resolve_format(config, fmt)
    if config.model.ngrams.sizes:
        raise ConversionError(
            f"{checkpoint}: model.ngrams (hashed n-gram embeddings) has no counterpart in the {fmt} format; "
            "export a model trained without it"
        )
    if fmt == "hf":
        config_json = hf_llama_config(config, dtype, _special_ids(config, Path(checkpoint)))
        tensors = hf_llama_tensors
    else:
        config_json = released_config_json(config, dtype, runtime)
        tensors = released_tensors
    tokenizer = find_tokenizer(config, source)
    with staging_dir(out_dir, what="the export") as partial:
        writer = ShardedWriter(partial, max_bytes)
        for name, array in tensors(config, flat):
            writer.add(name, array.astype(DTYPES[dtype]))
        writer.close()
        (partial / "config.json").write_text(json.dumps(config_json, indent=2) + "\n")
        if tokenizer is not None:
            shutil.copyfile(tokenizer, partial / "tokenizer.json")
    return out_dir
