"""Whole documents as token-LM evaluation examples: each document scored on its own, complete.

A document of canonical tokens t_1..t_L is the sequence `[EOT] t_1 .. t_L [EOT]`: the leading end-of-text is its
context (as in training, where every document follows one), and the closing one is a target like any other, so the
score is log P(t_1..t_L, EOT | EOT), the probability of the *complete* document. For a complete document that is
the only valid tokenisation (`hat.byteprob.exact`: any other token sequence that decodes to the same bytes and then
ends is not a canonical encoding), so one teacher-forced pass gives what the exact next-byte chain gives when it
scores the document's bytes and then its end (`hat-eval --exact`), up to the mass the model puts on invalid
tokenisations (which that chain renormalises away).

A document that does not fit the model's context (`seq_tokens` targets) is scored in windows of `seq_tokens`
tokens that advance by `stride` (default half the context): the first window scores all its targets, every later
one only its last `stride`, so every target is scored exactly once with at least `seq_tokens - stride` tokens of
context. Documents never share a window.

Example fields are those of `hat.data.token_store.TokenSequences`; `text_mask` marks every scored target, the
closing end-of-text included (its `target_bytes` is 0), so bits per byte = bits of the complete documents / their
bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

import grain
import numpy as np


def windows(num_targets: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """`(input start, first scored target, end)` of each window over a sequence with `num_targets` targets
    (target j predicts token j + 1 from tokens 0..j)."""
    end = min(context, num_targets)
    out = [(0, 0, end)]
    while end < num_targets:
        stop = min(end + stride, num_targets)
        out.append((stop - context, end, stop))
        end = stop
    return out


class DocumentWindows(grain.sources.RandomAccessDataSource):
    """Evaluation examples of complete documents (see the module docstring).

    `documents[i]` are the canonical token ids of document i, `token_lengths[id]` the bytes each id stands for
    (0 for end-of-text), `eot_id` the end-of-text id.
    """

    def __init__(
        self,
        documents: Sequence[Sequence[int]],
        token_lengths: np.ndarray,
        eot_id: int,
        seq_tokens: int,
        stride: int | None = None,
    ) -> None:
        self.seq_tokens = seq_tokens
        self.stride = stride or max(1, seq_tokens // 2)
        if not 0 < self.stride <= seq_tokens:
            raise ValueError(f"stride must be in 1..{seq_tokens}, got {self.stride}")
        self.token_lengths = token_lengths
        self.sequences = [np.asarray([eot_id, *ids, eot_id], np.int32) for ids in documents]
        self.index = [
            (doc, *window)
            for doc, sequence in enumerate(self.sequences)
            for window in windows(len(sequence) - 1, seq_tokens, self.stride)
        ]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        doc, start, first, end = self.index[index]
        tokens = self.sequences[doc][start : start + self.seq_tokens + 1]
        n = len(tokens) - 1
        inputs, targets = np.zeros(self.seq_tokens, np.int32), np.zeros(self.seq_tokens, np.int32)
        inputs[:n], targets[:n] = tokens[:-1], tokens[1:]
        mask = np.zeros(self.seq_tokens, np.float32)
        mask[first - start : end - start] = 1.0
        return {
            "inputs": inputs,
            "targets": targets,
            "word_ids": np.zeros(self.seq_tokens, np.int32),
            "loss_mask": mask,
            "text_mask": mask.copy(),
            "target_bytes": mask * self.token_lengths[targets].astype(np.float32),
        }
