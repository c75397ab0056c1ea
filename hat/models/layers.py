"""Llama building blocks: RMSNorm, RoPE, grouped-query attention, SwiGLU, the decoder layer and a layer stack.

Parameters are float32; activations and matmuls run in the model's compute dtype; norms and the attention softmax
run in float32. Projection kernels keep heads as their own axis (`embed x heads x head_dim`) so that a sharding
rule can split heads without reshapes. Positions are explicit arrays, because HAT rotates queries and keys at
positions of different kinds (word index and byte index).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from hat.config import RopeScalingConfig, TransformerConfig
from hat.models.attention import CausalMask, attend
from hat.models.kv_cache import KVCache, attend_cached, cache_slots
from hat.models.sharding import constrain, make_param

INIT_STD = 0.02
# Logical names of activation axes (see hat.models.sharding).
ACT_BxTxD = ("act_batch", "act_length", "act_embed")
_HEADS = ("act_batch", "act_length", "act_heads", None)
_KV_HEADS = ("act_batch", "act_length", "act_kv_heads", None)
_MLP = ("act_batch", "act_length", "act_mlp")


def normal_init(std: float) -> nnx.Initializer:
    """A zero-mean normal initializer with standard deviation `std`."""
    return nnx.initializers.normal(std)


def fan_in_init(fan_in: int) -> nnx.Initializer:
    """Variance-preserving init (std 1/sqrt(fan_in)): the output has the scale of the input."""
    return normal_init(1.0 / math.sqrt(fan_in))


def output_init(num_layers: int) -> nnx.Initializer:
    """Init for projections that write into the residual stream, scaled down with depth (GPT-2 style)."""
    return normal_init(INIT_STD / math.sqrt(2 * max(num_layers, 1)))


def cast(param: nnx.Param, dtype: jnp.dtype) -> jax.Array:
    """The parameter's value in the compute dtype."""
    return param[...].astype(dtype)


class RMSNorm(nnx.Module):
    """Root-mean-square norm with a learned scale, returned in the input dtype.

    Computed in float32 unless `upcast` is False: then every step runs in the input dtype, the scale cast to it
    (the released TFree-HAT runtime's bfloat16 norms, `TransformerConfig.norm_dtype: compute`).
    """

    def __init__(self, dim: int, *, eps: float, rngs: nnx.Rngs, axis_name: str = "embed", upcast: bool = True):
        self.eps = eps
        self.upcast = upcast
        self.scale = make_param(rngs, nnx.initializers.ones, (dim,), (axis_name,))

    def __call__(self, x_BxTxD: jax.Array) -> jax.Array:
        x = x_BxTxD.astype(jnp.float32) if self.upcast else x_BxTxD
        # Accumulated in float32 and rounded once, as torch reduces a bfloat16 tensor (jnp.mean(dtype=bfloat16)
        # would round the sum before dividing).
        mean_square = jnp.mean(x * x, axis=-1, keepdims=True, dtype=jnp.float32).astype(x.dtype)
        normed = x * jax.lax.rsqrt(mean_square + jnp.asarray(self.eps, x.dtype))
        return (normed * self.scale[...].astype(x.dtype)).astype(x_BxTxD.dtype)


def upcast_norms(cfg: TransformerConfig) -> bool:
    """Whether the stack's norms compute in float32 (`norm_dtype`)."""
    return cfg.norm_dtype == "float32"


def rope_frequencies(head_dim: int, theta: float, scaling: RopeScalingConfig | None = None) -> jax.Array:
    """Inverse frequencies (H/2,) of RoPE, with Llama 3.x scaling when `scaling` is given (as in HF)."""
    inv_freq_K = 1.0 / theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
    if scaling is None:
        return inv_freq_K
    wavelength_K = 2 * math.pi / inv_freq_K
    old_context = scaling.original_max_position_embeddings
    low_freq_wavelength = old_context / scaling.low_freq_factor
    high_freq_wavelength = old_context / scaling.high_freq_factor
    stretched_K = jnp.where(wavelength_K > low_freq_wavelength, inv_freq_K / scaling.factor, inv_freq_K)
    smooth_K = (old_context / wavelength_K - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    smoothed_K = (1 - smooth_K) * stretched_K / scaling.factor + smooth_K * stretched_K
    in_band_K = (wavelength_K >= high_freq_wavelength) & (wavelength_K <= low_freq_wavelength)
    return jnp.where(in_band_K, smoothed_K, stretched_K)


def apply_rope(
    x_BxTxNxH: jax.Array, positions_BxT: jax.Array, theta: float, scaling: RopeScalingConfig | None = None
) -> jax.Array:
    """Rotary position embedding in the Llama/HF "rotate half" layout (pairs are (i, i + H/2)).

    `positions_BxT` may hold any integer positions (byte index, word index), one per query or key.
    """
    head_dim = x_BxTxNxH.shape[-1]
    inv_freq_K = rope_frequencies(head_dim, theta, scaling)
    angles_BxTxK = positions_BxT.astype(jnp.float32)[..., None] * inv_freq_K
    angles_BxTx1xH = jnp.concatenate([angles_BxTxK, angles_BxTxK], axis=-1)[..., None, :]
    x32 = x_BxTxNxH.astype(jnp.float32)
    x1, x2 = jnp.split(x32, 2, axis=-1)
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    out = x32 * jnp.cos(angles_BxTx1xH) + rotated * jnp.sin(angles_BxTx1xH)
    return out.astype(x_BxTxNxH.dtype)


class Attention(nnx.Module):
    """Causal grouped-query self-attention with RoPE, optional per-head QK-norm and optional sliding window.

    With `sliding_window = w`, a position attends to itself and the `w - 1` positions before it (the HF/Mistral
    convention; cuDNN's `sliding_window_length`).
    """

    def __init__(self, cfg: TransformerConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        dim, heads, kv_heads, head_dim = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.resolved_head_dim
        self.dtype = dtype
        self.rope_theta = cfg.rope_theta
        self.rope_scaling = cfg.rope_scaling
        self.sliding_window = cfg.sliding_window
        init = normal_init(INIT_STD)
        self.q_proj = make_param(rngs, init, (dim, heads, head_dim), ("embed", "heads", "head_dim"))
        self.k_proj = make_param(rngs, init, (dim, kv_heads, head_dim), ("embed", "kv_heads", "head_dim"))
        self.v_proj = make_param(rngs, init, (dim, kv_heads, head_dim), ("embed", "kv_heads", "head_dim"))
        self.o_proj = make_param(
            rngs, output_init(cfg.num_layers), (heads, head_dim, dim), ("heads", "head_dim", "embed")
        )
        if cfg.qk_norm:
            upcast = upcast_norms(cfg)
            self.q_norm = RMSNorm(head_dim, eps=cfg.norm_eps, rngs=rngs, axis_name="head_dim", upcast=upcast)
            self.k_norm = RMSNorm(head_dim, eps=cfg.norm_eps, rngs=rngs, axis_name="head_dim", upcast=upcast)
        else:
            self.q_norm = self.k_norm = None

    def init_cache(self, batch: int, capacity: int, recompute: int = 0) -> KVCache:
        """An empty cache for contexts of up to `capacity` positions (see `cache_slots` for `recompute`)."""
        kv_heads, head_dim = self.k_proj.shape[1:]
        slots = cache_slots(self.sliding_window, capacity, recompute)
        return KVCache.init(batch, slots, kv_heads, head_dim, self.dtype)

    def __call__(
        self, x_BxTxD: jax.Array, positions_BxT: jax.Array, cache: KVCache | None = None
    ) -> jax.Array | tuple[jax.Array, KVCache]:
        """Attention output; with a cache, `(output, updated cache)` for a chunk of new positions (see
        `hat.models.kv_cache`: negative positions are padding)."""
        q_BxTxNxH = jnp.einsum("btd,dnh->btnh", x_BxTxD, cast(self.q_proj, self.dtype))
        k_BxTxKxH = jnp.einsum("btd,dkh->btkh", x_BxTxD, cast(self.k_proj, self.dtype))
        v_BxTxKxH = jnp.einsum("btd,dkh->btkh", x_BxTxD, cast(self.v_proj, self.dtype))
        if self.q_norm is not None:
            q_BxTxNxH, k_BxTxKxH = self.q_norm(q_BxTxNxH), self.k_norm(k_BxTxKxH)
        q_BxTxNxH = constrain(apply_rope(q_BxTxNxH, positions_BxT, self.rope_theta, self.rope_scaling), _HEADS)
        k_BxTxKxH = constrain(apply_rope(k_BxTxKxH, positions_BxT, self.rope_theta, self.rope_scaling), _KV_HEADS)
        v_BxTxKxH = constrain(v_BxTxKxH, _KV_HEADS)
        if cache is None:
            out_BxTxNxH = attend(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, CausalMask(self.sliding_window))
        else:
            out_BxTxNxH, cache = attend_cached(
                q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, positions_BxT, cache, self.sliding_window
            )
        out_BxTxD = jnp.einsum("btnh,nhd->btd", out_BxTxNxH, cast(self.o_proj, self.dtype))
        return out_BxTxD if cache is None else (out_BxTxD, cache)


class MLP(nnx.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: TransformerConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        dim, hidden = cfg.hidden_size, cfg.mlp_hidden_size
        self.dtype = dtype
        init = normal_init(INIT_STD)
        self.gate_proj = make_param(rngs, init, (dim, hidden), ("embed", "mlp"))
        self.up_proj = make_param(rngs, init, (dim, hidden), ("embed", "mlp"))
        self.down_proj = make_param(rngs, output_init(cfg.num_layers), (hidden, dim), ("mlp", "embed"))

    def __call__(self, x_BxTxD: jax.Array) -> jax.Array:
        gate_BxTxF = constrain(x_BxTxD @ cast(self.gate_proj, self.dtype), _MLP)
        up_BxTxF = constrain(x_BxTxD @ cast(self.up_proj, self.dtype), _MLP)
        return (jax.nn.silu(gate_BxTxF) * up_BxTxF) @ cast(self.down_proj, self.dtype)


class DecoderLayer(nnx.Module):
    """One pre-norm Llama layer: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: TransformerConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.input_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.norm_eps, rngs=rngs, upcast=upcast_norms(cfg))
        self.self_attn = Attention(cfg, dtype=dtype, rngs=rngs)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.norm_eps, rngs=rngs, upcast=upcast_norms(cfg))
        self.mlp = MLP(cfg, dtype=dtype, rngs=rngs)

    def init_cache(self, batch: int, capacity: int, recompute: int = 0) -> KVCache:
        """An empty cache for the layer's attention (see `Attention.init_cache`)."""
        return self.self_attn.init_cache(batch, capacity, recompute)

    def __call__(
        self, x_BxTxD: jax.Array, positions_BxT: jax.Array, cache: KVCache | None = None
    ) -> jax.Array | tuple[jax.Array, KVCache]:
        """The layer's output; with a cache, `(output, updated cache)` (see `Attention.__call__`)."""
        normed_BxTxD = self.input_layernorm(x_BxTxD)
        if cache is None:
            attn_BxTxD = self.self_attn(normed_BxTxD, positions_BxT)
        else:
            attn_BxTxD, cache = self.self_attn(normed_BxTxD, positions_BxT, cache)
        x_BxTxD = constrain(x_BxTxD + attn_BxTxD, ACT_BxTxD)
        x_BxTxD = constrain(x_BxTxD + self.mlp(self.post_attention_layernorm(x_BxTxD)), ACT_BxTxD)
        return x_BxTxD if cache is None else (x_BxTxD, cache)


def make_layers(cfg: TransformerConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs) -> nnx.List:
    """`cfg.num_layers` Llama layers (parameter paths `layers.0`, `layers.1`, ... as in HF and released HAT)."""
    return nnx.List([DecoderLayer(cfg, dtype=dtype, rngs=rngs) for _ in range(cfg.num_layers)])


REMAT_POLICIES: dict[str, Callable[..., bool] | None] = {
    "full": None,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def call_layer(layer: nnx.Module, remat: str, *args: jax.Array) -> jax.Array:
    """`layer(*args)`; unless `remat == "none"`, rematerialised in the backward pass under that policy."""
    if remat == "none":
        return layer(*args)
    return nnx.remat(lambda module, *inputs: module(*inputs), policy=REMAT_POLICIES[remat])(layer, *args)


def run_layers(layers: Sequence[nnx.Module], x_BxTxD: jax.Array, positions_BxT: jax.Array, *, remat: str) -> jax.Array:
    """Applies the layers in order."""
    for layer in layers:
        x_BxTxD = call_layer(layer, remat, x_BxTxD, positions_BxT)
    return x_BxTxD


def make_stacked_layers(cfg: TransformerConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs) -> DecoderLayer:
    """One `DecoderLayer` whose parameters carry a leading axis of `cfg.num_layers` (logical name "layers")."""

    @nnx.split_rngs(splits=cfg.num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def create(layer_rngs: nnx.Rngs) -> DecoderLayer:
        return DecoderLayer(cfg, dtype=dtype, rngs=layer_rngs)

    return create(rngs)


def scan_layers(stacked: DecoderLayer, x_BxTxD: jax.Array, positions_BxT: jax.Array, *, remat: str) -> jax.Array:
    """Runs stacked layers with `jax.lax.scan`: one layer is traced and compiled whatever the depth."""
    graphdef, state_L = nnx.split(stacked)

    def body(x: jax.Array, layer_state: nnx.State) -> tuple[jax.Array, None]:
        return nnx.merge(graphdef, layer_state)(x, positions_BxT), None

    if remat != "none":
        body = jax.checkpoint(body, policy=REMAT_POLICIES[remat], prevent_cse=False)
    x_BxTxD, _ = jax.lax.scan(body, x_BxTxD, state_L)
    return x_BxTxD


class LlamaStack(nnx.Module):
    """A stack of Llama layers without embedding, final norm or head (the HAT backbone).

    With `scan`, `layers` is one `DecoderLayer` with stacked parameters run by `jax.lax.scan`; otherwise a list.
    """

    def __init__(self, cfg: TransformerConfig, *, dtype: jnp.dtype, remat: str, scan: bool, rngs: nnx.Rngs):
        self.remat = remat
        self.scan = scan
        if scan:
            self.layers = make_stacked_layers(cfg, dtype=dtype, rngs=rngs)
        else:
            self.layers = make_layers(cfg, dtype=dtype, rngs=rngs)

    def __call__(self, x_BxTxD: jax.Array, positions_BxT: jax.Array) -> jax.Array:
        x_BxTxD = constrain(x_BxTxD, ACT_BxTxD)
        if self.scan:
            return scan_layers(self.layers, x_BxTxD, positions_BxT, remat=self.remat)
        return run_layers(self.layers, x_BxTxD, positions_BxT, remat=self.remat)


def stack_layer_states(layer_states: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pure-dict parameters of `layers.0 .. layers.L-1` -> one pure dict with a leading layer axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *layer_states)


def unstack_layer_state(stacked: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """The inverse of `stack_layer_states`: `{0: layer 0's pure dict, 1: ...}`."""
    num_layers = jax.tree.leaves(stacked)[0].shape[0]
    return {index: jax.tree.map(lambda x, i=index: x[i], stacked) for index in range(num_layers)}
