"""GGUF files (llama.cpp's format) of Llama-family models as a conversion source.

    source = GGUFSource("SmolLM2-135M-Instruct.Q4_1.gguf")
    source.spec                                  # a `LlamaSpec` from the `llama.*` metadata
    source.weights.read("model.layers.0.self_attn.q_proj.weight")   # float32, Hugging Face name and layout

`GGUFSource.weights` looks like `hat.convert.safetensors_io.SafetensorsDir` (Hugging Face tensor names, PyTorch
`out x in` layout, float32), so `hat.convert.llama` converts a GGUF exactly as it converts safetensors. Three things
differ from a Hugging Face checkpoint:

- Names: `token_embd`, `blk.N.attn_q`, `ffn_gate`, `output_norm`, ... (llama.cpp's `gguf.TENSOR_NAMES`); a tied
  model has no `output.weight`.
- Quantisation: every tensor has a ggml type (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K and the others that
  `gguf.quants.dequantize` knows); a row is a whole number of blocks, so rows dequantise independently.
- Rope layout: llama.cpp's converter permutes the rows of q and k within each head, from Hugging Face's "two halves"
  rotary layout to interleaved pairs (`permute` in convert_hf_to_gguf.py: rows (head, 2, half) -> (head, half, 2),
  with the key-value head count for k). Reading undoes it exactly (a reshape and a transpose, no arithmetic).

Tensors are read with plain file reads, a block of rows at a time, never through a memory map of the file (whose
touched pages would stay resident): peak memory is one tensor (or one block of rows) in float32. The metadata is
parsed by the `gguf` package's reader, which maps the file but touches only its header.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hat.checkpoint.store import ConversionError
from hat.config import TransformerConfig
from hat.convert.llama import LlamaSpec

GGUF_MAGIC = b"GGUF"
SUPPORTED_ARCHITECTURES = ("llama",)

# Hugging Face Llama layer sub-names -> GGUF block sub-names (llama.cpp's tensor map for LLM_ARCH_LLAMA).
_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_GLOBAL_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def is_gguf(path: str | Path) -> bool:
    """Whether `path` is a file that starts with the GGUF magic."""
    path = Path(path)
    if not path.is_file():
        return False
    with path.open("rb") as handle:
        return handle.read(4) == GGUF_MAGIC


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class GGUFFile:
    """One GGUF file: its metadata (`metadata[key]`: numbers, strings, lists) and its tensor table, with tensors
    read as float32 in numpy order (ggml's `ne` reversed: `(rows, columns)` for a matrix)."""

    def __init__(self, path: str | Path) -> None:
        import gguf

        self.path = Path(path)
        if not is_gguf(self.path):
            raise ConversionError(f"{self.path} is not a GGUF file (it does not start with the GGUF magic)")
        try:
            reader = gguf.GGUFReader(self.path)
        except Exception as error:  # the reader raises ValueError, IndexError, struct errors ... on a damaged file
            raise ConversionError(f"{self.path} is not a readable GGUF file ({_first_line(error)})") from None
        if reader.byte_order != "I":
            raise ConversionError(f"{self.path}: big-endian GGUF files are not supported")
        self._gguf = gguf
        self.metadata: dict[str, Any] = {}
        for key, field in reader.fields.items():
            self.metadata[key] = field.contents()
        size = self.path.stat().st_size
        self.tensors: dict[str, tuple[Any, tuple[int, ...], int, int]] = {}
        for tensor in reader.tensors:
            shape = tuple(int(n) for n in reversed(tensor.shape.tolist()))
            end = int(tensor.data_offset) + int(tensor.n_bytes)
            if end > size:
                raise ConversionError(
                    f"{self.path} is truncated: tensor {tensor.name} needs bytes up to {end}, the file has {size}"
                )
            self.tensors[tensor.name] = (tensor.tensor_type, shape, int(tensor.data_offset), int(tensor.n_bytes))
        del reader  # closes the map before any tensor is read

    def get(self, key: str, default: Any = None) -> Any:
        """A metadata value, or `default` when the file does not have `key`."""
        return self.metadata.get(key, default)

    def require(self, key: str) -> Any:
        """A metadata value the conversion cannot do without."""
        if key not in self.metadata:
            raise ConversionError(f"{self.path}: metadata key {key!r} is missing")
        return self.metadata[key]

    def type_name(self, name: str) -> str:
        """The ggml type of tensor `name` (e.g. "Q4_K")."""
        return self.tensors[name][0].name

    def shape(self, name: str) -> tuple[int, ...]:
        """Tensor `name`'s shape in numpy order."""
        return self.tensors[name][1]

    def read_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows `start:stop` (first axis) of tensor `name`, dequantised to float32, reading only their bytes."""
        qtype, shape, offset, n_bytes = self.tensors[name]
        # A vector is one row.
        rows, row_shape = (shape[0], shape[1:]) if len(shape) > 1 else (1, shape)
        row_bytes = n_bytes // rows
        with self.path.open("rb") as handle:
            handle.seek(offset + start * row_bytes)
            raw = np.fromfile(handle, dtype=np.uint8, count=(stop - start) * row_bytes)
        try:
            values = self._gguf.quants.dequantize(raw.reshape(stop - start, row_bytes), qtype)
        except NotImplementedError:
            raise ConversionError(
                f"{self.path}: tensor {name} has ggml type {qtype.name}, which gguf cannot dequantise"
            ) from None
        return np.asarray(values, np.float32).reshape(stop - start, *row_shape)

    def read(self, name: str) -> np.ndarray:
        """Tensor `name` as float32."""
        shape = self.shape(name)
        return self.read_rows(name, 0, shape[0] if len(shape) > 1 else 1).reshape(shape)


def unpermute_rope_rows(weight_OxI: np.ndarray, heads: int) -> np.ndarray:
    """Undoes llama.cpp's q/k row permutation: within each head, rows (half, pair) -> (pair, half)."""
    out = weight_OxI.shape[0]
    return np.ascontiguousarray(
        weight_OxI.reshape(heads, out // heads // 2, 2, *weight_OxI.shape[1:]).swapaxes(1, 2).reshape(weight_OxI.shape)
    )


class GGUFWeights:
    """A GGUF's tensors under Hugging Face Llama names and layouts (the interface of `SafetensorsDir`)."""

    def __init__(self, file: GGUFFile, stack: TransformerConfig) -> None:
        self.file, self.stack = file, stack
        self.directory = file.path
        self.names_map = {hf: gg for hf, gg in _GLOBAL_NAMES.items() if gg in file.tensors}
        for index in range(stack.num_layers):
            for hf, gg in _LAYER_NAMES.items():
                if f"blk.{index}.{gg}" in file.tensors:
                    self.names_map[f"model.layers.{index}.{hf}"] = f"blk.{index}.{gg}"

    def names(self) -> list[str]:
        """Every tensor, by its Hugging Face name."""
        return list(self.names_map)

    def __contains__(self, name: str) -> bool:
        return name in self.names_map

    def shape(self, name: str) -> tuple[int, ...]:
        """The shape of `name` in PyTorch layout."""
        return self.file.shape(self.names_map[name])

    def read_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows `start:stop` of an unpermuted tensor (the vocabulary tables) as float32."""
        return self.file.read_rows(self.names_map[name], start, stop)

    def read(self, name: str) -> np.ndarray:
        """Tensor `name` as float32 in Hugging Face layout (q and k unpermuted)."""
        weight = self.file.read(self.names_map[name])
        if name.endswith("self_attn.q_proj.weight"):
            return unpermute_rope_rows(weight, self.stack.num_heads)
        if name.endswith("self_attn.k_proj.weight"):
            return unpermute_rope_rows(weight, self.stack.num_kv_heads)
        return weight


def _integer(file: GGUFFile, key: str, default: int | None = None) -> int:
    value = file.get(key, default) if default is not None else file.require(key)
    if isinstance(value, (list, tuple)):
        raise ConversionError(f"{file.path}: {key} varies per layer ({value[:4]}...), which hat does not support")
    return int(value)


def read_gguf_spec(file: GGUFFile) -> LlamaSpec:
    """The `LlamaSpec` of a Llama GGUF from its `llama.*` metadata; refuses what hat cannot reproduce, by name."""
    arch = file.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ConversionError(
            f"{file.path}: unsupported architecture general.architecture={arch!r} "
            f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
        )
    hidden = _integer(file, "llama.embedding_length")
    heads = _integer(file, "llama.attention.head_count")
    head_dim = _integer(file, "llama.attention.key_length", hidden // heads)
    if _integer(file, "llama.attention.value_length", head_dim) != head_dim:
        raise ConversionError(f"{file.path}: llama.attention.value_length differs from key_length")
    if _integer(file, "llama.rope.dimension_count", head_dim) != head_dim:
        raise ConversionError(
            f"{file.path}: llama.rope.dimension_count={file.get('llama.rope.dimension_count')} rotates part of each "
            f"head (head dim {head_dim}); hat rotates whole heads"
        )
    scaling = file.get("llama.rope.scaling.type", "none")
    if scaling not in ("none", "") or "rope_freqs.weight" in file.tensors:
        found = "rope_freqs.weight (per-frequency rope factors)" if scaling in ("none", "") else scaling
        raise ConversionError(f"{file.path}: unsupported rope scaling {found} (hat converts unscaled rope from GGUF)")
    num_layers = _integer(file, "llama.block_count")
    known = set(_GLOBAL_NAMES.values()) | {f"blk.{i}.{n}" for i in range(num_layers) for n in _LAYER_NAMES.values()}
    unknown = sorted(set(file.tensors) - known)
    if unknown:
        raise ConversionError(
            f"{file.path}: tensors hat's Llama has no place for, e.g. {', '.join(unknown[:3])} "
            "(biases, experts or other extras are not supported)"
        )
    if "token_embd.weight" not in file.tensors:
        raise ConversionError(f"{file.path}: tensor token_embd.weight is missing")
    stack = TransformerConfig(
        num_layers=num_layers,
        hidden_size=hidden,
        num_heads=heads,
        num_kv_heads=_integer(file, "llama.attention.head_count_kv", heads),
        head_dim=head_dim,
        mlp_hidden_size=_integer(file, "llama.feed_forward_length"),
        sliding_window=None,
        rope_theta=float(file.get("llama.rope.freq_base", 10000.0)),
        rope_scaling=None,
        norm_eps=float(file.require("llama.attention.layer_norm_rms_epsilon")),
    )
    vocab = file.shape("token_embd.weight")[0]
    special = {
        f"{role}_token_id": int(file.get(f"tokenizer.ggml.{role}_token_id"))
        for role in ("bos", "eos")
        if file.get(f"tokenizer.ggml.{role}_token_id") is not None
    }
    return LlamaSpec(stack, vocab, "output.weight" not in file.tensors, special)


class GGUFSource:
    """A Llama GGUF opened for `hat.convert.llama`: its spec, its weights under Hugging Face names, and figures
    worth keeping in the converted store's manifest."""

    def __init__(self, path: str | Path) -> None:
        self.file = GGUFFile(path)
        self.spec = read_gguf_spec(self.file)
        self.weights = GGUFWeights(self.file, self.spec.stack)

    def manifest_extra(self) -> dict[str, Any]:
        """The source's name, trained context and tensor types, for the store's manifest."""
        types: dict[str, int] = {}
        for name in self.file.tensors:
            types[self.file.type_name(name)] = types.get(self.file.type_name(name), 0) + 1
        extra: dict[str, Any] = {"gguf_tensor_types": types}
        for key, out in (("general.name", "gguf_name"), ("llama.context_length", "context_length")):
            if self.file.get(key) is not None:
                extra[out] = self.file.get(key)
        return extra
