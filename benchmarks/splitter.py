"""Benchmark hat.text's word splitter on the running Python's standard library sources, one file at a time.

    python benchmarks/splitter.py [--limit-mb 5] [--max-word-bytes 100] [--repeat 3]

Prints MB/s for split_words and word_lengths (best of --repeat runs, pinned to one CPU core where the OS allows)
and the distribution of bytes per word.
"""

import argparse
import os
import pathlib
import sys
import sysconfig
import time

import numpy as np

from hat.text import split_words, word_lengths


def stdlib_sources(limit_mb: float | None) -> list[bytes]:
    """The standard library's .py files outside site-packages, in path order, up to ``limit_mb`` MB in total."""
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    files = []
    total = 0
    for path in sorted(root.rglob("*.py")):
        if "site-packages" in path.parts or not path.is_file():
            continue
        if limit_mb is not None and total >= limit_mb * 1e6:
            break
        data = path.read_bytes()
        files.append(data)
        total += len(data)
    return files


def best_seconds(fn, files: list[bytes], max_word_bytes: int, repeat: int) -> float:
    """Fastest of ``repeat`` passes of ``fn(data, max_word_bytes)`` over all files."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for data in files:
            fn(data, max_word_bytes)
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--limit-mb", type=float, default=None, help="use only the first N MB of sources (default: all)"
    )
    parser.add_argument("--max-word-bytes", type=int, default=100, help="word length limit passed to the splitter")
    parser.add_argument("--repeat", type=int, default=1, help="passes per function; the fastest is reported")
    args = parser.parse_args(argv)

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    files = stdlib_sources(args.limit_mb)
    total_mb = sum(map(len, files)) / 1e6
    print(f"{len(files)} files, {total_mb:.2f} MB from {sysconfig.get_paths()['stdlib']}")

    limit = args.max_word_bytes
    for name, fn in (("split_words", split_words), ("word_lengths", word_lengths)):
        seconds = best_seconds(fn, files, limit, args.repeat)
        print(f"{name:13s} {total_mb / seconds:7.2f} MB/s  ({seconds:.2f} s)")

    lengths = np.concatenate([word_lengths(d, limit) for d in files])
    p50, p90, p99 = np.percentile(lengths, [50, 90, 99])
    print(
        f"words {len(lengths)}, mean {lengths.mean():.2f} bytes/word, median {p50:.0f}, p90 {p90:.0f}, "
        f"p99 {p99:.0f}, max {lengths.max()}, words of exactly {limit} bytes {(lengths == limit).sum()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
