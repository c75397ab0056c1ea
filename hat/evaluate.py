"""Bits per byte of trained models on any files, with zlib beside it as a reference compressor.

Each model kind scores files as its training data lays them out (`hat.kinds`: each file one document followed by
end-of-text), so a held-out file scores the same here as in the training loop. `evaluate_files` scores one model;
`evaluate_suite` compares several models of any kind over the same files (bits per byte, units, parameters,
FLOPs per byte, throughput, robustness to perturbed text).
"""

from __future__ import annotations

import math
import tempfile
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hat.checkpoint import LoadedModel
from hat.config import Config
from hat.data.files import read_documents
from hat.kinds import kind_of
from hat.models import count_params
from hat.text import split_words


def zlib_bits_per_byte(paths: Sequence[str | Path], level: int = 9) -> float:
    """Compressed bits per input byte, each file compressed on its own; NaN when the files are empty."""
    raw = compressed = 0
    for path in paths:
        data = Path(path).read_bytes()
        if data:
            raw += len(data)
            compressed += len(zlib.compress(data, level))
    return 8.0 * compressed / raw if raw else math.nan


def evaluate_files(
    loaded: LoadedModel, paths: Sequence[str | Path], batch_size: int = 8, exact: bool = False
) -> dict[str, Any]:
    """Bits per byte of `loaded` over the files (exact sum of -log2 p over every text byte), zlib -9 beside it;
    `exact`: a token LM through its exact next-byte chain (`hat.kinds.bpe.BPEKind.evaluate_files`)."""
    files = [doc.path for doc in read_documents(paths)]
    result = kind_of(loaded.config).evaluate_files(loaded, files, batch_size, exact=exact)
    if not result["bytes"]:
        result["bits_per_byte"] = math.nan
    return result | {
        "zlib_bits_per_byte": zlib_bits_per_byte(files),
        "model_kind": loaded.config.model.kind,
        "checkpoint_step": loaded.step,
    }


def unit_statistics(data: bytes, config: Config, source: str | Path | None = None) -> dict[str, Any]:
    """Bytes per unit, unigram entropy H1 (bits) of the units, K and the capacity utilisation H1 / log2 K, for a
    model of `config` (stored at `source`, where a token LM's tokenizer is found)."""
    kind = kind_of(config)
    counts = Counter(kind.units(data, config, Path(source) if source else None))
    total = sum(counts.values())
    if not total:
        return {"unit": kind.unit, "bytes_per_unit": math.nan, "unit_entropy_bits": math.nan}
    probs = np.array(list(counts.values()), np.float64) / total
    entropy = float(-(probs * np.log2(probs)).sum())
    vocab = kind.unit_vocabulary(config) or len(counts)
    return {
        "unit": kind.unit,
        "bytes_per_unit": len(data) / total,
        "unit_entropy_bits": entropy,
        "unit_vocabulary": vocab,
        "capacity_utilisation": entropy / math.log2(vocab) if vocab > 1 else math.nan,
    }


PERTURBATIONS = ("permute", "replace", "delete", "all_caps")


def perturb(text: bytes, perturbation: str, rng: np.random.Generator, rate: float = 0.1) -> bytes:
    """A perturbed copy of `text`, as in the HAT paper's robustness tests: in every word, each non-space character
    is hit with probability `rate` and swapped with the next character of its word (`permute`; a word's last
    character has none and stays), replaced by a random lowercase letter (`replace`) or dropped (`delete`);
    `all_caps` upper-cases everything. Works on characters (invalid UTF-8 bytes count as characters and survive
    unchanged unless hit)."""
    if perturbation == "all_caps":
        # Invalid bytes decode to lone surrogates, which have no case: they survive unchanged.
        return text.decode("utf-8", "surrogateescape").upper().encode("utf-8", "surrogateescape")
    if perturbation not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {perturbation!r}; expected one of {PERTURBATIONS}")
    out = []
    for word in split_words(text, None):
        chars = list(word.decode("utf-8", "surrogateescape"))
        hit = (rng.random(len(chars)) < rate) & np.array([not c.isspace() for c in chars], bool)
        if perturbation == "permute":
            for i in np.flatnonzero(hit[:-1]):
                chars[i], chars[i + 1] = chars[i + 1], chars[i]
        elif perturbation == "replace":
            for i in np.flatnonzero(hit):
                chars[i] = chr(ord("a") + int(rng.integers(26)))
        else:
            chars = [c for c, h in zip(chars, hit) if not h]
        out.append("".join(chars))
    return "".join(out).encode("utf-8", "surrogateescape")


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
    files = [doc.path for doc in read_documents(paths)]
    texts = [path.read_bytes() for path in files]
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        perturbed: dict[str, list[Path]] = {}
        for index, perturbation in enumerate(perturbations):
            rng = np.random.default_rng([seed, index])
            directory = Path(tmp) / perturbation
            directory.mkdir()
            perturbed[perturbation] = []
            for number, text in enumerate(texts):
                target = directory / f"{number}_{files[number].name}"
                target.write_bytes(perturb(text, perturbation, rng))
                perturbed[perturbation].append(target)
        models = []
        for loaded in checkpoints:
            config, kind = loaded.config, kind_of(loaded.config)
            score = kind.scorer(loaded, batch_size)
            clean = score(files)
            units = unit_statistics(b"".join(texts), config, loaded.path)
            entry = {
                "checkpoint": str(loaded.path),
                "model_kind": config.model.kind,
                "data_format": config.data.format,
                "checkpoint_step": loaded.step,
                "params": count_params(loaded.model)["total"],
                "flops_per_byte": kind.flops_per_text_byte(config, units["bytes_per_unit"]),
                "bits_per_byte": clean.bits_per_byte,
                "bytes": clean.bytes,
                "eval_bytes_per_s": clean.bytes / clean.seconds if clean.seconds else math.nan,
                **units,
            }
            for name, copies in perturbed.items():
                entry[f"{name}_bits_per_byte"] = score(copies).bits_per_byte
                entry[f"{name}_increase"] = entry[f"{name}_bits_per_byte"] - clean.bits_per_byte
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
