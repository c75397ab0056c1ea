"""`TokenModel` over a trained flat token LM (`model.kind: token_lm`): each prefix is recomputed in full.

Prefixes are laid out as in training (`[EOT] + tokens`, the most recent `data.bpe.seq_tokens` tokens when longer),
padded to a power-of-two length and to one row or a full batch (a handful of compiles), and memoised, so a prefix
asked for twice costs one forward pass. A KV-cached step can replace this class behind the same `next_token_logprobs`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hat.byteprob.models import Prefix
from hat.inference import LoadedModel
from hat.text.bpe import EOT_ID


class FlatTokenModel:
    """Next-token log-probabilities of a `token_lm` checkpoint; `num_prefixes` counts forward rows computed."""

    def __init__(self, loaded: LoadedModel, batch_size: int = 16, cache_size: int = 4096) -> None:
        config = loaded.config
        if config.model.kind != "token_lm":
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

    def _layout(self, prefixes: Sequence[Prefix]) -> tuple[np.ndarray, np.ndarray]:
        rows = 1 if len(prefixes) == 1 else self.batch_size
        # Causal attention: padding after the last real token changes nothing, so short prefixes run in a
        # shorter power-of-two window.
        longest = min(self.context, 1 + max(len(p) for p in prefixes))
        length = min(self.context, max(16, 1 << (longest - 1).bit_length()))
        inputs_BxT = np.zeros((rows, length), np.int32)
        positions_B = np.zeros(rows, np.int32)
        for i, prefix in enumerate(prefixes):
            sequence = ((EOT_ID,) + prefix)[-self.context :]
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
