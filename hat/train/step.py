"""The optimizer and the jitted train / eval steps, written as pure functions of (params, optimizer state, batch).

The NNX module is split once into a static graph definition and a parameter pytree; each step merges them inside
`jax.jit`, which keeps Python-side object handling out of the hot loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from hat.config import ConfigError, TrainConfig
from hat.models.objective import LN2, Batch, forward_fn, loss_sums, token_losses
from hat.models.sharding import ShardingRules, activation_sharding, constrain


def learning_rate_schedule(cfg: TrainConfig) -> optax.Schedule:
    """Linear warmup to the peak, then cosine decay to `min_lr_ratio` of it at the last step."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.learning_rate,
        warmup_steps=min(cfg.warmup_steps, max(cfg.steps - 1, 0)),
        decay_steps=max(cfg.steps, cfg.warmup_steps + 1),
        end_value=cfg.learning_rate * cfg.min_lr_ratio,
    )


def make_optimizer(cfg: TrainConfig, params: nnx.State | None = None) -> optax.GradientTransformation:
    """AdamW with global-norm clipping; weight decay only on matrices (not norms or biases).

    With `cfg.freeze` or `cfg.lr_scale` (which need `params` for their part names), an optax partition gives frozen
    parts no update and no moments, and scales the updates of the listed parts; clipping then sees only the
    trained parts' gradients.
    """
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)  # noqa: E731
    adamw = optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip_norm),
        optax.adamw(learning_rate_schedule(cfg), b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay, mask=decay_mask),
    )
    if not cfg.freeze and not cfg.lr_scale:
        return adamw
    if params is None:
        raise ValueError("train.freeze and train.lr_scale need the parameters to name their parts")
    parts = set(params.keys())
    for key, names in (("train.freeze", cfg.freeze), ("train.lr_scale", list(cfg.lr_scale))):
        if unknown := sorted(set(names) - parts):
            raise ConfigError(f"{key} names parts {unknown} this model lacks (its parts: {', '.join(sorted(parts))})")
    scales = {f"scale_{part}": optax.scale(factor) for part, factor in cfg.lr_scale.items()}
    scaled = optax.partition(
        {"unscaled": optax.identity(), **scales},
        part_labels(lambda part: f"scale_{part}" if part in cfg.lr_scale else "unscaled"),
    )
    return optax.partition(
        {"frozen": optax.set_to_zero(), "trained": optax.chain(adamw, scaled)},
        part_labels(lambda part: "frozen" if part in cfg.freeze else "trained"),
    )


def part_labels(label_of: Callable[[str], str]) -> Callable[[Any], Any]:
    """An optax label function: each parameter's label from its top-level part name."""

    def labels(params: Any) -> Any:
        return jax.tree_util.tree_map_with_path(lambda path, _: label_of(str(path[0].key)), params)

    return labels


@dataclass(frozen=True)
class StepShardings:
    """Where the train state and batches live on the mesh: trees of `NamedSharding` (or prefixes of them)."""

    params: Any
    opt_state: Any
    batch: NamedSharding
    replicated: NamedSharding


def state_shardings(
    rules: ShardingRules, abstract_params: nnx.State, tx: optax.GradientTransformation
) -> StepShardings:
    """Parameter shardings from the rules; optimizer moments follow their parameters; counters are replicated."""
    param_shardings = rules.param_shardings(abstract_params)
    replicated = NamedSharding(rules.mesh, PartitionSpec())
    opt_shardings = optax.tree_map_params(
        tx,
        lambda _, sharding: sharding,
        jax.eval_shape(tx.init, abstract_params),
        param_shardings,
        transform_non_params=lambda _: replicated,
        is_leaf=lambda x: isinstance(x, nnx.Variable),
    )
    batch = rules.named(("act_batch", None), (rules.mesh.size, 1))
    return StepShardings(param_shardings, opt_shardings, batch, replicated)


def make_train_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    num_words: int,
    rules: ShardingRules | None = None,
    shardings: StepShardings | None = None,
    microbatches: int = 1,
    frozen: tuple[str, ...] = (),
) -> Callable[..., Any]:
    """Jitted `train_step(params, opt_state, batch) -> (params, opt_state, metrics)`.

    Gradients do not flow into the `frozen` top-level parts (`train.freeze`), so XLA skips their weight-gradient
    matmuls; gradients still flow through them to the parts below (the encoder under a frozen backbone).

    Params and optimizer state are donated (updated in place). With `shardings`, inputs and outputs are pinned
    to the mesh (params and optimizer state per the rules, the batch split over its batch axes). With
    `microbatches > 1` the batch is cut into that many slices whose gradients are summed one after another
    (gradient accumulation); the loss is normalised by the whole batch's targets, so the update equals the
    one-batch update up to float summation order.
    """
    forward = forward_fn(graphdef, num_words)

    def summed_nll(params: nnx.State, batch: Batch) -> tuple[jax.Array, dict[str, jax.Array]]:
        if frozen:
            params = nnx.State({k: jax.lax.stop_gradient(v) if k in frozen else v for k, v in params.items()})
        sums = loss_sums(token_losses(forward(params, batch), batch["targets"]), batch)
        return sums["nats"], sums

    grad_fn = jax.grad(summed_nll, has_aux=True)

    def accumulate(params: nnx.State, batch: Batch) -> tuple[nnx.State, dict[str, jax.Array]]:
        if microbatches == 1:
            return grad_fn(params, batch)
        # Microbatch i takes rows i, i + k, i + 2k, ...: each slice stays spread over every batch shard.
        micro = jax.tree.map(lambda x: x.reshape(-1, microbatches, *x.shape[1:]).swapaxes(0, 1), batch)
        if rules is not None:
            micro = jax.tree.map(lambda x: constrain(x, (None, "act_batch") + (None,) * (x.ndim - 2)), micro)

        def body(carry, micro_batch):
            grads, sums = grad_fn(params, micro_batch)
            return jax.tree.map(jnp.add, carry, (grads, sums)), None

        zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], micro)))
        (grads, sums), _ = jax.lax.scan(body, zeros, micro)
        return grads, sums

    def train_step(params: nnx.State, opt_state: optax.OptState, batch: Batch):
        with activation_sharding(rules):
            grads, sums = accumulate(params, batch)
        num_targets = jnp.maximum(sums["targets"], 1.0)
        grads = jax.tree.map(lambda g: g / num_targets, grads)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics = {
            "loss": sums["nats"] / num_targets,
            "bits_per_byte": sums["text_nats"] / jnp.maximum(sums["text_bytes"], 1.0) / LN2,
            "grad_norm": optax.tree.norm(grads),
        }
        return params, opt_state, metrics

    if shardings is None:
        return jax.jit(train_step, donate_argnums=(0, 1))
    return jax.jit(
        train_step,
        in_shardings=(shardings.params, shardings.opt_state, shardings.batch),
        out_shardings=(shardings.params, shardings.opt_state, shardings.replicated),
        donate_argnums=(0, 1),
    )
