"""Inference lays a context out exactly as training laid out the text it was trained on, up to the window limit.

Training packs whole words into `[EOT] + words` sequences (`hat.data.pipeline`); generation and byte-level scoring
lay a context out with `hat.data.layout.layout_context`. Both must agree at the boundary, where an off-by-one in
either rule (one byte or one word too many or too few) would silently shift every position of the window.
"""

from __future__ import annotations

import numpy as np
import pytest

from hat.data import PackedSequences, prepare_in_memory
from hat.data.layout import fit_context, layout_context
from hat.text import split_words

SEQ_BYTES, MAX_WORDS, MAX_WORD = 32, 8, 8


def words_of(lengths: list[int]) -> bytes:
    """A text whose words (HAT splitter) have the given byte lengths: 'aa', ' bbb', ' cccc', ..."""
    text = b"".join(
        (b" " if i else b"") + bytes([ord("a") + i % 26]) * (n - (1 if i else 0)) for i, n in enumerate(lengths)
    )
    assert [len(w) for w in split_words(text, MAX_WORD)] == lengths
    return text


# Each document's first packed sequence is full in bytes (its words total SEQ_BYTES), full in words
# (MAX_WORDS - 1 of them), or both short of a limit; the word after them does not fit.
DOCUMENTS = {
    "bytes full": [4, 5, 6, 5, 4, 4, 4, 6],
    "words full": [3, 3, 4, 3, 3, 4, 3, 5],
    "one byte short": [4, 5, 6, 5, 4, 4, 3, 8],
}


@pytest.mark.parametrize("name", DOCUMENTS)
def test_inference_layout_equals_the_training_layout_at_the_window_limit(name):
    document = words_of(DOCUMENTS[name])
    source = PackedSequences.build(prepare_in_memory([document], MAX_WORD), SEQ_BYTES, MAX_WORDS)
    example = source[0]
    packed = int(example["loss_mask"].sum())  # text bytes in sequence 0 (its last one is only a target)
    if name == "bytes full":
        assert packed == SEQ_BYTES
    if name == "words full":
        assert len(split_words(document[:packed], MAX_WORD)) == MAX_WORDS - 1
    # The training logits at the sequence's last input position predict byte `packed - 1` from the bytes before
    # it; inference over that context must see the very same window.
    context = document[: packed - 1]
    inputs, word_ids, last = layout_context(context, SEQ_BYTES, MAX_WORDS, MAX_WORD)
    np.testing.assert_array_equal(inputs, example["inputs"])
    np.testing.assert_array_equal(word_ids, example["word_ids"])
    assert last == len(context) == packed - 1


@pytest.mark.parametrize("name", DOCUMENTS)
def test_a_context_past_the_limit_keeps_the_longest_tail_of_whole_words_that_fits(name):
    document = words_of(DOCUMENTS[name])
    for size in range(SEQ_BYTES - 8, len(document) + 1):
        context = document[:size]
        words = split_words(context, MAX_WORD)
        # Brute force: drop words from the front until the rest plus the predicted byte fits the window.
        kept = next(
            words[drop:]
            for drop in range(len(words) + 1)
            if sum(map(len, words[drop:])) + 1 <= SEQ_BYTES and len(words[drop:]) + 1 <= MAX_WORDS
        )
        inputs, word_ids, last = layout_context(context, SEQ_BYTES, MAX_WORDS, MAX_WORD)
        assert bytes(inputs[1 : last + 1].astype(np.uint8)) == b"".join(kept), size
        assert word_ids[last] == len(kept) and (word_ids[last + 1 :] == MAX_WORDS).all(), size


def test_a_context_that_fits_is_kept_whole_and_one_that_does_not_is_cut_to_half():
    lengths = DOCUMENTS["bytes full"]
    text = words_of(lengths)
    fits = text[: SEQ_BYTES - 1]
    assert fit_context(fits, SEQ_BYTES, MAX_WORDS, MAX_WORD) == fits
    cut = fit_context(text, SEQ_BYTES, MAX_WORDS, MAX_WORD)
    assert text.endswith(cut) and len(cut) + 1 <= SEQ_BYTES // 2
    assert len(split_words(cut, MAX_WORD)) + 1 <= MAX_WORDS // 2
