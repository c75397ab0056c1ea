"""Benchmark EqualInfoAC: coder throughput and overhead, bytes per token for each [b, v] beside zlib and the paper,
a lossless round trip, and (given both checkpoints) M2 against the byte baseline on the same held-out files.

    python benchmarks/compress.py runs/m1_tiny --heldout-bytes 40000
    python benchmarks/compress.py runs/m1_tiny --m2 runs/eqinfo_tiny --byte-model runs/byte_bench

The held-out files are the default corpus's held-out split (the same files train.py holds out), taken in a fixed
pseudo-random order up to `--heldout-bytes` (M1 codes a few kB per second on a CPU).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from pathlib import Path

# Lester et al. 2024, bytes per token on C4 (v = 256 / 65536), and GZip.
PAPER_BYTES_PER_TOKEN = {16: (2.66, 5.31), 32: (3.49, 6.97), 64: (4.16, 8.33), 128: (4.61, 9.22)}
PAPER_GZIP = (2.23, 4.47)


def coder_throughput(num_symbols: int, seed: int = 0) -> dict[str, float]:
    """Encode and decode speed of the exact coder on random 256-symbol distributions, and its overhead."""
    import numpy as np

    from hat.compress import arithmetic as ac

    rng = np.random.default_rng(seed)
    # Peaked distributions whose rare symbols get probabilities far below 2**-14 (float64 Dirichlet draws can be
    # exactly zero; a 1e-12 floor keeps the ideal code length finite).
    probs = rng.dirichlet(np.full(256, 0.05), size=num_symbols) + 1e-12
    probs /= probs.sum(1, keepdims=True)
    start = time.perf_counter()
    freqs = ac.quantize(probs)
    quantize_s = time.perf_counter() - start
    cum = np.cumsum(freqs, axis=1) / freqs.sum(1, keepdims=True)
    symbols = np.minimum((cum < rng.random((num_symbols, 1))).sum(1), 255)
    start = time.perf_counter()
    value, num_bits = ac.encode(symbols, freqs)
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    decoded = ac.decode(value, num_bits, freqs)
    decode_s = time.perf_counter() - start
    ideal_q = ac.ideal_bits(freqs, symbols)
    ideal_p = float(-np.log2(probs[np.arange(num_symbols), symbols]).sum())
    return {
        "symbols": num_symbols,
        "quantize_symbols_per_s": num_symbols / quantize_s,
        "encode_symbols_per_s": num_symbols / encode_s,
        "decode_symbols_per_s": num_symbols / decode_s,
        "code_bits": num_bits,
        "ideal_bits_quantized": ideal_q,
        "ideal_bits_float": ideal_p,
        "lossless": bool(np.array_equal(decoded, symbols)),
    }


def window_overheads(m1, texts: list[bytes], next_bytes: list[bytes], spec, max_windows: int) -> dict[str, float]:
    """Per-window bits: codeword length, ideal -log2 q (quantised) and -log2 p (M1's floats), zero padding; and
    how many windows end before the greedy limit because their next byte codes to all-zero bits (the rule that
    makes every window decode unambiguously)."""
    import numpy as np

    from hat.compress.arithmetic import Encoder, quantize

    texts, next_bytes = texts[:max_windows], next_bytes[:max_windows]
    probs = m1.probs([t + n for t, n in zip(texts, next_bytes)])
    code = ideal_q = ideal_p = 0.0
    cut_by_rule = 0
    for row, extra, probs_WxV in zip(texts, next_bytes, probs):
        symbols = np.frombuffer(row + extra, np.uint8)[: spec.max_window_bytes]
        positions = np.arange(len(symbols))
        freqs = quantize(probs_WxV[: len(symbols)], spec.precision)
        chosen = freqs[positions, symbols]
        below = np.cumsum(freqs, axis=1)[positions, symbols] - chosen
        encoder = Encoder(spec.precision)
        for cum, freq in zip(below[: len(row)].tolist(), chosen[: len(row)].tolist()):
            encoder.encode(cum, freq)
        code += encoder.code()[1]
        if len(symbols) > len(row):
            encoder.encode(int(below[len(row)]), int(chosen[len(row)]))
            cut_by_rule += encoder.code()[1] <= spec.window_bits
        ideal_q += float(np.sum(spec.precision - np.log2(chosen[: len(row)])))
        ideal_p += float(-np.log2(probs_WxV[positions[: len(row)], symbols[: len(row)]].astype(np.float64)).sum())
    n = max(len(texts), 1)
    return {
        "windows_measured": len(texts),
        "code_bits_per_window": code / n,
        "ideal_q_bits_per_window": ideal_q / n,
        "ideal_p_bits_per_window": ideal_p / n,
        "padding_bits_per_window": spec.window_bits - code / n,
        "windows_cut_by_zero_bit_rule": cut_by_rule,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark the arithmetic coder and EqualInfoAC.")
    parser.add_argument("m1", help="M1 checkpoint (byte_lm)")
    parser.add_argument("--heldout-bytes", type=int, default=40_000, help="bytes of held-out files to compress")
    parser.add_argument("--roundtrip-bytes", type=int, default=0, help="bytes to decode back (0: all of them)")
    parser.add_argument("--coder-symbols", type=int, default=100_000)
    parser.add_argument("--window-bits", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--max-window-bytes", type=int, nargs="+", default=[16, 32], help="cap per window_bits")
    parser.add_argument("--segment-bytes", type=int, default=1024)
    parser.add_argument("--m2", help="an eqinfo M2 run to score on the held-out files")
    parser.add_argument("--byte-model", help="a byte-level run (same training time) to score beside M2")
    parser.add_argument("--out", default="runs/bench_compress.json")
    args = parser.parse_args(argv)

    from hat.compress.data import take_budget
    from hat.compress.equal_info import M1, WindowSpec, decode_windows, encode_segments, split_segments
    from hat.data import resolve_documents, split_documents

    results: dict = {"coder": coder_throughput(args.coder_symbols)}
    c = results["coder"]
    print(
        f"coder: {c['encode_symbols_per_s']:,.0f} symbols/s encode, {c['decode_symbols_per_s']:,.0f} decode, "
        f"{c['quantize_symbols_per_s']:,.0f} quantise; {c['code_bits']} bits vs ideal {c['ideal_bits_quantized']:.1f} "
        f"(quantised) / {c['ideal_bits_float']:.1f} (float) over {c['symbols']:,} symbols; lossless={c['lossless']}"
    )

    _, heldout = split_documents(resolve_documents("stdlib"), 0.02, 0)
    docs = take_budget(heldout, args.heldout_bytes)
    texts, used = [], 0
    for doc in docs:
        data = doc.path.read_bytes()[: args.heldout_bytes - used]
        texts.append(data)
        used += len(data)
    num_bytes = sum(map(len, texts))
    zlib_bytes = sum(len(zlib.compress(t, 9)) for t in texts)
    results["heldout"] = {"files": [str(d.path) for d in docs], "bytes": num_bytes, "zlib9_bytes": zlib_bytes}
    print(f"held-out subset: {len(docs)} files, {num_bytes:,} bytes; zlib -9: {zlib_bytes:,} bytes")

    rows = []
    for window_bits, max_window_bytes in zip(args.window_bits, args.max_window_bytes):
        spec = WindowSpec(window_bits, 8, max_window_bytes)
        m1 = M1.from_checkpoint(args.m1, 64, max_window_bytes)
        segments = [s for t in texts for s in split_segments(t, args.segment_bytes)]
        m1.probs([b"warm up"])
        start = time.perf_counter()
        per_segment = encode_segments(m1, segments, spec)
        encode_s = time.perf_counter() - start
        windows = [w for ws, _ in per_segment for w in ws]
        lengths = [n for _, ns in per_segment for n in ns]
        window_texts, next_bytes = [], []
        for segment, (_, segment_lengths) in zip(segments, per_segment):
            offset = 0
            for n in segment_lengths:
                window_texts.append(segment[offset : offset + n])
                next_bytes.append(segment[offset + n : offset + n + 1])
                offset += n
        overhead = window_overheads(m1, window_texts, next_bytes, spec, 3000)
        budget = args.roundtrip_bytes or num_bytes
        take = 0
        while take < len(lengths) and sum(lengths[:take]) < budget:
            take += 1
        start = time.perf_counter()
        decoded = decode_windows(m1, windows[:take], spec)
        decode_s = time.perf_counter() - start
        mismatches = sum(a != b for a, b in zip(decoded, window_texts[:take]))
        row = {
            "window_bits": window_bits,
            "max_window_bytes": max_window_bytes,
            "windows": len(windows),
            "bytes_per_window": num_bytes / len(windows),
            "bytes_per_token_v256": num_bytes / (len(windows) * window_bits / 8),
            "bytes_per_token_v65536": num_bytes / (len(windows) * window_bits / 16),
            "windows_at_cap": sum(n == max_window_bytes for n in lengths),
            "segments": len(segments),
            "bits_per_byte": window_bits * len(windows) / num_bytes,
            "encode_bytes_per_s": num_bytes / encode_s,
            "decode_bytes_per_s": sum(map(len, decoded)) / decode_s,
            "roundtrip_windows": take,
            "roundtrip_bytes": sum(map(len, decoded)),
            "roundtrip_mismatches": mismatches,
        } | overhead
        rows.append(row)
        paper = PAPER_BYTES_PER_TOKEN.get(window_bits, (float("nan"), float("nan")))
        print(
            f"EqualInfoAC[{window_bits}, 256/65k] cap {max_window_bytes}: {row['bytes_per_token_v256']:.2f} / "
            f"{row['bytes_per_token_v65536']:.2f} bytes/token (paper on C4: {paper[0]} / {paper[1]}); "
            f"{row['bits_per_byte']:.3f} bits/byte; code {row['code_bits_per_window']:.2f} bits/window vs ideal "
            f"{row['ideal_q_bits_per_window']:.2f} (q) / {row['ideal_p_bits_per_window']:.2f} (p), padding "
            f"{row['padding_bits_per_window']:.2f}; {row['windows_at_cap']} windows at the cap, "
            f"{row['windows_cut_by_zero_bit_rule']} of {row['windows_measured']} cut by the zero-bit rule, "
            f"{row['segments']} segment ends; encode "
            f"{row['encode_bytes_per_s']:,.0f} B/s, decode {row['decode_bytes_per_s']:,.0f} B/s; round trip "
            f"{row['roundtrip_bytes']:,} bytes in {take:,} windows, mismatches: {mismatches}"
        )
    results["equal_info"] = rows
    zlib_per_token = (num_bytes / zlib_bytes, 2 * num_bytes / zlib_bytes)
    results["zlib9_bytes_per_token"] = zlib_per_token
    print(
        f"zlib -9: {zlib_per_token[0]:.2f} / {zlib_per_token[1]:.2f} bytes/token at v=256/65k "
        f"(paper's GZip on C4: {PAPER_GZIP[0]} / {PAPER_GZIP[1]}); raw bytes: 1.00"
    )

    if args.m2 or args.byte_model:
        from hat.checkpoint import load_model
        from hat.evaluate import evaluate_files

        # The same (budget-cut) held-out texts as above, as files, so every model scores the same bytes.
        text_dir = Path(args.out).parent / "bench_compress_heldout"
        text_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for index, text in enumerate(texts):
            paths.append(text_dir / f"{index}.py")
            paths[-1].write_bytes(text)
        m1_result = evaluate_files(load_model(args.m1), paths)
        results["m1_plain"] = m1_result
        print(f"M1 itself (no windows, its training context): {m1_result['bits_per_byte']:.4f} bits/byte; "
              f"zlib -9 {m1_result['zlib_bits_per_byte']:.4f}")
        for name, path in (("m2", args.m2), ("byte_model", args.byte_model)):
            if path:
                summary = json.loads((Path(path) / "summary.json").read_text())
                result = evaluate_files(load_model(path), paths) | {"train_seconds": summary["train_seconds"]}
                results[name] = result
                print(f"{name} ({path}): {result['bits_per_byte']:.4f} bits/byte on the held-out files after "
                      f"{summary['train_seconds']:.0f}s of training (step {result['checkpoint_step']})"
                      + (f"; M1's code {result['m1_bits_per_byte']:.4f}" if "m1_bits_per_byte" in result else ""))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
