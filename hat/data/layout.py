"""The one window layout of HAT-style byte models, shared by training and inference.

A window is `[EOT] + whole words`: position 0 holds end-of-text (word 0), then the words' bytes with word ids
1, 2, ...; unused positions are padding (byte 0, word id `max_words`). A window of `seq_bytes` input positions
holds at most `seq_bytes - 1` text bytes in at most `max_words - 1` words. In training the last text byte of a
sequence is only a target, so a packed sequence's words total at most `seq_bytes` bytes; at inference the whole
context is input (the byte after it is predicted), so it may hold `seq_bytes - 1`. Both are the same rule: the
words plus the byte predicted after them fit `seq_bytes`.
"""

from __future__ import annotations

import numpy as np

from hat.config import EOT_BYTE
from hat.text import split_words


def fits_window(num_bytes: int, num_words: int, seq_bytes: int, max_words: int) -> bool:
    """Whether `num_bytes` of whole words (`num_words` of them), plus the byte predicted after them, fit a
    window of `seq_bytes` positions and `max_words` word slots (one of each is the leading end-of-text)."""
    return num_bytes + 1 <= seq_bytes and num_words + 1 <= max_words


def layout_inputs(
    data: np.ndarray, word_of_byte: np.ndarray, seq_bytes: int, max_words: int
) -> tuple[np.ndarray, np.ndarray]:
    """`(inputs, word_ids)` (int32, `seq_bytes` each) of the window `[EOT] + data`, where `word_of_byte[i]` is the
    word id (1, 2, ...) of `data[i]`."""
    inputs = np.zeros(seq_bytes, np.int32)
    word_ids = np.full(seq_bytes, max_words, np.int32)
    inputs[0], word_ids[0] = EOT_BYTE, 0
    inputs[1 : len(data) + 1] = data
    word_ids[1 : len(data) + 1] = word_of_byte
    return inputs, word_ids


def word_ids_of(lengths: list[int] | np.ndarray) -> np.ndarray:
    """The word id (1, 2, ...) of every byte of consecutive words of the given lengths."""
    return np.repeat(np.arange(1, len(lengths) + 1, dtype=np.int32), np.asarray(lengths, np.int64))


def tail_words(lengths: list[int], byte_budget: int, word_budget: int) -> int:
    """How many of the last words fit `fits_window(bytes, words, byte_budget, word_budget)` (the longest such
    tail; 0 when not even the last word fits)."""
    total = keep = 0
    for length in reversed(lengths):
        if not fits_window(total + length, keep + 1, byte_budget, word_budget):
            break
        total += length
        keep += 1
    return keep


def layout_context(
    context: bytes, seq_bytes: int, max_words: int, max_word_bytes: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """`(inputs, word_ids, last position)` of the window holding the most recent whole words of `context` that
    fit, laid out as in training; the logits at `last position` predict the byte after `context`."""
    words = split_words(context, max_word_bytes)
    lengths = [len(word) for word in words]
    keep = tail_words(lengths, seq_bytes, max_words)
    kept = words[len(words) - keep :]
    data = np.frombuffer(b"".join(kept), np.uint8)
    inputs, word_ids = layout_inputs(data, word_ids_of(lengths[len(lengths) - keep :]), seq_bytes, max_words)
    return inputs, word_ids, len(data)


def fit_context(text: bytes, seq_bytes: int, max_words: int, max_word_bytes: int) -> bytes:
    """`text` itself if it fits the window, else its most recent whole words filling at most half of it (always
    at least the last word, which fits: `max_word_bytes < seq_bytes`).

    Cutting to half rather than to the whole window means one refill of a generation cache per half window of
    new bytes instead of one per word.
    """
    words = split_words(text, max_word_bytes)
    if fits_window(len(text), len(words), seq_bytes, max_words):
        return text
    keep = max(1, tail_words([len(word) for word in words], seq_bytes // 2, max_words // 2))
    return b"".join(words[len(words) - keep :])
