"""The evaluation suite's text perturbations and unit statistics (the end-to-end suite runs in test_train.py)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from hat.config import Config, ModelConfig
from hat.evaluate import perturb, unit_statistics
from hat.text import split_words

TEXT = ("The quick brown fox jumps over the lazy dog. Überraschung für alle!\n" * 40).encode() + b"\xff\xfe end"


def chars_per_word(data: bytes) -> list[str]:
    return [w.decode("utf-8", "surrogateescape") for w in split_words(data, None)]


def test_perturbations_are_seeded_and_hit_about_ten_percent():
    for kind in ("permute", "replace", "delete"):
        first = perturb(TEXT, kind, np.random.default_rng(1))
        assert first == perturb(TEXT, kind, np.random.default_rng(1)) != TEXT
    original = TEXT.decode("utf-8", "surrogateescape")
    replaced = perturb(TEXT, "replace", np.random.default_rng(2)).decode("utf-8", "surrogateescape")
    changed = sum(a != b for a, b in zip(original, replaced)) / sum(not c.isspace() for c in original)
    assert len(replaced) == len(original) and 0.05 < changed < 0.12  # a replacement may draw the same letter
    deleted = perturb(TEXT, "delete", np.random.default_rng(3)).decode("utf-8", "surrogateescape")
    assert 0.05 < 1 - len(deleted) / len(original) < 0.15
    permuted = perturb(TEXT, "permute", np.random.default_rng(4)).decode("utf-8", "surrogateescape")
    assert Counter(permuted) == Counter(original)
    assert (
        perturb(TEXT, "all_caps", np.random.default_rng(0))
        == TEXT.replace(b"\xff\xfe end", b"").decode().upper().encode() + b"\xff\xfe END"
    )
    with pytest.raises(ValueError, match="unknown perturbation"):
        perturb(TEXT, "shuffle", np.random.default_rng(0))


def test_unit_statistics_against_direct_counts():
    hat = unit_statistics(TEXT, Config(model=ModelConfig(kind="hat")))
    words = split_words(TEXT, 100)
    probs = np.array(list(Counter(words).values())) / len(words)
    assert hat["bytes_per_unit"] == pytest.approx(len(TEXT) / len(words))
    assert hat["unit_entropy_bits"] == pytest.approx(-(probs * np.log2(probs)).sum())
    assert hat["capacity_utilisation"] == pytest.approx(hat["unit_entropy_bits"] / math.log2(len(Counter(words))))
    flat = unit_statistics(TEXT, Config(model=ModelConfig(kind="byte_lm")))
    assert flat["bytes_per_unit"] == 1 and flat["unit_vocabulary"] == 256
    assert 0 < flat["capacity_utilisation"] < 1
    with pytest.raises(ValueError, match="token_lm"):
        unit_statistics(TEXT, Config(model=ModelConfig(kind="token_lm")))
