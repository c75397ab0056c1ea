"""A script primer: synthetic text in many writing systems for a run's training split (`data.script_primer_bytes`).

Why. A byte model trained on a corpus in one script (the default corpus is Python source: almost all ASCII) never
sees most byte values as targets, and Adam drives their logits down at full learning rate for the whole run: on
Japanese, Korean or Russian text such a model scores worse than a uniform guess over 256 bytes (> 8 bits/byte).
The primer shows the model UTF-8's byte grammar for every script (a lead byte, then continuation bytes from a
script's block) and how text in an unfamiliar script behaves (a paragraph keeps to one script and reuses its
words), so that on an unseen script it falls back to what the bytes themselves tell: which block the document is
in, and which of its words came before.

What. Paragraphs of 8-60 words, each paragraph in one script: a random vocabulary of 4-40 words of 1-8
letters drawn from the script's letters, words drawn Zipf-like from that vocabulary, separated by spaces and
ended by punctuation and a newline. Deterministic in (`seed`, size, the running Python's Unicode database).
"""

from __future__ import annotations

import functools
import random
import unicodedata

# Letter blocks of widely used scripts (first, last code point). Mark-heavy scripts keep their combining marks,
# which follow a letter as they do in real text.
SCRIPT_BLOCKS = {
    "latin-1": (0x00C0, 0x00FF),
    "latin-extended": (0x0100, 0x024F),
    "greek": (0x0370, 0x03FF),
    "cyrillic": (0x0400, 0x04FF),
    "armenian": (0x0530, 0x058F),
    "hebrew": (0x05D0, 0x05EA),
    "arabic": (0x0620, 0x064A),
    "devanagari": (0x0900, 0x097F),
    "bengali": (0x0980, 0x09FF),
    "tamil": (0x0B80, 0x0BFF),
    "thai": (0x0E00, 0x0E7F),
    "georgian": (0x10A0, 0x10FF),
    "ethiopic": (0x1200, 0x137F),
    "hiragana": (0x3041, 0x3096),
    "katakana": (0x30A1, 0x30FA),
    "cjk": (0x4E00, 0x9FFF),
    "hangul": (0xAC00, 0xD7A3),
    "emoji": (0x1F300, 0x1F64F),
}
_PUNCTUATION = [".", ",", "!", "?", ":", ";", "。", "、", "،", "।"]


@functools.cache
def _letters(script: str) -> tuple[str, ...]:
    """The assigned letters (and marks, symbols for emoji) of a script's block."""
    first, last = SCRIPT_BLOCKS[script]
    wanted = ("So",) if script == "emoji" else ("Lu", "Ll", "Lo", "Lm", "Mn", "Mc")
    return tuple(chr(c) for c in range(first, last + 1) if unicodedata.category(chr(c)) in wanted)


def _word(rng: random.Random, letters: tuple[str, ...]) -> str:
    # Combining marks cannot start a word; they attach to the letter before them.
    chars = [rng.choice(letters) for _ in range(rng.randint(1, 8))]
    while chars and unicodedata.category(chars[0]).startswith("M"):
        chars[0] = rng.choice(letters)
    return "".join(chars)


def _paragraph(rng: random.Random) -> str:
    letters = _letters(rng.choice(sorted(SCRIPT_BLOCKS)))
    vocabulary = [_word(rng, letters) for _ in range(rng.randint(4, 40))]
    # Zipf-like: word i of the vocabulary is drawn with weight 1 / (i + 1), as word frequencies in text fall off.
    weights = [1.0 / (rank + 1) for rank in range(len(vocabulary))]
    words = rng.choices(vocabulary, weights, k=rng.randint(8, 60))
    return " ".join(words) + rng.choice(_PUNCTUATION) + "\n"


def script_primer(num_bytes: int, seed: int = 0) -> bytes:
    """About `num_bytes` of primer text (whole paragraphs; UTF-8), the same for the same arguments."""
    rng = random.Random(f"script-primer:{seed}")
    paragraphs, size = [], 0
    while size < num_bytes:
        paragraph = _paragraph(rng).encode()
        paragraphs.append(paragraph)
        size += len(paragraph)
    return b"".join(paragraphs)
