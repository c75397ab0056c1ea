"""The one place where model code meets sharding: logical axis names and the rules that map them to a mesh.

Layers name each parameter axis logically ("embed", "heads", "kv_heads", "head_dim", "mlp", "vocab", and "layers"
for scanned stacks) and constrain a few activations ("act_batch", "act_length", "act_embed", "act_heads",
"act_mlp", "act_vocab"). `ShardingRules` maps those names to mesh axes through one table (`parallel.rules` in the
config, MaxText style). Flax has renamed the metadata key that carries parameter names several times (`sharding`,
`sharding_names`, now `out_sharding`), so no other file touches it.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

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


@dataclass(frozen=True)
class ShardingRules:
    """Logical axis names -> mesh axes on one mesh.

    `rules[name]` lists the mesh axes that shard an axis called `name` (empty or missing: replicated);
    `part_rules[part]` overrides them for parameters under the top-level module `part`. A mesh axis that does not
    divide the dimension, or that an earlier dimension of the same array already uses, is dropped for that
    dimension, so any model runs on any mesh (possibly with less sharding than asked; `unsharded` lists where).
    """

    mesh: Mesh
    rules: Mapping[str, Sequence[str]]
    part_rules: Mapping[str, Mapping[str, Sequence[str]]] = field(default_factory=dict)

    def spec(self, names: Sequence[str | None], shape: Sequence[int], part: str | None = None) -> PartitionSpec:
        """The partition spec of an array of `shape` whose axes are called `names`."""
        return self._resolve(names, shape, part)[0]

    def _resolve(
        self, names: Sequence[str | None], shape: Sequence[int], part: str | None
    ) -> tuple[PartitionSpec, list[str]]:
        table = dict(self.rules) | dict(self.part_rules.get(part, {}) if part else {})
        used: set[str] = set()
        dims, dropped = [], []
        for name, size in zip(names, shape, strict=True):
            axes = []
            for axis in table.get(name, ()) if name else ():
                axis_size = self.mesh.shape[axis]
                if axis_size == 1 or axis in used:
                    continue
                if size % (axis_size * _product(self.mesh.shape[a] for a in axes)):
                    dropped.append(f"{name}({size})/{axis}({axis_size})")
                    continue
                axes.append(axis)
            used.update(axes)
            dims.append(tuple(axes) if len(axes) > 1 else (axes[0] if axes else None))
        return PartitionSpec(*dims), dropped

    def param_shardings(self, abstract_params: nnx.State) -> nnx.State:
        """A `NamedSharding` for every parameter of `abstract_params` (a state of `nnx.Param`s)."""

        def sharding(path: tuple, variable: nnx.Variable) -> NamedSharding:
            shape = variable.get_value().shape
            names = variable.get_metadata().get("out_sharding") or (None,) * len(shape)
            spec, _ = self._resolve(names, shape, str(path[0]))
            return NamedSharding(self.mesh, spec)

        return jax.tree.map_with_path(
            lambda path, v: sharding(tuple(getattr(k, "key", k) for k in path), v),
            abstract_params,
            is_leaf=lambda x: isinstance(x, nnx.Variable),
        )

    def unsharded(self, abstract_params: nnx.State) -> list[str]:
        """Parameters whose rules asked for a mesh axis that their shape could not take (`path: name(size)/axis`)."""
        report = []
        for path, variable in nnx.to_flat_state(abstract_params):
            shape = variable.get_value().shape
            names = variable.get_metadata().get("out_sharding") or (None,) * len(shape)
            _, dropped = self._resolve(names, shape, str(path[0]))
            if dropped:
                report.append(f"{'.'.join(map(str, path))}: {', '.join(dropped)}")
        return report

    def named(self, names: Sequence[str | None], shape: Sequence[int]) -> NamedSharding:
        """A `NamedSharding` for an activation or batch array."""
        return NamedSharding(self.mesh, self.spec(names, shape))


def _product(values: Any) -> int:
    out = 1
    for value in values:
        out *= value
    return out


_ACTIVE_RULES: contextvars.ContextVar[ShardingRules | None] = contextvars.ContextVar("hat_rules", default=None)


@contextlib.contextmanager
def activation_sharding(rules: ShardingRules | None) -> Iterator[None]:
    """Within this context (while a step is traced), `constrain` pins activations to `rules`."""
    token = _ACTIVE_RULES.set(rules)
    try:
        yield
    finally:
        _ACTIVE_RULES.reset(token)


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """`x` with a sharding constraint from its logical axis names; the identity outside `activation_sharding`."""
    rules = _ACTIVE_RULES.get()
    if rules is None:
        return x
    return jax.lax.with_sharding_constraint(x, rules.named(names, x.shape))


def gathered_table(table: nnx.Param) -> jax.Array:
    """An embedding table gathered whole on every device before a lookup (FSDP all-gathers weights for use
    anyway): a lookup into a table split along its width would make XLA replicate the looked-up activations."""
    return constrain(table[...], (None, None))
