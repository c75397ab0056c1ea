"""The one window layout of HAT-style byte models, shared by training and inference.

hat's own models (`ContextRules.leading_end_of_text`, the default) see a window as `[EOT] + whole words`:
position 0 holds end-of-text (word 0), then the words' bytes with word ids 1, 2, ...; unused positions are padding
(byte 0, word id `max_words`). A window of `seq_bytes` input positions holds at most `seq_bytes - 1` text bytes in
at most `max_words - 1` words. In training the last text byte of a sequence is only a target, so a packed
sequence's words total at most `seq_bytes` bytes; at inference the whole context is input (the byte after it is
predicted), so it may hold `seq_bytes - 1`. Both are the same rule: the words plus the byte predicted after them
fit `seq_bytes`.

A model imported from the released runtime (`leading_end_of_text: false`) is fed the text as it is, as Aleph
Alpha's runtime feeds a prompt: word 0 is the text's first word at position 0, and the window holds `seq_bytes`
text bytes in `max_words` words. Its first byte is never predicted; in training and evaluation the byte after
a sequence's last input is its last target (the next sequence's first byte), so every other byte is scored once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hat.config import EOT_BYTE, ModelConfig
from hat.text import SpecialTokens, split_words


@dataclass(frozen=True)
class ContextRules:
    """How a model is fed a context: with or without the leading end-of-text, and which special tokens the text
    is cut at (`hat.text.SpecialTokens`). `ContextRules()` is hat's trained layout."""

    leading_end_of_text: bool = True
    special_tokens: SpecialTokens = field(default_factory=lambda: SpecialTokens({}))

    @classmethod
    def of(cls, model: ModelConfig) -> ContextRules:
        """The rules of a model's config (`model.leading_end_of_text`, `model.special_tokens`)."""
        return cls(model.leading_end_of_text, SpecialTokens(model.special_tokens))

    @property
    def lead(self) -> int:
        """Positions (and word slots) in front of the text: 1 for the end-of-text marker, else 0."""
        return int(self.leading_end_of_text)

    @property
    def special_bytes(self) -> bytes:
        """The byte values of the special tokens, each a word of its own."""
        return self.special_tokens.special_bytes

    def split(self, text: bytes, max_word_bytes: int) -> list[bytes]:
        """The words of `text` (special bytes already in place) as the model's splitter cuts them."""
        return split_words(text, max_word_bytes, self.special_bytes)


HAT_CONTEXT = ContextRules()


def fits_window(
    num_bytes: int, num_words: int, seq_bytes: int, max_words: int, rules: ContextRules = HAT_CONTEXT
) -> bool:
    """Whether `num_bytes` of whole words (`num_words` of them), plus the byte predicted after them, fit a
    window of `seq_bytes` positions and `max_words` word slots (with the leading end-of-text, one of each is it)."""
    return num_bytes + rules.lead <= seq_bytes and num_words + rules.lead <= max_words


def layout_inputs(
    data: np.ndarray, word_of_byte: np.ndarray, seq_bytes: int, max_words: int, rules: ContextRules = HAT_CONTEXT
) -> tuple[np.ndarray, np.ndarray]:
    """`(inputs, word_ids)` (int32, `seq_bytes` each) of the window `[EOT] + data` (or `data` without the leading
    end-of-text), where `word_of_byte[i]` is the word id of `data[i]` (`word_ids_of(lengths, rules)`)."""
    inputs = np.zeros(seq_bytes, np.int32)
    word_ids = np.full(seq_bytes, max_words, np.int32)
    if rules.lead:
        inputs[0], word_ids[0] = EOT_BYTE, 0
    inputs[rules.lead : len(data) + rules.lead] = data
    word_ids[rules.lead : len(data) + rules.lead] = word_of_byte
    return inputs, word_ids


def word_ids_of(lengths: list[int] | np.ndarray, rules: ContextRules = HAT_CONTEXT) -> np.ndarray:
    """The word id of every byte of consecutive words of the given lengths (1, 2, ... after the leading
    end-of-text, else 0, 1, ...)."""
    first = rules.lead
    return np.repeat(np.arange(first, len(lengths) + first, dtype=np.int32), np.asarray(lengths, np.int64))


def tail_words(lengths: list[int], byte_budget: int, word_budget: int, rules: ContextRules = HAT_CONTEXT) -> int:
    """How many of the last words fit `fits_window(bytes, words, byte_budget, word_budget)` (the longest such
    tail; 0 when not even the last word fits)."""
    total = keep = 0
    for length in reversed(lengths):
        if not fits_window(total + length, keep + 1, byte_budget, word_budget, rules):
            break
        total += length
        keep += 1
    return keep


def layout_context(
    context: bytes, seq_bytes: int, max_words: int, max_word_bytes: int, rules: ContextRules = HAT_CONTEXT
) -> tuple[np.ndarray, np.ndarray, int]:
    """`(inputs, word_ids, last position)` of the window holding the most recent whole words of `context` that
    fit, laid out as in training; the logits at `last position` predict the byte after `context`. Without the
    leading end-of-text the context must not be empty."""
    words = rules.split(context, max_word_bytes)
    if not words and not rules.lead:
        raise ValueError("a model fed without a leading end-of-text needs a non-empty context")
    lengths = [len(word) for word in words]
    keep = tail_words(lengths, seq_bytes, max_words, rules)
    kept = words[len(words) - keep :]
    data = np.frombuffer(b"".join(kept), np.uint8)
    kept_ids = word_ids_of(lengths[len(lengths) - keep :], rules)
    inputs, word_ids = layout_inputs(data, kept_ids, seq_bytes, max_words, rules)
    return inputs, word_ids, len(data) + rules.lead - 1


def fit_context(
    text: bytes, seq_bytes: int, max_words: int, max_word_bytes: int, rules: ContextRules = HAT_CONTEXT
) -> bytes:
    """`text` itself if it fits the window, else its most recent whole words filling at most half of it (always
    at least the last word, which fits: `max_word_bytes < seq_bytes`).

    Cutting to half rather than to the whole window means one refill of a generation cache per half window of
    new bytes instead of one per word.
    """
    words = rules.split(text, max_word_bytes)
    if fits_window(len(text), len(words), seq_bytes, max_words, rules):
        return text
    keep = max(1, tail_words([len(word) for word in words], seq_bytes // 2, max_words // 2, rules))
    return b"".join(words[len(words) - keep :])
