"""Bits per byte of byte-level models (any kind) and of their ensembles, side by side on the same files.

Each file is one document. HAT and byte LMs score it with training's layout (the same numbers as
`hat.evaluate.evaluate_files`); token LMs through the exact next-byte chain (`bits_per_byte`) and through their
canonical tokenisation under the same model and contexts (`bits_per_byte_canonical`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from hat.byteprob.bytelevel import ByteLevelModel, Ensemble, TokenByteModel, combine, text_bits
from hat.byteprob.exact import EOT_OUTCOME
from hat.data.files import read_documents


def _document_bits(rows, data: bytes, end_of_text: bool) -> float:
    """Bits of `data`'s bytes under `rows`, and of its end when the document is complete."""
    end = -rows[len(data), EOT_OUTCOME] / math.log(2) if end_of_text else 0.0
    return text_bits(rows, data) + end


def score_files(
    models: Sequence[ByteLevelModel],
    paths: Sequence[str | Path],
    ensemble: str | None = None,
    weights: Sequence[float] | None = None,
    end_of_text: bool = False,
) -> dict[str, object]:
    """`{"models": [per-model metrics], "ensemble": metrics or None, "bytes": n}`; metrics hold `name`,
    `bits_per_byte` (NaN when the files are empty) and, for token models, `bits_per_byte_canonical`.
    `end_of_text`: each file is a complete document, so the bits of its end (the end-of-text outcome after its last
    byte) count too."""
    docs = read_documents(paths)
    ensemble_model = Ensemble(models, weights, ensemble) if ensemble else None
    bits = [0.0] * len(models)
    canonical_nats = [0.0] * len(models)
    ensemble_bits, num_bytes = 0.0, 0
    for doc in docs:
        data = doc.path.read_bytes()
        if not data:
            continue
        num_bytes += len(data)
        rows = [model.text_logprobs(data) for model in models]
        for i, (model, member_rows) in enumerate(zip(models, rows)):
            bits[i] += _document_bits(member_rows, data, end_of_text)
            if isinstance(model, TokenByteModel):
                canonical_nats[i] -= model.last_canonical_log_prob
        if ensemble_model is not None:
            combined = combine(rows, ensemble_model.weights, ensemble_model.how)
            ensemble_bits += _document_bits(combined, data, end_of_text)
    per_byte = lambda total: total / num_bytes if num_bytes else math.nan  # noqa: E731
    results = []
    for i, model in enumerate(models):
        entry: dict[str, object] = {"name": model.name, "bits_per_byte": per_byte(bits[i])}
        if isinstance(model, TokenByteModel):
            entry["bits_per_byte_canonical"] = per_byte(canonical_nats[i] / math.log(2))
        results.append(entry)
    ensemble_entry = None
    if ensemble_model is not None:
        ensemble_entry = {"name": ensemble_model.name, "bits_per_byte": per_byte(ensemble_bits)}
    return {"models": results, "ensemble": ensemble_entry, "bytes": num_bytes}
