"""Packing whole words into fixed-length byte sequences, and the grain pipeline that batches them.

Every sequence is `[EOT] + whole words`, at most `seq_bytes + 1` bytes: inputs are positions 0..n-1 and
targets positions 1..n, so consecutive sequences score every corpus byte exactly once, and the leading EOT gives
the first word a byte to be predicted from. Without the leading end-of-text (`ContextRules`, models imported from
the released runtime) a sequence is its words, and its last target is the next sequence's first byte. Batches are
addressed by step (`batch = dataset[step]`), so a resumed run starts at any step without replaying the earlier ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import grain
import numpy as np

from hat.data.corpus import PreparedCorpus
from hat.data.layout import HAT_CONTEXT, ContextRules, layout_inputs, word_ids_of

_PACK_CHUNK_WORDS = 1 << 22


def pack_sequences(
    corpus: PreparedCorpus, seq_bytes: int, max_words: int, rules: ContextRules = HAT_CONTEXT
) -> np.ndarray:
    """Greedy packing: the first word of every sequence, plus a final sentinel (int64, length num_seqs + 1).

    Sequence i holds words [starts[i], starts[i+1]); their bytes total at most `seq_bytes` and they number at
    most `max_words - 1` (one slot is the leading EOT; `max_words` without it). Word starts are read in chunks, so
    this works on corpora larger than memory.
    """
    first_words = [0]
    num_words = corpus.num_words
    chunk_base = 0
    chunk = corpus.read_word_starts(0, min(num_words + 1, _PACK_CHUNK_WORDS))
    word = 0
    while word < num_words:
        if word + max_words + 1 > chunk_base + len(chunk) and chunk_base + len(chunk) < num_words + 1:
            chunk_base = word
            chunk = corpus.read_word_starts(word, min(num_words + 1, word + _PACK_CHUNK_WORDS))
        local = word - chunk_base
        limit = chunk[local] + seq_bytes
        # The last word end that still fits the byte budget, capped by the word budget.
        end_local = int(np.searchsorted(chunk, limit, side="right")) - 1
        end_local = min(end_local, local + max_words - rules.lead, num_words - chunk_base)
        if end_local <= local:
            raise ValueError(f"word {word} is longer than seq_bytes={seq_bytes}; raise data.seq_bytes")
        word = chunk_base + end_local
        first_words.append(word)
    return np.asarray(first_words, np.int64)


@dataclass(frozen=True)
class PackedSequences(grain.sources.RandomAccessDataSource):
    """Random access to packed training examples, read lazily from a prepared corpus.

    Each example is a dict of int32 arrays of length `seq_bytes`: `inputs`, `targets`, `word_ids` (the input
    byte's word index within the sequence; `max_words` marks padding), and float32 masks `loss_mask` (a real
    target) and `text_mask` (a real target that is a corpus byte, not an end-of-document separator).
    """

    corpus: PreparedCorpus
    first_words: np.ndarray
    seq_bytes: int
    max_words: int
    rules: ContextRules = HAT_CONTEXT

    @classmethod
    def build(
        cls, corpus: PreparedCorpus, seq_bytes: int, max_words: int, rules: ContextRules = HAT_CONTEXT
    ) -> PackedSequences:
        """Packs `corpus` and returns the source over its sequences."""
        return cls(corpus, pack_sequences(corpus, seq_bytes, max_words, rules), seq_bytes, max_words, rules)

    def __len__(self) -> int:
        return len(self.first_words) - 1

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        first, last = int(self.first_words[index]), int(self.first_words[index + 1])
        starts = self.corpus.read_word_starts(first, last + 1)
        begin, end = int(starts[0]), int(starts[-1])
        # Without the leading end-of-text the byte after the sequence is its last target.
        stop = min(end + 1, self.corpus.num_bytes) if not self.rules.lead else end
        data = self.corpus.read_bytes(begin, stop)
        return make_example(
            data[: end - begin],
            starts - begin,
            separators=self.corpus.doc_ends[
                np.searchsorted(self.corpus.doc_ends, begin) : np.searchsorted(self.corpus.doc_ends, stop)
            ]
            - begin,
            seq_bytes=self.seq_bytes,
            max_words=self.max_words,
            rules=self.rules,
            next_bytes=data[end - begin :],
        )


def make_example(
    data: np.ndarray,
    word_starts: np.ndarray,
    separators: np.ndarray,
    seq_bytes: int,
    max_words: int,
    rules: ContextRules = HAT_CONTEXT,
    next_bytes: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Lays out one sequence: EOT, then `data` (whole words starting at `word_starts`), padded to seq_bytes
    (`hat.data.layout`, the layout inference uses too). Without the leading end-of-text, `data` itself is the
    input and `next_bytes` (the byte after it, if any) its last target; `separators` may then include its index."""
    word_of_byte = word_ids_of(np.diff(word_starts), rules)
    if rules.lead:
        # Input position i holds data[i - 1]; the last data byte is only ever a target.
        n = len(data)
        inputs, word_ids = layout_inputs(data[: n - 1], word_of_byte[: n - 1], seq_bytes, max_words, rules)
        targets_data, target_separators = data, separators
    else:
        inputs, word_ids = layout_inputs(data, word_of_byte, seq_bytes, max_words, rules)
        targets_data = np.concatenate([data[1:], next_bytes if next_bytes is not None else data[:0]])
        n = len(targets_data)
        target_separators = separators[separators > 0] - 1
    targets = np.zeros(seq_bytes, np.int32)
    targets[:n] = targets_data
    loss_mask = np.zeros(seq_bytes, np.float32)
    loss_mask[:n] = 1.0
    text_mask = loss_mask.copy()
    text_mask[target_separators] = 0.0
    return {
        "inputs": inputs,
        "targets": targets,
        "word_ids": word_ids,
        "loss_mask": loss_mask,
        "text_mask": text_mask,
    }


def train_dataset(
    source: PackedSequences, batch_size: int, seed: int, process_index: int = 0, process_count: int = 1
) -> grain.MapDataset:
    """Infinite, shuffled (reshuffled every epoch), batched dataset; `dataset[step]` is this process's share of
    the global batch for `step`.

    The global batch of step s is rows s*B .. s*B + B - 1 of the shuffled stream; process p reads only its
    `B / process_count` consecutive rows of it, so the processes together see exactly the one-process batch.
    """
    if len(source) == 0:
        raise ValueError("the training corpus packs into zero sequences; add text to data.corpus")
    if batch_size % process_count:
        raise ValueError(f"train.batch_size ({batch_size}) must be a multiple of the process count ({process_count})")
    local = batch_size // process_count
    stream = grain.MapDataset.source(source).shuffle(seed=seed).repeat()
    return stream.batch(local, drop_remainder=True)[process_index::process_count]


def eval_batches(
    source: PackedSequences,
    batch_size: int,
    max_sequences: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """This process's rows of each global held-out batch, in corpus order (the first `max_sequences`, or all
    when 0); the last batch is padded with fully masked rows so every batch has one shape."""
    total = min(max_sequences, len(source)) if max_sequences else len(source)
    local = batch_size // process_count
    for start in range(0, total, batch_size):
        first = start + process_index * local
        rows = [source[i] for i in range(first, min(first + local, total))]
        yield pad_rows(rows, local, template=source[0])


def pad_rows(rows: list[dict[str, np.ndarray]], size: int, template: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Stacks example dicts into a batch of `size` rows, filling missing rows with zeros (all masks off)."""
    blank = {key: np.zeros_like(value) for key, value in template.items()}
    rows = rows + [blank] * (size - len(rows))
    return {key: np.stack([row[key] for row in rows]) for key in template}


def iterate_from(dataset: grain.MapDataset, start_step: int, num_threads: int = 2) -> Iterator[dict[str, np.ndarray]]:
    """Batches `start_step, start_step + 1, ...` with background prefetching; no earlier batch is read."""
    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=8)
    return iter(dataset[start_step:].to_iter_dataset(options))
