"""What every model is trained and scored on: next-unit cross-entropy, summed so that held-out numbers aggregate
exactly over batches, and the jitted eval step over a data source.

Bits per byte = summed NLL of text targets / the text bytes those targets cover (one per byte target; a BPE or
compressed-text token covers several).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding

from hat.data.pipeline import eval_batches
from hat.models.sharding import ShardingRules, activation_sharding

Batch = dict[str, jax.Array]
LN2 = math.log(2.0)


class Shardings(Protocol):
    """Where parameters and batches live on the mesh (`hat.train.step.StepShardings` is one)."""

    params: Any
    batch: NamedSharding
    replicated: NamedSharding


def token_losses(logits_BxTxV: jax.Array, targets_BxT: jax.Array) -> jax.Array:
    """Per-position next-byte cross-entropy in nats (float32)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV.astype(jnp.float32), targets_BxT)


def forward_fn(graphdef: nnx.GraphDef, num_words: int) -> Callable[[nnx.State, Batch], jax.Array]:
    """`forward(params, batch) -> logits` of the network `graphdef` (HAT reads `word_ids`; flat LMs ignore it)."""

    def forward(params: nnx.State, batch: Batch) -> jax.Array:
        model = nnx.merge(graphdef, params)
        return model(batch["inputs"], batch["word_ids"], num_words=num_words)

    return forward


def target_bytes(batch: Batch) -> jax.Array:
    """Bytes of original text each target stands for: `batch["target_bytes"]` for token data (a BPE token or a
    compressed-text token covers several bytes), else the text mask (one byte per byte target)."""
    return batch["target_bytes"] if "target_bytes" in batch else batch["text_mask"]


def loss_sums(nll_BxT: jax.Array, batch: Batch) -> dict[str, jax.Array]:
    """Summed NLL (nats) of text targets and the text bytes they cover, and of all targets, for exact aggregation
    over batches."""
    return {
        "text_nats": (nll_BxT * batch["text_mask"]).sum(),
        "text_bytes": target_bytes(batch).sum(),
        "nats": (nll_BxT * batch["loss_mask"]).sum(),
        "targets": batch["loss_mask"].sum(),
    }


def make_eval_step(
    graphdef: nnx.GraphDef,
    num_words: int,
    rules: ShardingRules | None = None,
    shardings: Shardings | None = None,
) -> Callable[..., Any]:
    """Jitted `eval_step(params, batch)`: summed NLL (nats) of text targets and the text bytes they cover, and of
    all targets, so callers can aggregate exactly over many batches."""
    forward = forward_fn(graphdef, num_words)

    def eval_step(params: nnx.State, batch: Batch) -> dict[str, jax.Array]:
        with activation_sharding(rules):
            return loss_sums(token_losses(forward(params, batch), batch["targets"]), batch)

    if shardings is None:
        return jax.jit(eval_step)
    return jax.jit(eval_step, in_shardings=(shardings.params, shardings.batch), out_shardings=shardings.replicated)


def global_batch(local: dict[str, np.ndarray], shardings: Shardings) -> dict[str, jax.Array]:
    """Assembles every process's rows into global arrays sharded over the batch axes."""
    return {key: jax.make_array_from_process_local_data(shardings.batch, value) for key, value in local.items()}


def evaluate_source(
    eval_step: Any,
    params: nnx.State,
    source: Any,
    batch_size: int,
    max_sequences: int = 0,
    shardings: Shardings | None = None,
) -> dict[str, float]:
    """Exact held-out totals over `source`: bits per text byte, and nats per target (EOT included)."""
    totals = {"text_nats": 0.0, "text_bytes": 0.0, "nats": 0.0, "targets": 0.0}
    process = (jax.process_index(), jax.process_count()) if shardings is not None else (0, 1)
    for local in eval_batches(source, batch_size, max_sequences, *process):
        out = eval_step(params, global_batch(local, shardings) if shardings is not None else local)
        for key in totals:
            totals[key] += float(out[key])
    return {
        "bits_per_byte": totals["text_nats"] / max(totals["text_bytes"], 1.0) / LN2,
        "loss": totals["nats"] / max(totals["targets"], 1.0),
        "bytes": totals["text_bytes"],
    }
