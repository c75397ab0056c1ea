"""Bits per byte of an M2 (a token_lm over EqualInfoAC tokens) on raw files, with M1's coded rate beside it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from flax import nnx

from hat.checkpoint import LoadedModel
from hat.compress.data import compress_in_memory, load_m1, spec_from_config
from hat.data.token_store import TokenSequences
from hat.train.loop import evaluate_source
from hat.train.step import make_eval_step


def evaluate_eqinfo_files(loaded: LoadedModel, paths: Sequence[str | Path], batch_size: int = 8) -> dict[str, float]:
    """Compresses the files with the run's M1 and scores M2 on the tokens.

    `bits_per_byte` is M2's: summed token NLL over the bytes its target tokens cover (tokens x NLL / bytes).
    `m1_bits_per_byte` is the size of the EqualInfoAC code itself (window bits / bytes): what M2 must beat to
    have learned anything beyond M1.
    """
    config = loaded.config
    m1, spec = load_m1(config), spec_from_config(config)
    texts = [Path(path).read_bytes() for path in paths]
    corpus = compress_in_memory(m1, texts, spec, config.data.eqinfo.segment_bytes)
    source = TokenSequences(corpus, config.data.eqinfo.seq_tokens)
    graphdef, params = nnx.split(loaded.model, nnx.Param)
    eval_step = make_eval_step(graphdef, config.data.max_words)
    result = evaluate_source(eval_step, params, source, batch_size) if len(source) else {"bytes": 0.0}
    num_bytes = corpus.num_bytes
    return {
        "bits_per_byte": result["bits_per_byte"] if result["bytes"] else math.nan,
        "bytes": num_bytes,
        "scored_bytes": result["bytes"],
        "m1_bits_per_byte": spec.window_bits * corpus.num_windows / num_bytes if num_bytes else math.nan,
        "bytes_per_token": num_bytes / corpus.num_tokens if corpus.num_tokens else math.nan,
    }
