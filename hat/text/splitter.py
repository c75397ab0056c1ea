r"""HAT's word splitter: bytes -> words, lossless and causal.

The rule of HAT as released (arXiv 2501.10322, Aleph Alpha's ``hat-splitter``):

1. Cut the text at Unicode UAX #29 word boundaries (the ``regex`` module's ``(?w)\b``).
2. Also cut before and after every punctuation character (``\p{P}``), so each is a chunk of its own.
3. Also cut camelCase between a lowercase (``\p{Ll}``) and an uppercase (``\p{Lu}``) letter.
4. Build words from the chunks. A chunk that is exactly one space ``" "`` joins the following word; punctuation
   chunks join the preceding word, space or punctuation; any other chunk made of whitespace only (Unicode
   ``White_Space``, Rust's ``\s``: e.g. ``"\n"``, ``"  "``, ``"\t"``, ``"\x0b"``, ``"\x85"``) is a word of its own. A
   whitespace chunk that UAX #29 extends with combining marks (``" \u0301"``) is not whitespace only: like a word
   chunk it takes the punctuation after it. So a word is one whitespace-only chunk, or
   ``[" "] [other chunk] punctuation*``, or ``[marked whitespace chunk] punctuation*``.
5. Cut words longer than ``max_word_bytes`` bytes into pieces of at most that many bytes, at UTF-8 character
   boundaries.

``"Hello, world!" -> [b"Hello,", b" world!"]``, ``"how_are_you" -> [b"how_", b"are_", b"you"]``,
``"howAreYou" -> [b"how", b"Are", b"You"]``, ``"日本語" -> [b"日", b"本", b"語"]``.

Guarantees (all property-tested in ``tests/test_splitter.py``):

* Lossless for any bytes, invalid UTF-8 included: ``b"".join(split_words(x)) == x``, no empty words.
* Causal: whether a word starts at byte ``t`` depends on bytes ``0..t`` only, so splitting a prefix ``p`` of ``x``
  gives the word starts of ``split_words(x)`` that lie before ``len(p)``. The one exception is unavoidable: if ``p``
  ends inside a multi-byte character (an incomplete UTF-8 sequence, as Python's incremental decoder buffers it),
  those trailing bytes stay in the last word of ``split_words(p)`` and the full text may later start a word at
  their first byte; ``split_words(p)`` never has a word start that ``split_words(x)`` lacks.
* Context-free continuation: every word start ``a`` of ``split_words(x)`` is a restart point,
  ``split_words(x[a:])`` equals the words of ``split_words(x)`` from ``a`` on. Generation therefore needs only the
  current word: ``split_words(word + new_bytes)`` splits exactly as the full text would (see ``continues_word``).

Special tokens (the released ``special_token_dict``) are byte values that never occur in valid UTF-8; given
``special_bytes``, the text is first cut at every such byte, each is a one-byte word of its own, and the text on
either side is split as a text of its own (released: the text is cut at the special-token strings, see
``hat.text.special_tokens``). Both sides of a special byte are restart points, so the guarantees above still hold.

Deviations from the released rule, each needed for one of these guarantees:

* Characters of the UAX #29 classes MidLetter, MidNum, MidNumLet, Single_Quote and Double_Quote count as
  punctuation. The UAX #29 rules WB6, WB7b and WB12 look ahead (``"1⁄"`` splits before ``⁄`` but ``"1⁄2"`` does
  not), which breaks causality unless the released punctuation cut hides them. In current Unicode every such
  character but U+2044 FRACTION SLASH (MidNum, math symbol) is ``\p{P}``, so the only visible change is
  ``"1⁄2" -> [b"1⁄", b"2"]`` instead of ``[b"1⁄2"]``.
* Combining marks, format characters and ZWJ (UAX #29 Extend, Format, ZWJ) right after a punctuation character stay
  in its chunk: ``"a.\u0301b" -> [b"a.\u0301", b"b"]``, released ``[b"a.", b"\u0301b"]``. Released, a word can start
  with such a mark, and UAX #29 then decides the boundaries after it by looking back past the word start (WB4 with
  WB7, WB11, WB13b), so the word would split differently on its own.
* A marked whitespace chunk other than a single space does not join a single space before it: ``" \t\u0301."``
  is ``[b" ", b"\t\u0301."]``, released one word. The space is a finished word once the tab arrives; the mark
  after the tab would otherwise join them again.
* Bytes that are not valid UTF-8 are one-byte characters of no class (decoded with ``surrogateescape``), so each
  is a word of its own unless a single space precedes it. An incomplete UTF-8 sequence at the very end joins the
  last word (see causality above).
* Long words are cut by a byte rule: a piece of a word ends before a UTF-8 lead byte whose character would not fit
  in ``max_word_bytes``, or after exactly ``max_word_bytes`` bytes (only reached inside a character when the limit
  is below 4 bytes). On valid UTF-8 this is the greedy cut at character boundaries. It never waits for bytes that
  have not arrived yet, so it also cuts a word that fits before a lead byte whose sequence then breaks off
  (``split_words(b" \xf0", 3) == [b" ", b"\xf0"]``). After each cut, splitting restarts on the rest of the text as
  if it were a new text. This differs from cutting the released words only where the rest of an over-long word splits
  differently on its own: a run of more than ``max_word_bytes`` whitespace whose last piece is a single space (it
  joins the next word), or a cut inside a cluster of combining marks.
"""

from __future__ import annotations

import codecs
import functools
import re

import numpy as np
import regex

__all__ = ["continues_word", "split_words", "word_lengths"]

_PUNCT = (
    r"\p{P}\p{Word_Break=MidLetter}\p{Word_Break=MidNum}\p{Word_Break=MidNumLet}"
    r"\p{Word_Break=Single_Quote}\p{Word_Break=Double_Quote}"
)
_MARK = r"\p{Word_Break=Extend}\p{Word_Break=Format}\p{Word_Break=ZWJ}"
# Unicode White_Space, which is what Rust's `\s` (the released splitter's whitespace test) matches.
_SPACE = r"\p{White_Space}"

# ASCII pieces of the word pattern below. In ASCII, UAX #29 only joins letters/digits, runs of spaces and CR LF;
# everything else is cut by the punctuation rule or stands alone.
_ASCII_PUNCT = r"[!-#%-*,-/:;?@\[-\]_{}]"
_ASCII_OTHER = r"[\x00-\x08\x0e-\x1f$+<=>^`|~\x7f]"
# A run of letters and digits up to the next lowercase-uppercase pair. [a-z]+ must not be followed by any letter, so
# that backtracking can never end the run inside a lowercase stretch.
_ASCII_ALNUM = r"(?=[A-Za-z0-9])(?:[A-Z0-9]+|[a-z]+(?![A-Za-z]))*[a-z]*"

# One more character of the current chunk: no UAX #29 boundary, no camelCase cut, not punctuation. The first
# look-ahead rejects, without the costly (?w)\b, ASCII characters that never continue any chunk.
_CONT = rf"(?![\x00-\x09\x0b-\x1f\x21-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f])(?!\b)(?!(?<=\p{{Ll}})\p{{Lu}})[^{_PUNCT}]"
_NON_ASCII_CONT = rf"(?:(?=[^\x00-\x7f])(?:{_CONT})+)?"
# A chunk that is neither punctuation nor starts with whitespace. After an ASCII run only a non-ASCII character can
# continue it. A mark right after a space belongs to the space's chunk, so a single space may not precede it.
_CHUNK = (
    rf"(?:{_ASCII_ALNUM}|{_ASCII_OTHER}){_NON_ASCII_CONT}"
    rf"|(?:(?<!\x20)|(?![{_MARK}]))[^\x00-\x7f{_SPACE}{_PUNCT}](?:{_CONT})*"
)
_PUNCT_CHUNK = rf"(?:{_ASCII_PUNCT}|[{_PUNCT}])(?:(?=[^\x00-\x7f])[{_MARK}])*"
# A whitespace chunk; when marks extend it (it then ends in a non-space), punctuation joins it as it joins a word.
_SPACE_CHUNK = (
    rf"(?:\x20+{_NON_ASCII_CONT}|\r\n?|\n|[\t\x0b\f]{_NON_ASCII_CONT}|[^\x00-\x7f](?<=[{_SPACE}])(?:{_CONT})*)"
    rf"(?:(?<![{_SPACE}])(?:{_PUNCT_CHUNK})+)?"
)
_WORD = regex.compile(rf"\x20?(?:(?:{_CHUNK})(?:{_PUNCT_CHUNK})*|(?:{_PUNCT_CHUNK})+)|{_SPACE_CHUNK}", regex.WORD)

# Classes of ASCII bytes for the vectorised ASCII rule; letters and digits come first.
_LOWER, _UPPER, _DIGIT, _BLANK, _LF, _CR, _TAB_FF, _PUNCT_BYTE, _OTHER = range(9)
_CLASS_BYTES = {
    _LOWER: b"abcdefghijklmnopqrstuvwxyz",
    _UPPER: b"ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    _DIGIT: b"0123456789",
    _BLANK: b" ",
    _LF: b"\n",
    _CR: b"\r",
    _TAB_FF: b"\t\x0b\f",
    _PUNCT_BYTE: b"!\"#%&'()*,-./:;?@[\\]_{}",
}
_BYTE_CLASS = bytes(
    next((cls for cls, members in _CLASS_BYTES.items() if byte in members), _OTHER) for byte in range(256)
)


def _ascii_join(before: int, this: int) -> int:
    """Whether an ASCII byte of class ``this`` continues the word of the byte of class ``before``: 0 no, 1 yes,
    2 only if ``before`` is a single space (a word starts after a longer space run)."""
    if before <= _DIGIT and this <= _DIGIT:
        return int(not (before == _LOWER and this == _UPPER))
    word_like = this <= _DIGIT or this in (_PUNCT_BYTE, _OTHER)
    if before == _BLANK:
        return 1 if this == _BLANK else 2 if word_like else 0
    if this == _PUNCT_BYTE:
        return int(before <= _DIGIT or before in (_PUNCT_BYTE, _OTHER))
    return int(before == _CR and this == _LF)


_ASCII_JOIN = bytes(
    _ascii_join(code >> 4, code & 15) if code >> 4 <= _OTHER and code & 15 <= _OTHER else 0 for code in range(256)
)

_NON_ASCII_BYTE = re.compile(rb"[\x80-\xff]")
_ASCII_LINE = re.compile(rb"\n[\x00-\x09\x0b-\x7f]*\n")

# Bytes a UTF-8 character needs, by its first byte; 1 for bytes that cannot start a multi-byte character.
_CHAR_BYTES = bytes(
    2 if 0xC2 <= b <= 0xDF else 3 if 0xE0 <= b <= 0xEF else 4 if 0xF0 <= b <= 0xF4 else 1 for b in range(256)
)
_CHAR_BYTES_ARRAY = np.frombuffer(_CHAR_BYTES, dtype=np.uint8)


def _ascii_word_lengths(data: bytes) -> np.ndarray:
    """Byte lengths of the words of ASCII ``data``: the word pattern's result, vectorised.

    In ASCII a word boundary depends only on the classes of the two bytes around it and, after a space, on whether
    the space run is longer than one.
    """
    cls = np.frombuffer(data.translate(_BYTE_CLASS), dtype=np.uint8)
    join = np.frombuffer(((cls[:-1] << 4) | cls[1:]).tobytes().translate(_ASCII_JOIN), dtype=np.uint8)
    joined = join == 1
    joined[0:1] |= join[0:1] == 2
    joined[1:] |= (join[1:] == 2) & (cls[:-2] != _BLANK)
    starts = np.ones(len(data) + 1, dtype=bool)
    starts[1:-1] = ~joined
    starts = np.flatnonzero(starts)
    return starts[1:] - starts[:-1]


def _tail_length(data: bytes) -> int:
    """Length of the incomplete UTF-8 sequence that ends ``data``, as Python's incremental decoder buffers it.

    A lead byte never continues a sequence, so decoding the last 4 bytes finds the same tail as decoding all.
    """
    if not data or data[-1] < 0x80:
        return 0
    decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
    decoder.decode(data[-4:], final=False)
    return len(decoder.getstate()[0])


def _uncut_word_lengths(data: bytes) -> tuple[np.ndarray, int]:
    """Byte lengths (int64) of the words of ``data`` before long words are cut, and the length of its incomplete
    UTF-8 tail, which is part of the last word."""
    if data.isascii():
        return _ascii_word_lengths(data) if data else np.zeros(0, dtype=np.int64), 0
    tail = _tail_length(data)
    body = len(data) - tail
    # Every line start is a restart point (UAX #29 always breaks after LF and no rule looks back across it) and LF
    # never occurs inside a UTF-8 sequence, so pure-ASCII lines take the fast vectorised rule and only lines with
    # other bytes are decoded and matched against the word pattern.
    parts = [np.zeros(0, dtype=np.int64)]
    pos = 0
    while pos < body:
        found = _NON_ASCII_BYTE.search(data, pos, body)
        if found is None:
            parts.append(_ascii_word_lengths(data[pos:body]))
            break
        start = max(data.rfind(b"\n", pos, found.start()) + 1, pos)
        if start > pos:
            parts.append(_ascii_word_lengths(data[pos:start]))
        ascii_line = _ASCII_LINE.search(data, found.end(), body)
        end = ascii_line.start() + 1 if ascii_line else body
        words = _WORD.findall(data[start:end].decode("utf-8", "surrogateescape"))
        parts.append(np.array([len(w.encode("utf-8", "surrogateescape")) for w in words], dtype=np.int64))
        pos = end
    lengths = np.concatenate(parts)
    if int(lengths.sum()) != body:
        # The word pattern matches at every position by construction; a gap would silently drop bytes.
        raise RuntimeError(f"word splitter lost bytes of {data[:200]!r}...")
    if tail:
        if len(lengths):
            lengths[-1] += tail
        else:
            lengths = np.array([tail], dtype=np.int64)
    return lengths, tail


def _cut_position(data: bytes, start: int, end: int, max_word_bytes: int) -> int | None:
    """Where the first piece of the word ``data[start:end]`` ends, or None if the word stays whole.

    A piece ends before the first UTF-8 lead byte whose character would not fit, else after ``max_word_bytes``
    bytes. Whether a piece ends before byte ``t`` depends on bytes up to ``t`` only, never on whether the character
    completes, so this also cuts a short word before a lead byte whose sequence breaks off.
    """
    for t in range(max(start + 1, start + max_word_bytes - 3), min(end, start + max_word_bytes)):
        if t - start + _CHAR_BYTES[data[t]] > max_word_bytes:
            return t
    return start + max_word_bytes if end - start > max_word_bytes else None


def _resplit_after_cut(data: bytes, start: int, uncut_ends: np.ndarray, max_word_bytes: int) -> tuple[list[int], int]:
    """Word ends from the word at ``start``, which needs a cut, on, restarting after every cut, until a word ends
    where an uncut word of the whole text ends; from there on the two splits agree. Returns those ends and that
    position.

    Only a window after each restart point is split: by causality all its words but the last are final, and cuts in
    the last one are final up to its incomplete UTF-8 tail.
    """
    ends: list[int] = []
    window = max_word_bytes + 64
    restart = start
    while True:
        chunk = data[restart : restart + window]
        lengths, tail = _uncut_word_lengths(chunk)
        at_end = restart + len(chunk) == len(data)
        word_start = restart
        for i, length in enumerate(lengths.tolist()):
            word_end = word_start + length
            last = i == len(lengths) - 1 and not at_end
            cut = _cut_position(data, word_start, restart + len(chunk) - tail if last else word_end, max_word_bytes)
            if cut is not None:
                restart = cut
                ends.append(cut)
                break
            if last:
                if word_start == restart:
                    window *= 2
                restart = word_start
                break
            ends.append(word_end)
            k = np.searchsorted(uncut_ends, word_end)
            if k < len(uncut_ends) and uncut_ends[k] == word_end:
                return ends, word_end
            word_start = word_end


@functools.lru_cache(maxsize=16)
def _special_class(special_bytes: bytes) -> re.Pattern[bytes]:
    return re.compile(b"[" + b"".join(re.escape(bytes([value])) for value in special_bytes) + b"]")


def _word_lengths(data: bytes, max_word_bytes: int | None, special_bytes: bytes = b"") -> np.ndarray:
    """Byte lengths of the words of ``data`` as int64: each special byte a word, the text around it split alone."""
    if not special_bytes:
        return _text_word_lengths(data, max_word_bytes)
    pieces, pos = [], 0
    for found in _special_class(special_bytes).finditer(data):
        pieces += [_text_word_lengths(data[pos : found.start()], max_word_bytes), np.ones(1, np.int64)]
        pos = found.end()
    pieces.append(_text_word_lengths(data[pos:], max_word_bytes))
    return np.concatenate(pieces)


def _text_word_lengths(data: bytes, max_word_bytes: int | None) -> np.ndarray:
    """Byte lengths of the words of ``data`` (no special bytes) as int64."""
    if max_word_bytes == 1:  # words are non-empty and at most one byte: every byte is a word (no split needed)
        return np.ones(len(data), np.int64)
    lengths = _uncut_word_lengths(data)[0]
    if max_word_bytes is None:
        return lengths
    to_cut = lengths > max_word_bytes
    ascii_only = data.isascii()
    if ascii_only and not to_cut.any():
        return lengths
    uncut_ends = np.cumsum(lengths)
    starts = uncut_ends - lengths
    if not ascii_only:
        # A word that fits may still hold a lead byte whose character would not (see _cut_position).
        need = _CHAR_BYTES_ARRAY[np.frombuffer(data, dtype=np.uint8)]
        leads = np.flatnonzero(need > 1)
        word = np.searchsorted(uncut_ends, leads, "right")
        offset = leads - starts[word]
        to_cut[word[(offset > 0) & (offset + need[leads] > max_word_bytes)]] = True
    if not to_cut.any():
        return lengths
    pieces: list[np.ndarray] = []
    pos = 0
    for k in np.flatnonzero(to_cut):
        if starts[k] < pos:
            continue
        pieces.append(uncut_ends[np.searchsorted(uncut_ends, pos, "right") : k])
        ends, pos = _resplit_after_cut(data, int(starts[k]), uncut_ends, max_word_bytes)
        pieces.append(np.array(ends, dtype=np.int64))
    pieces.append(uncut_ends[np.searchsorted(uncut_ends, pos, "right") :])
    return np.diff(np.concatenate(pieces), prepend=0)


def _as_bytes(data: bytes | str, max_word_bytes: int | None) -> bytes:
    if max_word_bytes is not None and max_word_bytes < 1:
        raise ValueError(f"max_word_bytes must be None or at least 1, got {max_word_bytes}")
    return data.encode("utf-8") if isinstance(data, str) else bytes(data)


def split_words(data: bytes | str, max_word_bytes: int | None = 100, special_bytes: bytes = b"") -> list[bytes]:
    """Split text into HAT words (see the module docstring for the rule and its guarantees).

    Args:
      data: raw bytes (any bytes, not only valid UTF-8) or a str, which is UTF-8 encoded first.
      max_word_bytes: longest word in bytes; longer words are cut into pieces. ``None``: no limit.
      special_bytes: the byte values of special tokens (``hat.text.special_tokens``), each a word of its own.

    Returns:
      The words, non-empty, whose concatenation is ``data`` (as bytes). ``[]`` for empty input.
    """
    data = _as_bytes(data, max_word_bytes)
    ends = np.cumsum(_word_lengths(data, max_word_bytes, special_bytes)).tolist()
    return [data[start:end] for start, end in zip([0] + ends, ends)]


def word_lengths(data: bytes | str, max_word_bytes: int | None = 100, special_bytes: bytes = b"") -> np.ndarray:
    """Byte lengths of the words ``split_words(data, max_word_bytes, special_bytes)`` would return, without building
    them.

    Returns:
      An int32 array that sums to the byte length of ``data``.
    """
    return _word_lengths(_as_bytes(data, max_word_bytes), max_word_bytes, special_bytes).astype(np.int32)


def continues_word(
    word: bytes, next_bytes: bytes, max_word_bytes: int | None = 100, special_bytes: bytes = b""
) -> bool:
    """Whether appending ``next_bytes`` to ``word``, the last word of a text, keeps it one word.

    Exact for any text ending in ``word`` because word starts are restart points. When this is False,
    ``split_words(word + next_bytes, max_word_bytes, special_bytes)`` gives the new words as the full text would
    split them. Note that the finished word can end before ``next_bytes`` starts: an incomplete UTF-8 character
    stays in the current word until it completes, and the completed character may start a word of its own.
    """
    data = _as_bytes(word + next_bytes, max_word_bytes)
    return len(_word_lengths(data, max_word_bytes, special_bytes)) <= 1
