"""Bits per byte of a trained model on any files, with zlib beside it as a reference compressor.

Files are laid out exactly as in training (each file followed by end-of-text, whole words packed into
`data.seq_bytes` windows that start with EOT), so a held-out file scores the same here as in the training loop.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from pathlib import Path

from flax import nnx

from hat.data import CorpusError, Document, PackedSequences, prepare_in_memory
from hat.inference import LoadedModel
from hat.train.loop import evaluate_source
from hat.train.step import make_eval_step


def read_documents(paths: Sequence[str | Path]) -> list[Document]:
    """Checks that every path is a readable file; a missing one is a `CorpusError` naming it."""
    docs = []
    for path in map(Path, paths):
        if not path.is_file():
            raise CorpusError(f"file not found: {path}")
        docs.append(Document(path, path.name))
    return docs


def zlib_bits_per_byte(paths: Sequence[str | Path], level: int = 9) -> float:
    """Compressed bits per input byte, each file compressed on its own; NaN when the files are empty."""
    raw = compressed = 0
    for path in paths:
        data = Path(path).read_bytes()
        if data:
            raw += len(data)
            compressed += len(zlib.compress(data, level))
    return 8.0 * compressed / raw if raw else math.nan


def evaluate_files(loaded: LoadedModel, paths: Sequence[str | Path], batch_size: int = 8) -> dict[str, float]:
    """Bits per byte of `loaded` over the concatenated files (exact sum of -log2 p over every text byte)."""
    config = loaded.config
    if config.data.format == "eqinfo":
        from hat.compress.evaluate import evaluate_eqinfo_files

        read_documents(paths)  # a missing file is a CorpusError naming it
        return evaluate_eqinfo_files(loaded, paths, batch_size) | {
            "zlib_bits_per_byte": zlib_bits_per_byte(paths),
            "model_kind": config.model.kind,
            "checkpoint_step": loaded.step,
        }
    corpus = prepare_in_memory(read_documents(paths), config.model.max_word_bytes)
    source = PackedSequences.build(corpus, config.data.seq_bytes, config.data.max_words)
    graphdef, params = nnx.split(loaded.model, nnx.Param)
    eval_step = make_eval_step(graphdef, config.data.max_words)
    result = evaluate_source(eval_step, params, source, batch_size) if len(source) else {"bytes": 0.0}
    num_bytes = int(result["bytes"])
    return {
        "bits_per_byte": result["bits_per_byte"] if num_bytes else math.nan,
        "bytes": num_bytes,
        "zlib_bits_per_byte": zlib_bits_per_byte(paths),
        "model_kind": config.model.kind,
        "checkpoint_step": loaded.step,
    }
