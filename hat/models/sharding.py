"""The one place where model parameters get their logical axis names.

Layers name each parameter axis with a logical name ("embed", "heads", "kv_heads", "head_dim", "mlp", "vocab");
a rules table elsewhere maps those names to mesh axes. Flax has renamed the metadata key that carries these names
several times (`sharding`, `sharding_names`, now `out_sharding`), so no other model file touches it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

Initializer = Callable[[jax.Array, Sequence[int], Any], jax.Array]


def make_param(
    rngs: nnx.Rngs,
    init_fn: Initializer,
    shape: Sequence[int],
    logical_axes: Sequence[str | None],
) -> nnx.Param:
    """A float32 `nnx.Param` initialised by `init_fn(key, shape, dtype)`, annotated with one logical name per axis."""
    if len(logical_axes) != len(shape):
        raise ValueError(f"parameter of shape {tuple(shape)} needs {len(shape)} logical axis names, got {logical_axes}")
    value = init_fn(rngs.params(), tuple(shape), jnp.float32)
    # Eager sharding would need a mesh at construction and mesh-axis names; logical names are resolved later.
    return nnx.Param(value, out_sharding=tuple(logical_axes), eager_sharding=False)


def logical_axes(tree: Any) -> Any:
    """The tree of `nnx.Param`s in `tree` (a module or state) mapped to their logical axis name tuples."""
    state = nnx.state(tree, nnx.Param) if isinstance(tree, nnx.Module) else tree
    return jax.tree.map(
        lambda v: v.get_metadata().get("out_sharding"),
        state,
        is_leaf=lambda x: isinstance(x, nnx.Variable),
    )
