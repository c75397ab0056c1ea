"""Special tokens as the released HAT runtime handles them (`special_token_dict` of a TFree-HAT config.json).

Each special token is a string (`"<|eot_id|>"`) fed as one byte value that valid UTF-8 never holds (192). Text
is cut at the strings first (leftmost match; at one position the first string of the mapping wins, as a regex
alternation in the mapping's order does), each becomes its byte, and the splitter makes every such byte a word of
its own (`split_words(..., special_bytes=...)`). Generated special bytes are shown as their strings again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from hat.errors import HatError

__all__ = ["SpecialTokens", "SpecialTokenError"]


class SpecialTokenError(HatError, ValueError):
    """A special-token mapping is invalid (empty string, byte value out of range or valid inside UTF-8 text)."""


# Byte values that never occur in valid UTF-8: a special token fed as one of them cannot be confused with text.
_NOT_IN_UTF8 = frozenset([0xC0, 0xC1, *range(0xF5, 0x100)])


class SpecialTokens:
    """A mapping of special-token strings to the byte values fed for them."""

    def __init__(self, mapping: Mapping[str, int]):
        for text, value in mapping.items():
            if not text:
                raise SpecialTokenError("a special token must be a non-empty string")
            if value not in _NOT_IN_UTF8:
                raise SpecialTokenError(
                    f"special token {text!r} maps to byte {value}, which valid UTF-8 text can hold; use one of "
                    "192, 193, 245..255"
                )
        self.mapping = dict(mapping)
        self.special_bytes = bytes(sorted(set(self.mapping.values())))
        self._strings = {value: text.encode("utf-8") for text, value in reversed(self.mapping.items())}
        pattern = b"|".join(re.escape(text.encode("utf-8")) for text in self.mapping)
        self._pattern = re.compile(pattern) if self.mapping else None

    def encode(self, text: bytes | str) -> bytes:
        """`text` with every special-token string replaced by its byte."""
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        if self._pattern is None:
            return data
        return self._pattern.sub(lambda found: bytes([self.mapping[found.group().decode("utf-8")]]), data)

    def decode(self, data: bytes) -> bytes:
        """`data` with every special byte shown as its string (the first string mapped to it)."""
        if not self.special_bytes:
            return bytes(data)
        return b"".join(self._strings.get(value, bytes([value])) for value in data)
