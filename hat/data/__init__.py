"""Corpus preparation (tensorstore) and the grain pipeline that packs words into byte sequences.

Shared by every kind of prepared data: `arrays` (1-D tensorstore arrays, grown in blocks), `atomic` (directories
that appear complete or not at all), `cache` (cache keys, built once) and `token_store` (token streams and their
examples, for the BPE format in `tokens` and EqualInfoAC in `hat.compress.data`).
"""

from hat.data.corpus import (
    CorpusError,
    Document,
    PreparedCorpus,
    load_prepared,
    prepare_corpus,
    prepare_in_memory,
    resolve_documents,
    split_documents,
    stdlib_root,
)
from hat.data.pipeline import (
    PackedSequences,
    eval_batches,
    iterate_from,
    make_example,
    pack_sequences,
    pad_rows,
    train_dataset,
)

__all__ = [
    "CorpusError",
    "Document",
    "PackedSequences",
    "PreparedCorpus",
    "eval_batches",
    "iterate_from",
    "load_prepared",
    "make_example",
    "pack_sequences",
    "pad_rows",
    "prepare_corpus",
    "prepare_in_memory",
    "resolve_documents",
    "split_documents",
    "stdlib_root",
    "train_dataset",
]
