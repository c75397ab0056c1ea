"""Benchmark EqualInfoAC: coder throughput and overhead, bytes per token for each [b, v] beside zlib and the paper,
a lossless round trip, and (given both checkpoints) M2 against the byte baseline on the same held-out files.

    python benchmarks/compress.py runs/m1_tiny --heldout-bytes 40000
    python benchmarks/compress.py runs/m1_tiny --m2 runs/eqinfo_tiny --byte-model runs/byte_bench

The held-out files are the default corpus's held-out split (the same files train.py holds out), taken in a fixed
pseudo-random order up to `--heldout-bytes`. Encode/decode speed against an earlier revision: compress_speed.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from pathlib import Path

import numpy as np

# Lester et al. 2024, bytes per token on C4 (v = 256 / 65536), and GZip.
PAPER_BYTES_PER_TOKEN = {16: (2.66, 5.31), 32: (3.49, 6.97), 64: (4.16, 8.33), 128: (4.61, 9.22)}
PAPER_GZIP = (2.23, 4.47)


def coder_throughput(num_symbols: int, lanes: int = 256, seed: int = 0) -> dict[str, float]:
    """Speed of the vectorised window coder on random peaked 256-symbol distributions (windows of 16 bits, one
    symbol per lane per step, as M1 drives it), encoding and then decoding every symbol back (checked)."""
    from hat.compress import arithmetic as ac

    rng = np.random.default_rng(seed)
    steps = max(num_symbols // lanes, 1)
    probs = rng.dirichlet(np.full(256, 0.05), size=(steps, lanes)) + 1e-12
    start = time.perf_counter()
    freqs = ac.quantize(probs.reshape(-1, 256)).reshape(steps, lanes, 256)
    quantize_s = time.perf_counter() - start
    cum = ac.cumulative(freqs)
    symbols = np.minimum((cum[..., 1:] <= rng.random((steps, lanes, 1)) * (1 << 14)).sum(-1), 255)
    all_lanes = np.arange(lanes)
    coder = ac.WindowCoder(lanes, 16)
    # As EqualInfoAC does: a symbol that would leave no 16-bit point starts the next window instead, and a window
    # ends once its interval holds a single point. Per step: which lanes start a window before the symbol, which
    # end one after it, and the value of each finished window at the step it ended.
    starts, ends, values = [], [], np.zeros((steps, lanes), np.int64)
    start = time.perf_counter()
    for step in range(steps):
        s = symbols[step]
        low, width = coder.low_B.copy(), coder.width_B.copy()
        coder.narrow(all_lanes, cum[step, all_lanes, s], freqs[step, all_lanes, s])
        overflow = coder.points(all_lanes) == 0
        if overflow.any():  # close the window before this symbol and code it in a fresh one
            coder.low_B[overflow], coder.width_B[overflow] = low[overflow], width[overflow]
            values[step - 1, overflow] = coder.window_value(coder.codeword(all_lanes[overflow]))
            coder.reset(all_lanes[overflow])
            coder.narrow(all_lanes[overflow], cum[step, overflow, s[overflow]], freqs[step, overflow, s[overflow]])
        full = coder.points(all_lanes) <= 1
        values[step, full] = coder.window_value(coder.codeword(all_lanes[full]))
        coder.reset(all_lanes[full])
        starts.append(overflow)
        ends.append(full)
    encode_s = time.perf_counter() - start
    # The windows still open at the end close with their codewords; each step decodes with its window's value.
    still_open = ~ends[-1]
    values[-1, still_open] = coder.window_value(coder.codeword(all_lanes[still_open]))
    ends[-1] = np.ones(lanes, bool)
    point_of_step = np.zeros_like(values)
    current = values[-1].copy()
    for step in range(steps - 1, -1, -1):
        closes_here = ends[step] | (starts[step + 1] if step + 1 < steps else False)
        current = np.where(closes_here, values[step], current)
        point_of_step[step] = current
    decoder = ac.WindowCoder(lanes, 16)
    start = time.perf_counter()
    for step in range(steps):
        decoder.reset(all_lanes[starts[step]])
        decoded = decoder.decode(all_lanes, cum[step], decoder.points_of(point_of_step[step]))
        decoder.reset(all_lanes[ends[step]])
        if not np.array_equal(decoded, symbols[step]):
            raise AssertionError(f"the window coder decoded other symbols at step {step}")
    decode_s = time.perf_counter() - start
    coded = steps * lanes
    return {
        "symbols": coded,
        "quantize_symbols_per_s": coded / quantize_s,
        "encode_symbols_per_s": coded / encode_s,
        "decode_symbols_per_s": coded / decode_s,
    }


def window_overheads(m1, texts: list[bytes], spec, max_windows: int) -> dict[str, float]:
    """Per-window bits: the codeword's length against the ideal `-log2 q` (quantised), and the zero padding."""
    from hat.compress.arithmetic import WindowCoder, cumulative

    texts = texts[:max_windows]
    freqs_NxWxV = m1.freqs(texts)
    code = ideal_q = 0.0
    coder = WindowCoder(1, spec.window_bits, spec.precision)
    lane = np.array([0])
    for row, freqs_WxV in zip(texts, freqs_NxWxV):
        symbols = np.frombuffer(row, np.uint8).astype(np.int64)
        positions = np.arange(len(symbols))
        cum_WxV1 = cumulative(freqs_WxV)
        coder.reset(lane)
        for position, symbol in zip(positions, symbols):
            coder.narrow(lane, cum_WxV1[position, symbol : symbol + 1], freqs_WxV[position, symbol : symbol + 1])
        point = int(coder.codeword(lane)[0])
        trailing = (point & -point).bit_length() - 1 if point else coder.grid
        code += coder.grid - trailing
        ideal_q += float(np.sum(spec.precision - np.log2(freqs_WxV[positions, symbols].astype(np.float64))))
    n = max(len(texts), 1)
    return {
        "windows_measured": len(texts),
        "code_bits_per_window": code / n,
        "ideal_q_bits_per_window": ideal_q / n,
        "padding_bits_per_window": spec.window_bits - code / n,
    }


def window_context_bits_per_byte(m1, texts: list[bytes], window_bytes: int, precision: int = 14) -> dict[str, float]:
    """M1's code rate in the regime the encoder puts it in: every text cut into consecutive `window_bytes`-byte
    pieces, each scored from a fresh context `[EOT] + piece` with the quantised frequencies the coder uses
    (`-log2 q`). The encoder's windows vary in length (at most `window_bytes`); fixed pieces make this a property
    of M1 alone, comparable across M1s whose windows differ."""
    pieces = [text[start : start + window_bytes] for text in texts for start in range(0, len(text), window_bytes)]
    bits = 0.0
    for first in range(0, len(pieces), m1.batch_size):
        chunk = pieces[first : first + m1.batch_size]
        freqs_NxWxV = m1.freqs(chunk)
        for piece, freqs_WxV in zip(chunk, freqs_NxWxV):
            symbols = np.frombuffer(piece, np.uint8).astype(np.int64)
            chosen = freqs_WxV[np.arange(len(symbols)), symbols].astype(np.float64)
            bits += float(np.sum(precision - np.log2(chosen)))
    num_bytes = sum(map(len, pieces))
    return {"window_bytes": window_bytes, "pieces": len(pieces), "bytes": num_bytes, "bits_per_byte": bits / num_bytes}


def full_context_bits_per_byte(m1_path: str, paths: list[Path], seq_bytes: int) -> dict:
    """M1's bits/byte on the files packed as training packs them, but into `seq_bytes`-byte sequences whatever M1
    was trained with, so M1s trained on short and on long sequences are scored at the same (long) context."""
    import dataclasses

    from hat.checkpoint import load_model
    from hat.evaluate import evaluate_files

    loaded = load_model(m1_path)
    config = loaded.config
    model = dataclasses.replace(config.model, max_word_bytes=min(config.model.max_word_bytes, seq_bytes - 1))
    data = dataclasses.replace(config.data, seq_bytes=seq_bytes)
    loaded = dataclasses.replace(loaded, config=dataclasses.replace(config, model=model, data=data))
    return evaluate_files(loaded, paths) | {"seq_bytes": seq_bytes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark the arithmetic coder and EqualInfoAC.")
    parser.add_argument("m1", help="M1 checkpoint (byte_lm)")
    parser.add_argument("--heldout-bytes", type=int, default=40_000, help="bytes of held-out files to compress")
    parser.add_argument(
        "--coder-symbols", type=int, default=100_000, help="symbols for the coder's throughput (0: skip it)"
    )
    parser.add_argument("--window-bits", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--max-window-bytes", type=int, nargs="+", default=[16, 32], help="cap per window_bits")
    parser.add_argument("--segment-bytes", type=int, default=1024)
    parser.add_argument("--m1-batch-size", type=int, default=256)
    parser.add_argument("--m2", help="an eqinfo M2 run to score on the held-out files")
    parser.add_argument("--byte-model", help="a byte-level run (same training time) to score beside M2")
    parser.add_argument(
        "--full-context-bytes", type=int, default=128, help="sequence length for M1's full-context bits/byte"
    )
    parser.add_argument("--out", default="runs/bench_compress.json")
    args = parser.parse_args(argv)

    from hat.compress.data import take_budget
    from hat.compress.equal_info import M1, WindowSpec, decode_segments, encode_segments, split_segments
    from hat.data import resolve_documents, split_documents

    results: dict = {}
    if args.coder_symbols:
        results["coder"] = c = coder_throughput(args.coder_symbols)
        print(
            f"window coder: {c['encode_symbols_per_s']:,.0f} symbols/s encode, {c['decode_symbols_per_s']:,.0f} "
            f"decode, {c['quantize_symbols_per_s']:,.0f} quantise (numpy) over {c['symbols']:,} symbols"
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
        m1 = M1.from_checkpoint(args.m1, args.m1_batch_size, max_window_bytes)
        segments = [s for t in texts for s in split_segments(t, args.segment_bytes)]
        m1.freqs([b"warm up"])
        start = time.perf_counter()
        coded = encode_segments(m1, segments, spec)
        encode_s = time.perf_counter() - start
        lengths = coded.lengths.tolist()
        window_texts = []
        for index, segment in enumerate(segments):
            offsets = np.concatenate([[0], np.cumsum(coded.of_segment(index)[1])])
            window_texts += [segment[offsets[k] : offsets[k + 1]] for k in range(len(offsets) - 1)]
        overhead = window_overheads(m1, window_texts, spec, 3000)
        start = time.perf_counter()
        decoded = decode_segments(m1, coded.values, coded.counts, spec)
        decode_s = time.perf_counter() - start
        mismatches = sum(a != b for a, b in zip(decoded, window_texts))
        windows = coded.values
        take = len(decoded)
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
            f"{row['ideal_q_bits_per_window']:.2f} (q), padding "
            f"{row['padding_bits_per_window']:.2f}; {row['windows_at_cap']} windows at the cap, "
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

    # The same (budget-cut) held-out texts as above, as files, so every model scores the same bytes.
    text_dir = Path(args.out).parent / "bench_compress_heldout"
    text_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, text in enumerate(texts):
        paths.append(text_dir / f"{index}.py")
        paths[-1].write_bytes(text)
    m1_result = full_context_bits_per_byte(args.m1, paths, args.full_context_bytes)
    results["m1_plain"] = m1_result
    print(
        f"M1 at full context ({args.full_context_bytes}-byte sequences): {m1_result['bits_per_byte']:.4f} "
        f"bits/byte; zlib -9 {m1_result['zlib_bits_per_byte']:.4f}"
    )
    results["m1_window_context"] = []
    for max_window_bytes in sorted(set(args.max_window_bytes)):
        m1 = M1.from_checkpoint(args.m1, args.m1_batch_size, max_window_bytes)
        scored = window_context_bits_per_byte(m1, texts, max_window_bytes)
        results["m1_window_context"].append(scored)
        print(
            f"M1 at window contexts ([EOT] + {max_window_bytes}-byte pieces, quantised q): "
            f"{scored['bits_per_byte']:.4f} bits/byte over {scored['pieces']:,} pieces"
        )

    if args.m2 or args.byte_model:
        from hat.checkpoint import load_model
        from hat.evaluate import evaluate_files

        for name, path in (("m2", args.m2), ("byte_model", args.byte_model)):
            if path:
                summary = json.loads((Path(path) / "summary.json").read_text())
                result = evaluate_files(load_model(path), paths) | {"train_seconds": summary["train_seconds"]}
                results[name] = result
                print(
                    f"{name} ({path}): {result['bits_per_byte']:.4f} bits/byte on the held-out files after "
                    f"{summary['train_seconds']:.0f}s of training (step {result['checkpoint_step']})"
                    + (f"; M1's code {result['m1_bits_per_byte']:.4f}" if "m1_bits_per_byte" in result else "")
                )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
