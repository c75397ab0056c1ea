"""`TokenModel`s over a trained flat token LM (`model.kind: token_lm`).

`FlatTokenModel` recomputes each prefix in full: laid out as in training (`[EOT] + tokens`, EOT being the
tokenizer's document separator `eot_id`; the most recent `data.bpe.seq_tokens` tokens when longer), padded to a
power-of-two length and to one row or a full batch (a handful of compiles), and memoised, so a prefix asked for
twice costs one forward pass. `CachedFlatTokenModel` continues each prefix from the KV caches of its longest cached
prefix (one token step per new token) and falls back to the recompute past the trained context.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hat.byteprob.models import Prefix
from hat.checkpoint import LoadedModel
from hat.models import FlatLM


class FlatTokenModel:
    """Next-token log-probabilities of a `token_lm` checkpoint; `num_prefixes` counts forward rows computed."""

    def __init__(self, loaded: LoadedModel, eot_id: int, batch_size: int = 16, cache_size: int = 4096) -> None:
        config = loaded.config
        self.eot_id = eot_id
        if not isinstance(loaded.model, FlatLM):
            raise ValueError(f"FlatTokenModel needs a token_lm checkpoint, got model.kind {config.model.kind!r}")
        self.vocab_size = config.model.vocab_size
        self.context = config.data.bpe.seq_tokens
        self.batch_size, self.cache_size = batch_size, cache_size
        self.cache: OrderedDict[Prefix, np.ndarray] = OrderedDict()
        self.num_prefixes = 0
        graphdef, self.params = nnx.split(loaded.model, nnx.Param)

        @jax.jit
        def forward(params, inputs_BxT, positions_B):
            logits_BxTxV = nnx.merge(graphdef, params)(inputs_BxT)
            logits_BxV = jnp.take_along_axis(logits_BxTxV, positions_B[:, None, None], axis=1)[:, 0]
            return jax.nn.log_softmax(logits_BxV.astype(jnp.float32))

        self._forward = forward

    def clear(self) -> None:
        """Forgets memoised results (for timing)."""
        self.cache.clear()

    def _layout(self, prefixes: Sequence[Prefix]) -> tuple[np.ndarray, np.ndarray]:
        rows = 1 if len(prefixes) == 1 else self.batch_size
        # Causal attention: padding after the last real token changes nothing, so short prefixes run in a
        # shorter power-of-two window.
        longest = min(self.context, 1 + max(len(p) for p in prefixes))
        length = min(self.context, max(16, 1 << (longest - 1).bit_length()))
        inputs_BxT = np.zeros((rows, length), np.int32)
        positions_B = np.zeros(rows, np.int32)
        for i, prefix in enumerate(prefixes):
            sequence = ((self.eot_id,) + prefix)[-self.context :]
            inputs_BxT[i, : len(sequence)] = sequence
            positions_B[i] = len(sequence) - 1
        return inputs_BxT, positions_B

    def next_token_logprobs(self, prefixes: Sequence[Prefix]) -> np.ndarray:
        """See `hat.byteprob.TokenModel`."""
        missing = list(dict.fromkeys(p for p in prefixes if p not in self.cache))
        for start in range(0, len(missing), self.batch_size):
            batch = missing[start : start + self.batch_size]
            out_BxV = np.asarray(self._forward(self.params, *self._layout(batch)))
            self.num_prefixes += len(batch)
            for prefix, row in zip(batch, out_BxV):
                self.cache[prefix] = row
        rows = []
        for prefix in prefixes:
            self.cache.move_to_end(prefix)
            rows.append(self.cache[prefix].astype(np.float64))
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return np.stack(rows) if rows else np.zeros((0, self.vocab_size))


class CachedFlatTokenModel:
    """`TokenModel` over a `token_lm` checkpoint with KV caches (`hat.models.decoding`): a prefix continues the cached
    state of its longest cached prefix, one decode step per new token, so streaming costs about one token step per
    byte instead of a forward pass over the whole context.

    States of recent prefixes are kept (LRU, `max_states`); every state holds the full context's caches. A prefix
    that no longer fits the trained context (`data.bpe.seq_tokens` with its leading end-of-text) is scored by the
    sliding-window recompute of `FlatTokenModel`. `num_prefixes` counts prefixes computed; `num_steps` token steps.
    """

    def __init__(self, loaded: LoadedModel, eot_id: int, max_states: int = 128) -> None:
        from hat.models.decoding import flat_decode, flat_prefill

        self.fallback = FlatTokenModel(loaded, eot_id)
        self.vocab_size, self.context = self.fallback.vocab_size, self.fallback.context
        self.max_states = max_states
        graphdef, self.params = nnx.split(loaded.model, nnx.Param)

        def logprobs(logits_BxV: jax.Array) -> jax.Array:
            return jax.nn.log_softmax(logits_BxV.astype(jnp.float32))

        @jax.jit
        def start(params):
            inputs_1xT = jnp.zeros((1, self.context), jnp.int32).at[0, 0].set(eot_id)
            state, logits = flat_prefill(nnx.merge(graphdef, params), inputs_1xT, jnp.ones(1, jnp.int32))
            return state, logprobs(logits)[0]

        @jax.jit
        def step(params, state, token):
            # Not donated: the previous prefix's state stays cached for the prefixes that branch from it.
            state, logits = flat_decode(nnx.merge(graphdef, params), state, token[None])
            return state, logprobs(logits)[0]

        self._start, self._step = start, step
        self.states: OrderedDict[Prefix, tuple[Any, np.ndarray]] = OrderedDict()
        self.num_prefixes = self.num_steps = 0

    def clear(self) -> None:
        """Forgets cached states and memoised results (for timing)."""
        self.states.clear()
        self.fallback.clear()

    def _compute(self, prefix: Prefix) -> np.ndarray:
        known = next((k for k in range(len(prefix), -1, -1) if prefix[:k] in self.states), None)
        if known is None:
            state, row = self._start(self.params)
            self._remember((), state, row)
            known = 0
        state, row = self.states[prefix[:known]]
        for k in range(known, len(prefix)):
            state, row = self._step(self.params, state, jnp.asarray(prefix[k], jnp.int32))
            self.num_steps += 1
            self._remember(prefix[: k + 1], state, row)
        self.num_prefixes += 1
        return np.asarray(row, np.float64)

    def _remember(self, prefix: Prefix, state: Any, row: Any) -> None:
        self.states[prefix] = (state, row)
        self.states.move_to_end(prefix)
        while len(self.states) > self.max_states:
            self.states.popitem(last=False)

    def next_token_logprobs(self, prefixes: Sequence[Prefix]) -> np.ndarray:
        """See `hat.byteprob.TokenModel`."""
        rows = []
        for prefix in prefixes:
            if len(prefix) + 1 > self.context:
                rows.append(self.fallback.next_token_logprobs([prefix])[0])
            elif prefix in self.states:
                self.states.move_to_end(prefix)
                rows.append(np.asarray(self.states[prefix][1], np.float64))
            else:
                rows.append(self._compute(prefix))
        return np.stack(rows) if rows else np.zeros((0, self.vocab_size))
