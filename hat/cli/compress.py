"""`hat-compress`: EqualInfoAC compression with a trained M1 (a byte_lm checkpoint), of single files, and of corpora
into M2 token arrays."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hat.cli import at_least, make_parser, read_input, run, write_output

EXAMPLES = """
  hat-compress encode runs/m1_tiny notes.txt notes.eqac --window-bits 16 --token-bits 8
  hat-compress decode runs/m1_tiny notes.eqac notes.txt
  hat-compress corpus runs/m1_tiny runs/tokens "src/**/*.py" --window-bits 32 --token-bits 16
"""


def _add_workers_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers",
        type=at_least(0),
        default=0,
        help="processes coding at once, each with its own M1 (the output is the same whatever their number); "
        "0: one per CPU core when M1 runs on a CPU, else 1",
    )


def _add_spec_args(parser: argparse.ArgumentParser) -> None:
    count = at_least(1)
    parser.add_argument("--window-bits", type=int, default=16, help="b: bits per window (multiple of token bits)")
    parser.add_argument("--token-bits", type=int, default=8, choices=(8, 16), help="log2 of the token vocabulary v")
    parser.add_argument("--max-window-bytes", type=count, default=32, help="bytes per window at most (M1's shape)")
    parser.add_argument(
        "--m1-batch-size", type=count, default=256, help="M1 lanes: segments coded in parallel (part of the format)"
    )
    parser.add_argument("--segment-bytes", type=count, default=4096, help="independent segments coded in parallel")
    _add_workers_arg(parser)


def main(argv: list[str] | None = None) -> int:
    """Encodes or decodes one file, or compresses a corpus into a resumable token store; prints what it wrote."""
    parser = make_parser("EqualInfoAC compression with a trained M1 byte LM.", EXAMPLES)
    sub = parser.add_subparsers(dest="command", required=True)
    enc = sub.add_parser("encode", help="compress one file")
    enc.add_argument("m1", help="M1 checkpoint (a byte_lm run's workdir or step directory)")
    enc.add_argument("input", help="file to compress (any bytes)")
    enc.add_argument("output", help="compressed file to write")
    _add_spec_args(enc)
    dec = sub.add_parser("decode", help="decompress one file (its header holds b, v and M1's identity)")
    dec.add_argument("m1", help="the M1 checkpoint the file was compressed with")
    dec.add_argument("input", help="compressed file")
    dec.add_argument("output", help="decompressed file to write")
    _add_workers_arg(dec)
    corpus = sub.add_parser("corpus", help="compress a corpus into M2 token arrays (tensorstore, resumable)")
    corpus.add_argument("m1", help="M1 checkpoint (a byte_lm run's workdir or step directory)")
    corpus.add_argument("out_dir", help="directory of the token arrays (rerun with it to resume)")
    corpus.add_argument("corpus", nargs="+", help="'stdlib', files, directories or globs")
    corpus.add_argument("--max-bytes", type=int, default=0, help="byte budget (0: everything)")
    _add_spec_args(corpus)
    args = parser.parse_args(argv)

    from tqdm import tqdm

    from hat.compress.container import decode_file, encode_file, read_header, spec_of
    from hat.compress.data import prepare_token_corpus, take_budget
    from hat.compress.equal_info import M1, WindowSpec
    from hat.data import resolve_documents

    if args.command == "decode":
        blob = read_input(args.input)
        header, _ = read_header(blob)
        m1 = M1.from_checkpoint(args.m1, header["m1_batch_size"], header["max_window_bytes"], header["precision"])
        start = time.perf_counter()
        with tqdm(total=header["num_bytes"], unit="B", unit_scale=True, desc="decode") as bar:
            text = decode_file(m1, blob, bar.update, args.workers)
        write_output(args.output, text)
        seconds = time.perf_counter() - start
        print(f"{len(blob):,} -> {len(text):,} bytes ({spec_of(header).window_bits}-bit windows) in {seconds:.1f}s")
        return 0
    spec = WindowSpec(args.window_bits, args.token_bits, args.max_window_bytes)
    if args.command == "encode":
        # Read before loading M1, so a wrong path fails at once.
        data = read_input(args.input)
        m1 = M1.from_checkpoint(args.m1, args.m1_batch_size, args.max_window_bytes)
        start = time.perf_counter()
        with tqdm(total=len(data), unit="B", unit_scale=True, desc="encode") as bar:
            blob = encode_file(m1, data, spec, args.segment_bytes, bar.update, args.workers)
        write_output(args.output, blob)
        header, _ = read_header(blob)
        tokens = header["num_windows"] * spec.tokens_per_window
        print(
            f"{len(data):,} -> {len(blob):,} bytes ({header['num_windows']:,} windows, {tokens:,} tokens, "
            f"{len(data) / max(tokens, 1):.2f} bytes/token; {8 * len(blob) / max(len(data), 1):.3f} bits/byte "
            f"with header and segment table) in {time.perf_counter() - start:.1f}s"
        )
        return 0
    docs = take_budget(resolve_documents(args.corpus), args.max_bytes)
    m1 = M1.from_checkpoint(args.m1, args.m1_batch_size, args.max_window_bytes)
    store = prepare_token_corpus(
        docs, m1, spec, args.segment_bytes, Path(args.out_dir), "corpus", args.max_bytes, args.workers
    )
    print(f"{store.num_bytes:,} bytes -> {store.num_tokens:,} tokens in {store.path}")
    return 0


def entry() -> None:
    """The `hat-compress` console script."""
    sys.exit(run(main))


if __name__ == "__main__":
    entry()
