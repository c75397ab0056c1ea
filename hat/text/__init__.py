"""Text processing: HAT's byte-level word splitter and the released runtime's special tokens."""

from hat.text.special_tokens import SpecialTokenError, SpecialTokens
from hat.text.splitter import continues_word, split_words, word_lengths

__all__ = ["SpecialTokenError", "SpecialTokens", "continues_word", "split_words", "word_lengths"]
