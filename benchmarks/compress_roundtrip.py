"""EqualInfoAC round trips at scale: the default corpus's whole held-out split, non-English man pages and a binary,
each encoded and decoded by `hat-compress` with the encoder's and decoder's settings varied.

    python benchmarks/compress_roundtrip.py runs/m1_tiny --other-bytes 2500000 --binary-bytes 1000000

Per input: encoded with `--workers 2` and decoded with `--workers 1` (and the reverse for the held-out split), and
the held-out split also with another segment length (the segment count changes; the decoder reads it from the
header) and decoded on 4 simulated CPU devices (`--xla_force_host_platform_device_count=4`: M1 runs on the first).
M1's batch size is part of the format: the decoder takes it from the header, and `decode_file` refuses an M1
loaded with another (`ComputationShapeError`, tests/test_compress.py). Prints bytes/token, bits/byte of the file
and bytes/s each way; exits 1 if any decoded file differs from its input.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling, also when loaded as a module
from compress_speed import REPO, run_compress  # noqa: E402

LANGUAGES = ("ja", "ko", "ru", "zh_CN", "uk", "de", "fr")


def man_pages(num_bytes: int) -> bytes:
    """Uncompressed man pages of several languages (sorted by path), the first `num_bytes` of them."""
    out, size = [], 0
    for language in LANGUAGES:
        for path in sorted(Path(f"/usr/share/man/{language}").rglob("*.gz")):
            data = gzip.decompress(path.read_bytes())
            out.append(data)
            size += len(data)
            if size >= num_bytes:
                return b"".join(out)[:num_bytes]
    return b"".join(out)


def heldout_split() -> bytes:
    """The default corpus's whole held-out split (`data.eval_fraction: 0.02`), its files in their own order."""
    from hat.data import resolve_documents, split_documents

    _, heldout = split_documents(resolve_documents("stdlib"), 0.02, 0)
    return b"".join(doc.path.read_bytes() for doc in heldout)


def binary(num_bytes: int) -> bytes:
    """The first `num_bytes` of a large executable (gdb if installed, else this Python)."""
    path = Path("/usr/bin/gdb") if Path("/usr/bin/gdb").is_file() else Path(sys.executable).resolve()
    return path.read_bytes()[:num_bytes]


def trip(m1: str, name: str, data: bytes, work: Path, encode_args: list[str], decode_args: list[str],
         decode_env: dict | None = None) -> dict:  # fmt: skip
    """Encodes `data` and decodes it back with the given options; sizes, speeds and whether it is exact."""
    source, packed, unpacked = work / f"{name}.in", work / f"{name}.eqac", work / f"{name}.out"
    source.write_bytes(data)
    spec = ["--window-bits", "16", "--token-bits", "8", "--max-window-bytes", "32"]
    encode_s = run_compress(REPO, ["encode", m1, str(source), str(packed), *spec, *encode_args])
    decode_s = run_compress(REPO, ["decode", m1, str(packed), str(unpacked), *decode_args], decode_env)
    from hat.compress.container import read_header, spec_of

    header, _ = read_header(packed.read_bytes())
    tokens = header["num_windows"] * spec_of(header).tokens_per_window
    row = {
        "input": name,
        "bytes": len(data),
        "encode": " ".join(encode_args),
        "decode": " ".join(decode_args) + (" (4 CPU devices)" if decode_env else ""),
        "segments": header["num_segments"],
        "bytes_per_token": len(data) / tokens,
        "file_bits_per_byte": 8 * packed.stat().st_size / len(data),
        "encode_bytes_per_s": len(data) / encode_s,
        "decode_bytes_per_s": len(data) / decode_s,
        "exact": unpacked.read_bytes() == data,
    }
    print(
        f"{name:9s} {len(data):>10,} B  encode [{row['encode']}] {row['encode_bytes_per_s']:>7,.0f} B/s  decode "
        f"[{row['decode']}] {row['decode_bytes_per_s']:>7,.0f} B/s  {header['num_segments']:>5} segments  "
        f"{row['bytes_per_token']:.2f} bytes/token  {row['file_bits_per_byte']:.3f} bits/byte  "
        f"{'exact' if row['exact'] else 'DIFFERENT'}  (load {os.getloadavg()[0]:.1f})",
        flush=True,
    )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="EqualInfoAC round trips of MBs of text and binary.")
    parser.add_argument("m1", help="a trained M1 (configs/m1_tiny.yaml's run)")
    parser.add_argument("--other-bytes", type=int, default=2_500_000, help="bytes of non-English man pages")
    parser.add_argument("--binary-bytes", type=int, default=1_000_000, help="bytes of an executable")
    parser.add_argument("--work", type=Path, default=REPO / "runs/compress_roundtrip")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    heldout = heldout_split()
    devices = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    rows = [
        trip(args.m1, "heldout", heldout, args.work, ["--workers", "2"], ["--workers", "1"]),
        trip(
            args.m1,
            "heldout",
            heldout,
            args.work,
            ["--workers", "1", "--segment-bytes", "1024"],
            ["--workers", "2"],
            devices,
        ),
        trip(args.m1, "man", man_pages(args.other_bytes), args.work, ["--workers", "2"], ["--workers", "1"]),
        trip(args.m1, "binary", binary(args.binary_bytes), args.work, ["--workers", "2"], ["--workers", "1"]),
    ]
    out = args.work / "roundtrip.json"
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}, indent=1))
    print(f"wrote {out}")
    return 0 if all(row["exact"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
