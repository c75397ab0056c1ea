"""The optimizer and the jitted train / eval steps, written as pure functions of (params, optimizer state, batch).

The NNX module is split once into a static graph definition and a parameter pytree; each step merges them inside
`jax.jit`, which keeps Python-side object handling out of the hot loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from hat.config import TrainConfig

Batch = dict[str, jax.Array]
LN2 = math.log(2.0)


def learning_rate_schedule(cfg: TrainConfig) -> optax.Schedule:
    """Linear warmup to the peak, then cosine decay to `min_lr_ratio` of it at the last step."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.learning_rate,
        warmup_steps=min(cfg.warmup_steps, max(cfg.steps - 1, 0)),
        decay_steps=max(cfg.steps, cfg.warmup_steps + 1),
        end_value=cfg.learning_rate * cfg.min_lr_ratio,
    )


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """AdamW with global-norm clipping; weight decay only on matrices (not norms or biases)."""
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)  # noqa: E731
    return optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip_norm),
        optax.adamw(
            learning_rate_schedule(cfg), b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay, mask=decay_mask
        ),
    )


def token_losses(logits_BxTxV: jax.Array, targets_BxT: jax.Array) -> jax.Array:
    """Per-position next-byte cross-entropy in nats (float32)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV.astype(jnp.float32), targets_BxT)


def _forward_fn(graphdef: nnx.GraphDef, num_words: int) -> Callable[[nnx.State, Batch], jax.Array]:
    def forward(params: nnx.State, batch: Batch) -> jax.Array:
        model = nnx.merge(graphdef, params)
        return model(batch["inputs"], batch["word_ids"], num_words=num_words)

    return forward


def target_bytes(batch: Batch) -> jax.Array:
    """Bytes of original text each target stands for: `batch["target_bytes"]` for token data (a BPE token or a
    compressed-text token covers several bytes), else the text mask (one byte per byte target)."""
    return batch["target_bytes"] if "target_bytes" in batch else batch["text_mask"]


def make_eval_step(graphdef: nnx.GraphDef, num_words: int) -> Callable[..., Any]:
    """Jitted `eval_step(params, batch)`: summed NLL (nats) of text targets and the text bytes they cover, and of
    all targets, so callers can aggregate exactly over many batches."""
    forward = _forward_fn(graphdef, num_words)

    @jax.jit
    def eval_step(params: nnx.State, batch: Batch) -> dict[str, jax.Array]:
        nll_BxT = token_losses(forward(params, batch), batch["targets"])
        return {
            "text_nats": (nll_BxT * batch["text_mask"]).sum(),
            "text_bytes": target_bytes(batch).sum(),
            "nats": (nll_BxT * batch["loss_mask"]).sum(),
            "targets": batch["loss_mask"].sum(),
        }

    return eval_step


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, num_words: int) -> Callable[..., Any]:
    """Jitted `train_step(params, opt_state, batch) -> (params, opt_state, metrics)`.

    Params and optimizer state are donated (updated in place on accelerators).
    """
    forward = _forward_fn(graphdef, num_words)

    def loss_fn(params: nnx.State, batch: Batch) -> tuple[jax.Array, dict[str, jax.Array]]:
        nll_BxT = token_losses(forward(params, batch), batch["targets"])
        num_targets = jnp.maximum(batch["loss_mask"].sum(), 1.0)
        loss = (nll_BxT * batch["loss_mask"]).sum() / num_targets
        text_nats = (nll_BxT * batch["text_mask"]).sum()
        text_bytes = target_bytes(batch).sum()
        return loss, {"loss": loss, "bits_per_byte": text_nats / jnp.maximum(text_bytes, 1.0) / LN2}

    def train_step(params: nnx.State, opt_state: optax.OptState, batch: Batch):
        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics["grad_norm"] = optax.tree.norm(grads)
        return params, opt_state, metrics

    return jax.jit(train_step, donate_argnums=(0, 1))
