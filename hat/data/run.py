"""What a training run reads: its training and held-out sources, split by file, cached under one directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grain

from hat.config import Config
from hat.data.atomic import replace_file
from hat.data.corpus import Document, resolve_documents, split_documents
from hat.data.primer import script_primer


@dataclass
class RunData:
    """The training and held-out sources of a run.

    A source is a grain `RandomAccessDataSource` of example dicts with int32 `inputs`, `targets`, `word_ids` and
    float32 `loss_mask`, `text_mask` (plus `target_bytes` for token data; see `hat.models.objective.target_bytes`).
    """

    train: grain.sources.RandomAccessDataSource
    heldout: grain.sources.RandomAccessDataSource | None
    num_train_files: int
    num_heldout_files: int
    num_train_bytes: int


def cache_directory(config: Config) -> Path:
    """Where a run's prepared data lives: `data.cache_dir`, else `<workdir>/data`."""
    return Path(config.data.cache_dir or Path(config.workdir) / "data")


def split_run_documents(config: Config) -> tuple[list[Document], list[Document]]:
    """The configured corpus's files, split by file into (training, held-out), deterministically; the training
    split ends with the script primer when `data.script_primer_bytes` asks for one (`hat.data.primer`)."""
    docs = resolve_documents(config.data.corpus)
    train, heldout = split_documents(docs, config.data.eval_fraction, config.data.seed)
    if config.data.script_primer_bytes:
        train.append(_primer_document(config))
    return train, heldout


def _primer_document(config: Config) -> Document:
    """The primer as a file in the cache directory, written once: its size and modification time are part of the
    prepared data's cache key, so rewriting it every run would rebuild the data every run."""
    size, seed = config.data.script_primer_bytes, config.data.seed
    path = cache_directory(config) / f"script_primer-{size}-{seed}.txt"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(path, script_primer(size, seed))
    return Document(path, path.name)
