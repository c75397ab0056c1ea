"""Bits per byte of trained models on any files, with zlib beside it as a reference compressor.

Files are laid out exactly as in training (each file followed by end-of-text, whole words packed into
`data.seq_bytes` windows that start with EOT), so a held-out file scores the same here as in the training loop.
`evaluate_files` scores one model; `evaluate_suite` compares several models of any kind over the same files (bits
per byte, units, parameters, FLOPs per byte, throughput, robustness to perturbed text).
"""

from __future__ import annotations

import math
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from hat.checkpoint import LoadedModel
from hat.config import BYTE_VOCAB_SIZE, Config
from hat.data import CorpusError, Document, PackedSequences, prepare_in_memory
from hat.models import count_params, flops_per_byte
from hat.text import split_words
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


@dataclass(frozen=True)
class UnitKind:
    """How a model kind segments text into the units it models (one vector per unit in its backbone).

    `segment(data, config)` gives the units of `data`; `vocabulary(config)` the number of possible units K, or
    None when the units are an open set (HAT's words: K is then the number of distinct units seen).
    """

    name: str
    segment: Callable[[bytes, Config], list[bytes]]
    vocabulary: Callable[[Config], int | None]


# One entry per model kind; a token model kind registers its tokenizer's segmentation here.
UNIT_KINDS: dict[str, UnitKind] = {
    "hat": UnitKind("word", lambda data, config: split_words(data, config.model.max_word_bytes), lambda config: None),
    "byte_lm": UnitKind("byte", lambda data, config: [bytes([b]) for b in data], lambda config: BYTE_VOCAB_SIZE),
}


def unit_statistics(data: bytes, config: Config) -> dict[str, float]:
    """Bytes per unit, unigram entropy H1 (bits) of the units, K and the capacity utilisation H1 / log2 K."""
    kind = UNIT_KINDS.get(config.model.kind)
    if kind is None:
        raise ValueError(f"no unit segmentation registered for model kind {config.model.kind!r}")
    counts = Counter(kind.segment(data, config))
    total = sum(counts.values())
    if not total:
        return {"unit": kind.name, "bytes_per_unit": math.nan, "unit_entropy_bits": math.nan}
    probs = np.array(list(counts.values()), np.float64) / total
    entropy = float(-(probs * np.log2(probs)).sum())
    vocab = kind.vocabulary(config) or len(counts)
    return {
        "unit": kind.name,
        "bytes_per_unit": len(data) / total,
        "unit_entropy_bits": entropy,
        "unit_vocabulary": vocab,
        "capacity_utilisation": entropy / math.log2(vocab) if vocab > 1 else math.nan,
    }


PERTURBATIONS = ("permute", "replace", "delete", "all_caps")


def perturb(text: bytes, kind: str, rng: np.random.Generator, rate: float = 0.1) -> bytes:
    """A perturbed copy of `text`, as in the HAT paper's robustness tests: in every word, each non-space character
    is hit with probability `rate` and swapped with the next character of its word (`permute`; a word's last
    character has none and stays), replaced by a random lowercase letter (`replace`) or dropped (`delete`);
    `all_caps` upper-cases everything. Works on characters (invalid UTF-8 bytes count as characters and survive
    unchanged unless hit)."""
    if kind == "all_caps":
        # Invalid bytes decode to lone surrogates, which have no case: they survive unchanged.
        return text.decode("utf-8", "surrogateescape").upper().encode("utf-8", "surrogateescape")
    if kind not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {kind!r}; expected one of {PERTURBATIONS}")
    out = []
    for word in split_words(text, None):
        chars = list(word.decode("utf-8", "surrogateescape"))
        hit = (rng.random(len(chars)) < rate) & np.array([not c.isspace() for c in chars], bool)
        if kind == "permute":
            for i in np.flatnonzero(hit[:-1]):
                chars[i], chars[i + 1] = chars[i + 1], chars[i]
        elif kind == "replace":
            for i in np.flatnonzero(hit):
                chars[i] = chr(ord("a") + int(rng.integers(26)))
        else:
            chars = [c for c, h in zip(chars, hit) if not h]
        out.append("".join(chars))
    return "".join(out).encode("utf-8", "surrogateescape")


class _Scorer:
    """Bits per byte of one model on any files, with its eval step compiled once for all of them."""

    def __init__(self, loaded: LoadedModel, batch_size: int):
        self.config = loaded.config
        graphdef, self.params = nnx.split(loaded.model, nnx.Param)
        self.eval_step = make_eval_step(graphdef, self.config.data.max_words)
        self.batch_size = batch_size
        self.compiled = False

    def __call__(self, paths: Sequence[Path]) -> tuple[float, int, float]:
        """(bits per byte, bytes, seconds); the first call runs one batch untimed, so the time excludes compiling."""
        corpus = prepare_in_memory(read_documents(paths), self.config.model.max_word_bytes)
        source = PackedSequences.build(corpus, self.config.data.seq_bytes, self.config.data.max_words)
        if not len(source):
            return math.nan, 0, 0.0
        if not self.compiled:
            evaluate_source(self.eval_step, self.params, source, self.batch_size, max_sequences=self.batch_size)
            self.compiled = True
        start = time.perf_counter()
        result = evaluate_source(self.eval_step, self.params, source, self.batch_size)
        return result["bits_per_byte"], int(result["bytes"]), time.perf_counter() - start


def evaluate_suite(
    checkpoints: Sequence[LoadedModel],
    paths: Sequence[str | Path],
    batch_size: int = 8,
    perturbations: Sequence[str] = PERTURBATIONS,
    seed: int = 0,
    workdir: str | Path | None = None,
) -> dict[str, Any]:
    """Scores every model on the same files: bits/byte, units, parameters, FLOPs/byte, throughput, and the
    increase in bits/byte on perturbed copies of the files (seeded; the same copies for every model).

    Returns `{"files", "bytes", "zlib_bits_per_byte", "models": [...]}`; each model entry is a flat dict.
    """
    for loaded in checkpoints:
        if loaded.config.model.kind not in UNIT_KINDS:
            raise ValueError(
                f"{loaded.path}: model kind {loaded.config.model.kind!r} has no scorer registered in "
                f"hat.evaluate.UNIT_KINDS (known: {', '.join(UNIT_KINDS)})"
            )
    files = [doc.path for doc in read_documents(paths)]
    texts = [path.read_bytes() for path in files]
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        perturbed: dict[str, list[Path]] = {}
        for index, kind in enumerate(perturbations):
            rng = np.random.default_rng([seed, index])
            directory = Path(tmp) / kind
            directory.mkdir()
            perturbed[kind] = []
            for number, text in enumerate(texts):
                target = directory / f"{number}_{files[number].name}"
                target.write_bytes(perturb(text, kind, rng))
                perturbed[kind].append(target)
        models = []
        for loaded in checkpoints:
            config = loaded.config
            score = _Scorer(loaded, batch_size)
            bits, num_bytes, seconds = score(files)
            units = unit_statistics(b"".join(texts), config)
            bytes_per_word = float(np.mean([len(w) for t in texts for w in split_words(t, 100)] or [1.0]))
            entry = {
                "checkpoint": str(loaded.path),
                "model_kind": config.model.kind,
                "checkpoint_step": loaded.step,
                "params": count_params(loaded.model)["total"],
                "flops_per_byte": flops_per_byte(config.model, config.data.seq_bytes, bytes_per_word),
                "bits_per_byte": bits,
                "bytes": num_bytes,
                "eval_bytes_per_s": num_bytes / seconds if seconds else math.nan,
                **units,
            }
            for kind, copies in perturbed.items():
                entry[f"{kind}_bits_per_byte"] = score(copies)[0]
                entry[f"{kind}_increase"] = entry[f"{kind}_bits_per_byte"] - bits
            models.append(entry)
    return {
        "files": [str(f) for f in files],
        "bytes": sum(map(len, texts)),
        "zlib_bits_per_byte": zlib_bits_per_byte(files),
        "perturbations": list(perturbations),
        "models": models,
    }


def model_name(entry: dict[str, Any]) -> str:
    """A short label for a model entry: its run's directory and step (checkpoints live in `<run>/checkpoints/N`)."""
    path = Path(entry["checkpoint"])
    run = path.parent.parent.name if path.parent.name == "checkpoints" else path.name
    return f"{run}@{entry['checkpoint_step']}"


def format_table(result: dict[str, Any]) -> str:
    """The suite's result as a fixed-width text table, one row per model."""
    kinds = result["perturbations"]
    header = ["model", "kind", "params", "GFLOP/B", "bits/B", "unit", "B/unit", "H1", "H1/log2K", "eval B/s"]
    header += [f"+{k}" for k in kinds]
    rows = [header]
    for m in result["models"]:
        rows.append(
            [model_name(m), m["model_kind"], f"{m['params'] / 1e6:.2f}M", f"{m['flops_per_byte'] / 1e9:.4f}",
             f"{m['bits_per_byte']:.4f}", m["unit"], f"{m['bytes_per_unit']:.2f}", f"{m['unit_entropy_bits']:.2f}",
             f"{m.get('capacity_utilisation', math.nan):.3f}", f"{m['eval_bytes_per_s']:,.0f}"]
            + [f"{m[f'{k}_increase']:+.4f}" for k in kinds]
        )  # fmt: skip
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    lines = ["  ".join(str(cell).rjust(w) for cell, w in zip(row, widths)) for row in rows]
    zlib_bpb, total = result["zlib_bits_per_byte"], result["bytes"]
    lines.append(f"zlib -9 on the same files: {zlib_bpb:.4f} bits/byte over {total:,} bytes")
    return "\n".join(lines)


def write_plots(result: dict[str, Any], json_path: str | Path) -> list[Path]:
    """PNGs next to the JSON: bits/byte per model, and the robustness increase per perturbation and model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    json_path = Path(json_path)
    names = [model_name(m) for m in result["models"]]
    written = []
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(names)), 3.5))
    ax.bar(names, [m["bits_per_byte"] for m in result["models"]], color="tab:blue")
    ax.axhline(result["zlib_bits_per_byte"], color="gray", linestyle="--", label="zlib -9")
    ax.set_ylabel("bits per byte")
    ax.legend()
    fig.tight_layout()
    written.append(json_path.with_name(json_path.stem + "_bits_per_byte.png"))
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)
    kinds = result["perturbations"]
    if kinds:
        fig, ax = plt.subplots(figsize=(max(5, 1.5 * len(kinds)), 3.5))
        width = 0.8 / max(len(names), 1)
        for index, (name, m) in enumerate(zip(names, result["models"])):
            xs = np.arange(len(kinds)) + index * width
            ax.bar(xs, [m[f"{k}_increase"] for k in kinds], width, label=name)
        ax.set_xticks(np.arange(len(kinds)) + width * (len(names) - 1) / 2, kinds)
        ax.set_ylabel("bits/byte increase over clean text")
        ax.legend()
        fig.tight_layout()
        written.append(json_path.with_name(json_path.stem + "_robustness.png"))
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    return written
