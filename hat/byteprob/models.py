"""The narrow interface `hat.byteprob` needs from a token-level model, and a random table model for tests.

A token model is asked only for next-token distributions after given token prefixes. Every prefix is the start of
a document: implementations put their own document-start context (end-of-text) in front of it, exactly as the
model saw documents in training. Anything that can answer this (a full recompute, a KV-cached step) plugs in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

Prefix = tuple[int, ...]


class TokenModel(Protocol):
    """Next-token log-probabilities (natural log, normalised over `vocab_size` ids) after token prefixes."""

    vocab_size: int

    def next_token_logprobs(self, prefixes: Sequence[Prefix]) -> np.ndarray:
        """N x vocab_size float64 log-probabilities, row i after `prefixes[i]` (a document start when empty)."""
        ...


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable log-softmax over the last axis, in float64."""
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class RandomTokenModel:
    """A deterministic random model: the distribution after a prefix is a fixed random function of the whole
    prefix (its logits are seeded by the prefix), so every prefix gets a different, arbitrary distribution.

    `sharpness` scales the logits (higher: peakier distributions). Counts calls in `num_prefixes`.
    """

    def __init__(self, vocab_size: int, seed: int = 0, sharpness: float = 2.0) -> None:
        self.vocab_size, self.seed, self.sharpness = vocab_size, seed, sharpness
        self.num_prefixes = 0

    def next_token_logprobs(self, prefixes: Sequence[Prefix]) -> np.ndarray:
        """See `TokenModel`."""
        self.num_prefixes += len(prefixes)
        rows = []
        for prefix in prefixes:
            rng = np.random.default_rng([self.seed, len(prefix), *prefix])
            rows.append(log_softmax(self.sharpness * rng.standard_normal(self.vocab_size)))
        return np.stack(rows) if rows else np.zeros((0, self.vocab_size))
