"""Text processing: HAT's byte-level word splitter."""

from hat.text.splitter import continues_word, split_words, word_lengths

__all__ = ["continues_word", "split_words", "word_lengths"]
