"""Tensor layouts: PyTorch `nn.Linear` weights (`out x in`, heads flattened) <-> hat kernels (`in x out`, heads as
their own axis), and the Llama layer's parameter names on both sides.

Every Llama layer (HF `LlamaDecoderLayer`, the released HAT's encoder / backbone / decoder layers) has the same
sub-names, so one table serves the flat LM, the HAT backbone and the released HAT format.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hat.config import TransformerConfig


@dataclass(frozen=True)
class HeadShape:
    """Attention geometry of one stack: query heads, key/value heads, head dim."""

    heads: int
    kv_heads: int
    head_dim: int

    @classmethod
    def of(cls, stack: TransformerConfig) -> HeadShape:
        """The self-attention geometry of a Llama stack."""
        return cls(stack.num_heads, stack.num_kv_heads, stack.resolved_head_dim)


def linear_to_kernel(weight_OxI: np.ndarray) -> np.ndarray:
    """`nn.Linear.weight` (out x in) -> a dense kernel (in x out)."""
    return np.ascontiguousarray(weight_OxI.T)


def kernel_to_linear(kernel_IxO: np.ndarray) -> np.ndarray:
    """A dense kernel (in x out) -> `nn.Linear.weight` (out x in)."""
    return np.ascontiguousarray(kernel_IxO.T)


def linear_to_in_proj(weight_NHxD: np.ndarray, heads: int) -> np.ndarray:
    """q/k/v `nn.Linear.weight` (heads*head_dim x in) -> hat kernel (in x heads x head_dim)."""
    out, dim = weight_NHxD.shape
    return np.ascontiguousarray(weight_NHxD.T.reshape(dim, heads, out // heads))


def in_proj_to_linear(kernel_DxNxH: np.ndarray) -> np.ndarray:
    """hat kernel (in x heads x head_dim) -> `nn.Linear.weight` (heads*head_dim x in)."""
    dim = kernel_DxNxH.shape[0]
    return np.ascontiguousarray(kernel_DxNxH.reshape(dim, -1).T)


def linear_to_out_proj(weight_DxNH: np.ndarray, heads: int) -> np.ndarray:
    """o `nn.Linear.weight` (out x heads*head_dim) -> hat kernel (heads x head_dim x out)."""
    dim, inner = weight_DxNH.shape
    return np.ascontiguousarray(weight_DxNH.T.reshape(heads, inner // heads, dim))


def out_proj_to_linear(kernel_NxHxD: np.ndarray) -> np.ndarray:
    """hat kernel (heads x head_dim x out) -> `nn.Linear.weight` (out x heads*head_dim)."""
    return np.ascontiguousarray(kernel_NxHxD.reshape(-1, kernel_NxHxD.shape[-1]).T)


# Llama layer: PyTorch sub-name -> (hat sub-name, role). Roles: "q"/"kv" in-projections, "o" out-projection,
# "dense" (plain transpose), "norm" (vector, `weight` -> `scale`).
LLAMA_LAYER = {
    "input_layernorm.weight": ("input_layernorm.scale", "norm"),
    "self_attn.q_proj.weight": ("self_attn.q_proj", "q"),
    "self_attn.k_proj.weight": ("self_attn.k_proj", "kv"),
    "self_attn.v_proj.weight": ("self_attn.v_proj", "kv"),
    "self_attn.o_proj.weight": ("self_attn.o_proj", "o"),
    "post_attention_layernorm.weight": ("post_attention_layernorm.scale", "norm"),
    "mlp.gate_proj.weight": ("mlp.gate_proj", "dense"),
    "mlp.up_proj.weight": ("mlp.up_proj", "dense"),
    "mlp.down_proj.weight": ("mlp.down_proj", "dense"),
}
# With per-head QK-norm (released HAT `key_query_norm`): extra vectors per layer.
LLAMA_LAYER_QK_NORM = {
    "self_attn.q_norm.weight": ("self_attn.q_norm.scale", "norm"),
    "self_attn.k_norm.weight": ("self_attn.k_norm.scale", "norm"),
}


def to_hat(role: str, weight: np.ndarray, shape: HeadShape) -> np.ndarray:
    """One PyTorch-layout tensor -> its hat layout (attention projections must match `shape`'s geometry)."""
    if role in ("q", "kv", "o"):
        heads = shape.kv_heads if role == "kv" else shape.heads
        inner = weight.shape[1] if role == "o" else weight.shape[0]
        if inner != heads * shape.head_dim:
            raise ValueError(
                f"{role} projection of shape {tuple(weight.shape)} does not hold {heads} heads x {shape.head_dim}"
            )
    if role == "q":
        return linear_to_in_proj(weight, shape.heads)
    if role == "kv":
        return linear_to_in_proj(weight, shape.kv_heads)
    if role == "o":
        return linear_to_out_proj(weight, shape.heads)
    if role == "dense":
        return linear_to_kernel(weight)
    if role in ("norm", "copy"):
        return np.asarray(weight)
    raise ValueError(f"unknown tensor role {role!r}")


def to_torch(role: str, kernel: np.ndarray) -> np.ndarray:
    """One hat tensor -> its PyTorch layout (the inverse of `to_hat`)."""
    if role in ("q", "kv"):
        return in_proj_to_linear(kernel)
    if role == "o":
        return out_proj_to_linear(kernel)
    if role == "dense":
        return kernel_to_linear(kernel)
    if role in ("norm", "copy"):
        return np.asarray(kernel)
    raise ValueError(f"unknown tensor role {role!r}")


def llama_layer_names(qk_norm: bool = False) -> dict[str, tuple[str, str]]:
    """The Llama layer table, with the QK-norm entries when the stack has them."""
    return LLAMA_LAYER | (LLAMA_LAYER_QK_NORM if qk_norm else {})
