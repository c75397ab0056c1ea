"""Exact byte-level probabilities from a BPE token LM: cost, tokenisation bias, and byte-level ensembles.

    python benchmarks/byteprob.py --bpe runs/bpe_tiny --hat runs/hat_tiny --byte runs/byte_tiny
    python benchmarks/byteprob.py --tokenizer path/to/tokenizer.json --parts foreign

1. Cost: model prefixes evaluated per byte and bytes/s for next-byte distributions along a text, streaming (each
   byte reuses the previous covers and model results) versus recomputing every prefix from scratch.
2. Tokenisation bias: held-out lines cut at every byte offset; next-byte accuracy and bits of the true next byte,
   exact method versus naive tokenisation of the prompt (encode the prompt, read the next token's first byte).
3. Ensembles: bits/byte of HAT, BPE (exact) and the byte LM on held-out text, each alone and mixed byte by byte.
4. Foreign tokenizers (`--tokenizer`, e.g. SmolLM2's tokenizer.json): exact next-byte distributions streamed through
   a look-ahead pre-tokenizer (`hat.byteprob.lookahead`), bytes/s and model calls per byte, with a random table
   model (no network: the cost of the exact machinery alone), cold (empty caches) and warm (the same text again).

All three use the held-out split of the default corpus (the one `train.py` holds out).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path


def heldout_texts(max_bytes: int, piece_bytes: int) -> list[bytes]:
    """Whole-line pieces of about `piece_bytes` from the default corpus's held-out files, `max_bytes` in all."""
    from hat.data import resolve_documents, split_documents

    _, heldout = split_documents(resolve_documents("stdlib"), 0.02, 0)
    pieces, total = [], 0
    for doc in heldout:
        lines = doc.path.read_bytes().splitlines(keepends=True)
        piece = b""
        for line in lines:
            piece += line
            if len(piece) >= piece_bytes:
                break
        if piece.strip():
            pieces.append(piece[: 2 * piece_bytes])
            total += len(pieces[-1])
        if total >= max_bytes:
            break
    return pieces


def heldout_lines(count: int, min_len: int, max_len: int) -> list[bytes]:
    """`count` non-blank lines of `min_len`..`max_len` bytes, spread over the held-out files."""
    from hat.data import resolve_documents, split_documents

    _, heldout = split_documents(resolve_documents("stdlib"), 0.02, 0)
    per_file = max(1, -(-count // len(heldout)))
    out = []
    for doc in heldout:
        lines = [ln for ln in doc.path.read_bytes().splitlines(keepends=True) if min_len <= len(ln.strip()) <= max_len]
        out += lines[:: max(1, len(lines) // per_file)][:per_file]
    return out[:count]


def cost(token_model, table, text: bytes) -> dict[str, float]:
    """Streaming versus from-scratch next-byte distributions along `text`, with the KV-cached token model
    (`token_model`) and with its full-recompute fallback for the streaming case."""
    from hat.byteprob import ByteStream, next_byte_logprobs

    def streamed(model) -> tuple[float, int]:
        model.clear()
        calls, start = model.num_prefixes, time.perf_counter()
        stream = ByteStream(model, table)
        for value in text:
            stream.logprobs()
            stream.push(value)
        return time.perf_counter() - start, model.num_prefixes - calls

    stream_s, stream_calls = streamed(token_model)
    recompute_s, _ = streamed(token_model.fallback)
    calls, start = token_model.num_prefixes, time.perf_counter()
    for n in range(len(text)):
        token_model.clear()
        next_byte_logprobs(token_model, table, text[:n])
    naive_s = time.perf_counter() - start
    naive_calls = token_model.num_prefixes - calls
    return {
        "bytes": len(text),
        "stream_calls_per_byte": stream_calls / len(text),
        "stream_bytes_per_s": len(text) / stream_s,
        "stream_recompute_bytes_per_s": len(text) / recompute_s,
        "naive_calls_per_byte": naive_calls / len(text),
        "naive_bytes_per_s": len(text) / naive_s,
    }


def tokenisation_bias(token_model, table, lines: list[bytes]) -> dict[str, dict[str, float]]:
    """Exact versus naive next-byte prediction at every byte offset of every line (each line a document)."""
    import numpy as np

    from hat.byteprob import text_logprobs

    tokenizer = table.tokenizer
    first_byte_V = table.bytes_VxL[:, 0]
    stats = {f"{m}/{s}": [0, 0.0, 0] for m in ("exact", "naive") for s in ("all", "mid_token")}
    for line in lines:
        rows, _ = text_logprobs(token_model, table, line)
        boundaries = set(np.cumsum([0] + [len(tokenizer.token_bytes[t]) for t in tokenizer.encode(line)]).tolist())
        for n in range(1, len(line)):
            target = line[n]
            naive_lp = token_model.next_token_logprobs([tuple(tokenizer.encode(line[:n]))])[0]
            naive_p = np.bincount(first_byte_V[1:], weights=np.exp(naive_lp[1:]), minlength=256)
            exact_p = np.exp(rows[n][:256])
            for method, probs in (("exact", exact_p), ("naive", naive_p)):
                for subset in ("all", "mid_token") if n not in boundaries else ("all",):
                    entry = stats[f"{method}/{subset}"]
                    entry[0] += int(np.argmax(probs) == target)
                    entry[1] += -math.log2(max(probs[target], 1e-300))
                    entry[2] += 1
    return {k: {"accuracy": c / max(n, 1), "bits": b / max(n, 1), "cuts": n} for k, (c, b, n) in stats.items()}


def ensembles(models: dict, texts: list[bytes]) -> dict[str, float]:
    """Bits/byte of each model and of mixtures and products of all of them on `texts`."""
    from hat.byteprob.bytelevel import combine, fit_mixture_weights, text_bits

    rows = {name: [model.text_logprobs(t) for t in texts] for name, model in models.items()}
    total = sum(map(len, texts))
    out = {name: sum(text_bits(r, t) for r, t in zip(rs, texts)) / total for name, rs in rows.items()}
    names = list(models)
    uniform = [1.0 / len(names)] * len(names)
    for label, weights, how in [
        ("mixture uniform", uniform, "mixture"),
        ("product uniform", uniform, "product"),
        ("product w=1", [1.0] * len(names), "product"),
    ]:
        bits = sum(text_bits(combine([rows[n][i] for n in names], weights, how), t) for i, t in enumerate(texts))
        out[label] = bits / total
    # Weights fitted on the other half of the texts (two folds), so no text scores itself.
    bits, fitted = 0.0, []
    for fold in (0, 1):
        fit = [i for i in range(len(texts)) if i % 2 != fold]
        weights = fit_mixture_weights([[rows[n][i] for i in fit] for n in names], [texts[i] for i in fit])
        fitted.append(dict(zip(names, weights)))
        bits += sum(
            text_bits(combine([rows[n][i] for n in names], weights, "mixture"), texts[i])
            for i in range(len(texts))
            if i % 2 == fold
        )
    out["mixture fitted (2-fold)"] = bits / total
    out["fitted weights"] = fitted
    return out


def foreign_cost(tokenizer_path: str, text: bytes) -> dict[str, float]:
    """Streaming exact next-byte distributions through a foreign tokenizer, with a random table model."""
    from hat.byteprob import RandomTokenModel
    from hat.byteprob.bytelevel import table_for
    from hat.text.hf_bpe import load_any_tokenizer

    start = time.perf_counter()
    tokenizer = load_any_tokenizer(tokenizer_path)
    table = table_for(tokenizer)
    out: dict[str, float] = {"vocab_size": tokenizer.vocab_size, "table_s": time.perf_counter() - start}
    model = RandomTokenModel(tokenizer.vocab_size)
    for label in ("cold", "warm"):
        stream = table.stream(model)
        start = time.perf_counter()
        for value in text:
            stream.logprobs()
            stream.push(value)
        elapsed = time.perf_counter() - start
        out[f"{label}_bytes_per_s"] = len(text) / elapsed
        out[f"{label}_model_calls_per_byte"] = stream.model_calls / len(text)
    out["bytes"] = len(text)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark exact byte-level probabilities of a BPE model.")
    parser.add_argument("--bpe", help="a token_lm (data.format bpe) run or checkpoint (parts cost, bias, ensemble)")
    parser.add_argument("--tokenizer", help="a foreign tokenizer.json (part foreign)")
    parser.add_argument("--foreign-bytes", type=int, default=300, help="bytes of text for the foreign tokenizer")
    parser.add_argument("--hat", help="a HAT run or checkpoint (for the ensemble)")
    parser.add_argument("--byte", help="a byte LM run or checkpoint (for the ensemble)")
    parser.add_argument("--cost-bytes", type=int, default=120, help="bytes of text for the cost comparison")
    parser.add_argument("--lines", type=int, default=40, help="held-out lines cut at every offset")
    parser.add_argument("--ensemble-bytes", type=int, default=3000, help="held-out bytes for the ensembles")
    parser.add_argument("--out", default="runs/benchmark_byteprob.json", help="where to write the results")
    parser.add_argument(
        "--parts", default="cost,bias,ensemble", help="comma-separated subset of cost, bias, ensemble, foreign to run"
    )
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    if parts - {"foreign"} and not args.bpe:
        parser.error("--bpe is needed for the parts cost, bias and ensemble")
    if "foreign" in parts and not args.tokenizer:
        parser.error("--tokenizer is needed for the part foreign")

    from hat.kinds import load_byte_model

    bpe = load_byte_model(args.bpe) if args.bpe else None
    results: dict[str, object] = {"bpe": args.bpe, "hat": args.hat, "byte": args.byte, "tokenizer": args.tokenizer}
    if "foreign" in parts:
        text = b"".join(heldout_texts(args.foreign_bytes, args.foreign_bytes))[: args.foreign_bytes]
        results["foreign"] = foreign_cost(args.tokenizer, text)
        print(json.dumps({"foreign": results["foreign"], "load_average": os.getloadavg()}), flush=True)
    if "cost" in parts:
        text = b"".join(heldout_texts(args.cost_bytes, args.cost_bytes))[: args.cost_bytes]
        cost(bpe.model, bpe.table, text)  # compiles every shape the timed run uses
        results["cost"] = cost(bpe.model, bpe.table, text)
        print(json.dumps({"cost": results["cost"]}), flush=True)
    if "bias" in parts:
        results["tokenisation_bias"] = tokenisation_bias(bpe.model, bpe.table, heldout_lines(args.lines, 20, 80))
        print(json.dumps({"tokenisation_bias": results["tokenisation_bias"]}), flush=True)
    if "ensemble" in parts:
        models = {"bpe": bpe}
        models |= {name: load_byte_model(path) for name, path in (("hat", args.hat), ("byte", args.byte)) if path}
        texts = heldout_texts(args.ensemble_bytes, 600)
        results["ensemble_bits_per_byte"] = ensembles(models, texts)
        results["ensemble_bytes"] = sum(map(len, texts))
        print(json.dumps({"ensemble_bits_per_byte": results["ensemble_bits_per_byte"]}), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
