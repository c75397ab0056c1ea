"""Hugging Face Llama-family checkpoints -> hat parameter stores.

    convert_llama(hf_dir, out_dir, to="lm")                 # flat token LM with the same logits
    convert_llama(hf_dir, out_dir, to="hat", base=config)   # HAT: the Llama's blocks as backbone, fresh encoder/decoder
    convert_llama("model.Q4_K_M.gguf", out_dir, to="lm")    # a llama.cpp GGUF file (`hat.convert.gguf`)

Aleph Alpha built their HAT models from Llama 3.1 this way: keep the transformer blocks, drop the token embedding
and the LM head, and train a byte encoder and decoder around them (arXiv 2501.10322). Tensors are streamed one at a
time from the safetensors files into the store, so peak host memory is about one tensor, not the model.

The source is a Hugging Face directory (config.json + safetensors) or a GGUF file, whose tensors are dequantised
one at a time and whose tokenizer metadata becomes the store's `tokenizer.json` (`hat.convert.gguf_tokenizer`).

Supported: `model_type: llama` with grouped-query attention, `head_dim`, RMSNorm epsilon, rope theta and
`rope_scaling` of type `llama3` (or none), tied or untied embeddings. Anything that changes the computation and
that hat does not implement (biases, other activations or rope types, sliding windows) is refused by name.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from flax import nnx
from tqdm import tqdm

from hat.checkpoint.store import ConversionError, ParamStoreWriter, flatten_params
from hat.config import Config, RopeScalingConfig, TransformerConfig
from hat.convert.layout import HeadShape, llama_layer_names, to_hat
from hat.convert.safetensors_io import SafetensorsDir
from hat.kinds import kind_of
from hat.kinds.hat_bytes import HatKind
from hat.models import build_model

SUPPORTED_MODEL_TYPES = ("llama",)
# Large tensors are converted in blocks of about this many elements (64 MiB in float32).
_BLOCK_ELEMENTS = 1 << 24


@dataclasses.dataclass(frozen=True)
class LlamaSpec:
    """What hat needs from a Llama `config.json`."""

    stack: TransformerConfig
    vocab_size: int
    tie_embeddings: bool
    # bos/eos token ids of the source, kept in the store's manifest so an export writes them back.
    special_ids: dict[str, Any] = dataclasses.field(default_factory=dict)


def _rope(hf: dict[str, Any], source: Path) -> tuple[float, RopeScalingConfig | None]:
    """Rope theta and scaling from either layout: `rope_theta` + `rope_scaling` (transformers 4) or
    `rope_parameters` (transformers 5)."""
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or params
    theta = float(hf.get("rope_theta", params.get("rope_theta", 10000.0)))
    rope_type = scaling.get("rope_type", scaling.get("type", "default")) if scaling else "default"
    if rope_type == "default":
        return theta, None
    if rope_type != "llama3":
        raise ConversionError(
            f"{source}: unsupported rope_scaling.rope_type {rope_type!r} (hat supports 'llama3' and no scaling)"
        )
    try:
        return theta, RopeScalingConfig(
            factor=float(scaling["factor"]),
            low_freq_factor=float(scaling["low_freq_factor"]),
            high_freq_factor=float(scaling["high_freq_factor"]),
            original_max_position_embeddings=int(scaling["original_max_position_embeddings"]),
        )
    except KeyError as error:
        raise ConversionError(f"{source}: rope_scaling of type llama3 lacks {error.args[0]!r}") from None


def read_llama_config(hf_dir: str | Path) -> LlamaSpec:
    """Parses and checks a Llama `config.json`; refuses fields hat cannot reproduce, naming them."""
    source = Path(hf_dir) / "config.json"
    if not source.is_file():
        raise ConversionError(f"no config.json in {hf_dir} (expected a Hugging Face model directory)")
    try:
        hf = json.loads(source.read_text())
    except json.JSONDecodeError as error:
        raise ConversionError(f"{source} is not valid JSON ({error})") from None
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConversionError(
            f"{source}: unsupported architecture model_type={model_type!r} "
            f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})"
        )
    for field, allowed in (("hidden_act", "silu"), ("attention_bias", False), ("mlp_bias", False)):
        if hf.get(field, allowed) != allowed:
            raise ConversionError(f"{source}: unsupported {field}={hf[field]!r} (hat supports {allowed!r})")
    for field in ("sliding_window", "layer_types", "quantization_config"):
        if hf.get(field):
            raise ConversionError(f"{source}: unsupported field {field}={hf[field]!r}")
    theta, scaling = _rope(hf, source)
    try:
        hidden, heads = int(hf["hidden_size"]), int(hf["num_attention_heads"])
        stack = TransformerConfig(
            num_layers=int(hf["num_hidden_layers"]),
            hidden_size=hidden,
            num_heads=heads,
            num_kv_heads=int(hf.get("num_key_value_heads") or heads),
            head_dim=int(hf.get("head_dim") or hidden // heads),
            mlp_hidden_size=int(hf["intermediate_size"]),
            sliding_window=None,
            rope_theta=theta,
            rope_scaling=scaling,
            norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        )
        special_ids = {key: hf.get(key) for key in ("bos_token_id", "eos_token_id") if key in hf}
        return LlamaSpec(stack, int(hf["vocab_size"]), bool(hf.get("tie_word_embeddings", False)), special_ids)
    except KeyError as error:
        raise ConversionError(f"{source}: missing required field {error.args[0]!r}") from None


@dataclasses.dataclass
class LlamaSource:
    """What a conversion reads: the spec, the tensors under Hugging Face names (float32, PyTorch layout), the
    tokenizer file for `--to lm` (or how to write one) and figures for the store's manifest."""

    spec: LlamaSpec
    weights: Any
    write_tokenizer: Callable[[Path], None]  # writes tokenizer.json at the path given, when the source has one
    extra: dict[str, Any]


def open_llama_source(path: str | Path) -> LlamaSource:
    """A Hugging Face Llama directory or a Llama GGUF file, opened for conversion."""
    path = Path(path)
    if path.is_file():
        from hat.convert.gguf import GGUFSource  # the GGUF reader imports LlamaSpec from this module
        from hat.convert.gguf_tokenizer import write_gguf_tokenizer

        gguf = GGUFSource(path)
        return LlamaSource(
            gguf.spec, gguf.weights, lambda target: write_gguf_tokenizer(gguf.file, target), gguf.manifest_extra()
        )

    def copy_tokenizer(target: Path) -> None:
        if (path / "tokenizer.json").is_file():
            shutil.copyfile(path / "tokenizer.json", target)

    return LlamaSource(read_llama_config(path), SafetensorsDir(path), copy_tokenizer, {})


def lm_config(spec: LlamaSpec, base: Config | None = None) -> Config:
    """A run config for the flat token LM with the Llama's exact architecture."""
    base = base or Config()
    model = dataclasses.replace(
        base.model,
        kind="token_lm",
        vocab_size=spec.vocab_size,
        backbone=spec.stack,
        tie_embeddings=spec.tie_embeddings,
        scan_layers=False,
    )
    bpe = dataclasses.replace(base.data.bpe, vocab_size=spec.vocab_size)
    data = dataclasses.replace(base.data, format="bpe", bpe=bpe)
    return dataclasses.replace(base, model=model, data=data)


def hat_config(spec: LlamaSpec, base: Config) -> Config:
    """`base` (a HAT run config: encoder, pooling, decoder sizes) with the Llama's blocks as its backbone."""
    if not isinstance(kind_of(base), HatKind):
        raise ConversionError(f"--to hat needs a HAT config (model.kind: hat), got kind {base.model.kind!r}")
    model = dataclasses.replace(base.model, backbone=spec.stack, scan_layers=False)
    return dataclasses.replace(base, model=model)


def _layer_tensors(
    weights: SafetensorsDir, hf_prefix: str, hat_prefix: str, stack: TransformerConfig
) -> Iterator[tuple[str, np.ndarray]]:
    shape = HeadShape.of(stack)
    for index in range(stack.num_layers):
        for hf_name, (hat_name, role) in llama_layer_names().items():
            yield f"{hat_prefix}{index}.{hat_name}", to_hat(role, weights.read(f"{hf_prefix}{index}.{hf_name}"), shape)


def _check_shapes(weights: SafetensorsDir, spec: LlamaSpec, with_head: bool) -> None:
    """Compares every tensor the conversion reads against config.json before anything is written."""
    stack, hd = spec.stack, spec.stack.resolved_head_dim
    dim, mlp = stack.hidden_size, stack.mlp_hidden_size
    expected = {
        "self_attn.q_proj.weight": (stack.num_heads * hd, dim),
        "self_attn.k_proj.weight": (stack.num_kv_heads * hd, dim),
        "self_attn.v_proj.weight": (stack.num_kv_heads * hd, dim),
        "self_attn.o_proj.weight": (dim, stack.num_heads * hd),
        "mlp.gate_proj.weight": (mlp, dim),
        "mlp.up_proj.weight": (mlp, dim),
        "mlp.down_proj.weight": (dim, mlp),
        "input_layernorm.weight": (dim,),
        "post_attention_layernorm.weight": (dim,),
    }
    needed = {f"model.layers.{i}.{name}": shape for i in range(stack.num_layers) for name, shape in expected.items()}
    if with_head:
        needed |= {"model.embed_tokens.weight": (spec.vocab_size, dim), "model.norm.weight": (dim,)}
        if not spec.tie_embeddings:
            needed["lm_head.weight"] = (spec.vocab_size, dim)
    for name, shape in needed.items():
        if name not in weights:
            raise ConversionError(f"tensor {name} is missing from {weights.directory}")
        if weights.shape(name) != shape:
            raise ConversionError(f"tensor {name} has shape {weights.shape(name)} but config.json implies {shape}")


def convert_llama(
    hf_dir: str | Path,
    out_dir: str | Path,
    to: Literal["lm", "hat"] = "lm",
    base: Config | None = None,
    progress: bool = False,
) -> Path:
    """Converts a Hugging Face Llama directory or GGUF file into a hat parameter store at `out_dir`; returns its path.

    `to="lm"`: a flat token LM with identical logits (`tokenizer.json` is copied when present, or written from a
    GGUF's tokenizer metadata).
    `to="hat"`: a HAT built from `base` (required) whose backbone is the Llama's blocks; the encoder, pooling,
    decoder and head are freshly initialised from `base.seed`. The Llama's embedding, final norm and LM head are
    not used.
    """
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    if out_dir.exists():
        raise ConversionError(f"output directory already exists: {out_dir} (choose a new path or delete it)")
    source = open_llama_source(hf_dir)
    spec, weights = source.spec, source.weights
    _check_shapes(weights, spec, with_head=to == "lm")
    if to == "lm":
        config = lm_config(spec, base)
    elif to == "hat":
        if base is None:
            raise ConversionError("--to hat needs a HAT config for the encoder and decoder (--config FILE)")
        config = hat_config(spec, base)
    else:
        raise ConversionError(f"unknown target {to!r}; expected 'lm' or 'hat'")

    with ParamStoreWriter(out_dir, config) as writer:
        if to == "lm":  # first: a tokenizer the source cannot give fails before any tensor is converted
            source.write_tokenizer(writer.partial_dir / "tokenizer.json")
        total_bytes = sum(4 * int(np.prod(shape)) for shape in writer.expected.values())
        bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="converting", disable=not progress)

        def write(name: str, array: np.ndarray) -> None:
            writer.write(name, array)
            bar.update(4 * array.size)

        if to == "lm":
            # The vocabulary tables are the largest tensors (2 GB each in float32 for Llama 3 8B): stream them in
            # blocks of rows, so that peak memory is one block.
            vocab, dim = spec.vocab_size, spec.stack.hidden_size
            rows = max(1, _BLOCK_ELEMENTS // dim)
            embed_blocks = _row_blocks(weights, "model.embed_tokens.weight", vocab, rows, transpose=False)
            writer.write_blocks("embedding_layer", (vocab, dim), (rows, dim), _counted(embed_blocks, bar))
            write("layer_norm.scale", weights.read("model.norm.weight"))
            if not spec.tie_embeddings:
                head_blocks = _row_blocks(weights, "lm_head.weight", vocab, rows, transpose=True)
                writer.write_blocks("lm_head", (dim, vocab), (dim, rows), _counted(head_blocks, bar))
        else:
            for name, array in _fresh_hat_parts(config):
                write(name, array)
        for name, array in _layer_tensors(weights, "model.layers.", "backbone.layers.", spec.stack):
            write(name, array)
        bar.close()
        extra = {"source": str(hf_dir.resolve()), "converted_to": to} | source.extra
        return writer.finalize(extra | (spec.special_ids if to == "lm" else {}))


def _row_blocks(
    weights: SafetensorsDir, name: str, total: int, rows: int, transpose: bool
) -> Iterator[tuple[tuple, np.ndarray]]:
    """Blocks of `rows` rows of a (total x width) tensor with their target index; transposed: as column blocks of
    its (width x total) transpose (PyTorch `out x in` -> hat `in x out`)."""
    for start in range(0, total, rows):
        stop = min(start + rows, total)
        block = weights.read_rows(name, start, stop)
        yield ((slice(None), slice(start, stop)), block.T) if transpose else ((slice(start, stop),), block)


def _counted(blocks: Iterator[tuple[tuple, np.ndarray]], bar: tqdm) -> Iterator[tuple[tuple, np.ndarray]]:
    for index, block in blocks:
        yield index, block
        bar.update(4 * block.size)


def _fresh_hat_parts(config: Config) -> Iterator[tuple[str, np.ndarray]]:
    """Every HAT parameter outside the backbone, initialised from `config.seed` (built without backbone layers,
    so an 8B backbone is never allocated)."""
    small = dataclasses.replace(
        config.model, backbone=dataclasses.replace(config.model.backbone, num_layers=0), scan_layers=False
    )
    model = build_model(small, rngs=nnx.Rngs(config.seed))
    for name, value in flatten_params(nnx.state(model, nnx.Param)).items():
        if not name.startswith("backbone."):
            yield name, np.asarray(value)
