"""EqualInfoAC encode and decode speed, this tree against an earlier revision, in one invocation.

    python benchmarks/compress_speed.py --baseline-rev 5263d5c --bytes 131072 --baseline-bytes 4096
    python benchmarks/compress_speed.py --baseline-rev "" --workers 1 2 --m1 runs/m1_tiny --bytes 1048576

Both revisions run the same command line (`scripts/compress.py encode` and `decode`, each in its own process) on the
first bytes of the default corpus's held-out split, with two M1 shapes: the default (`configs/m1_tiny.yaml`,
2 x 128) and the paper's (3 x 256, 4 heads, MLP 1,024). Without `--m1` both are freshly initialised (a trained M1
codes more bytes per window; speed per byte changes little). The seconds are the ones each command prints for its
coding, M1's compilation (and with `--workers` above 1 the workers' start) included, process start and checkpoint
loading excluded. This tree runs once per `--workers` count (`hat-compress --workers`: processes coding at once);
its files must be identical for every count. Every decoded file is compared with its input. The load average is
printed beside the numbers: on a shared machine they are pessimistic.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAPER_M1 = ["model.backbone.num_layers=3", "model.backbone.hidden_size=256", "model.backbone.num_heads=4",
            "model.backbone.num_kv_heads=4", "model.backbone.mlp_hidden_size=1024"]  # fmt: skip


def save_m1(directory: Path, overrides: list[str]) -> Path:
    """A freshly initialised M1 (configs/m1_tiny.yaml with `overrides`) saved as train.py saves checkpoints."""
    from flax import nnx

    from hat.checkpoint import Checkpointer
    from hat.config import load_config
    from hat.models import build_model

    config = load_config(REPO / "configs/m1_tiny.yaml", [f"workdir={directory}", *overrides])
    _, params = nnx.split(build_model(config.model, rngs=nnx.Rngs(0)), nnx.Param)
    checkpointer = Checkpointer(directory)
    checkpointer.save(1, {"params": params, "opt_state": {}}, config)
    checkpointer.close()
    return directory


def heldout_text(num_bytes: int) -> bytes:
    """The first `num_bytes` of the default corpus's held-out files, in the benchmark's fixed hash order, then (the
    held-out split is 563 kB) of its training files in the same order."""
    from hat.compress.data import take_budget
    from hat.data import resolve_documents, split_documents

    train, heldout = split_documents(resolve_documents("stdlib"), 0.02, 0)
    text = b"".join(doc.path.read_bytes() for doc in take_budget(heldout, num_bytes))[:num_bytes]
    more = take_budget(train, num_bytes - len(text)) if len(text) < num_bytes else []
    return (text + b"".join(doc.path.read_bytes() for doc in more))[:num_bytes]


def export_revision(rev: str, directory: Path) -> Path:
    """The tree of `rev` (git archive) under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    archive = directory / "tree.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "-o", str(archive), rev], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(directory / "tree", filter="data")
    return directory / "tree"


def run_compress(tree: Path, args: list[str], env: dict[str, str] | None = None) -> float:
    """Runs `scripts/compress.py` of `tree` (in `env`, by default this one's); returns the seconds it reports."""
    env = dict(env or os.environ, PYTHONPATH=str(tree))
    result = subprocess.run(
        [sys.executable, str(tree / "scripts/compress.py"), *args], env=env, capture_output=True, text=True
    )
    if result.returncode:
        raise RuntimeError(f"{tree} compress {args[0]} failed:\n{result.stderr[-2000:]}")
    return float(re.findall(r"in ([0-9.]+)s", result.stdout)[-1])


def measure(
    tree: Path, m1: Path, text: bytes, work: Path, batch: int, segment_bytes: int, workers: int | None = None
) -> dict:
    """Encode and decode `text` with one revision and one M1 (`workers` processes, where the revision has the
    option); bytes/s each way and whether it round-trips."""
    source, packed, unpacked = work / "in.bin", work / "x.eqac", work / "out.bin"
    source.write_bytes(text)
    spec = ["--window-bits", "16", "--token-bits", "8", "--max-window-bytes", "32", "--m1-batch-size", str(batch),
            "--segment-bytes", str(segment_bytes)]  # fmt: skip
    parallel = [] if workers is None else ["--workers", str(workers)]
    encode_s = run_compress(tree, ["encode", str(m1), str(source), str(packed), *spec, *parallel])
    decode_s = run_compress(tree, ["decode", str(m1), str(packed), str(unpacked), *parallel])
    return {
        "packed_sha": hashlib.sha256(packed.read_bytes()).hexdigest(),
        "bytes": len(text),
        "compressed_bytes": packed.stat().st_size,
        "encode_s": encode_s,
        "decode_s": decode_s,
        "encode_bytes_per_s": len(text) / encode_s,
        "decode_bytes_per_s": len(text) / decode_s,
        "round_trip": unpacked.read_bytes() == text,
        "load_average": os.getloadavg()[0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="EqualInfoAC encode/decode bytes/s, this tree vs a revision.")
    parser.add_argument("--baseline-rev", default="5263d5c", help="the revision to compare with ('': none)")
    parser.add_argument("--bytes", type=int, default=131_072, help="bytes coded by this tree")
    parser.add_argument("--baseline-bytes", type=int, default=4096, help="bytes coded by the baseline (slow)")
    parser.add_argument("--batch", type=int, default=256, help="M1 lanes (this tree)")
    parser.add_argument("--baseline-batch", type=int, default=64, help="M1 batch (baseline)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1], help="this tree's worker counts to time")
    parser.add_argument("--segment-bytes", type=int, default=0, help="segment length (0: bytes / batch, >= 64)")
    parser.add_argument("--m1", help="a trained default-shape M1 to use instead of a fresh one")
    parser.add_argument("--shapes", nargs="+", default=["default", "paper"], choices=["default", "paper"])
    parser.add_argument("--out", default="runs/bench_compress_speed.json")
    args = parser.parse_args(argv)

    results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        baseline = export_revision(args.baseline_rev, tmp / "baseline") if args.baseline_rev else None
        text = heldout_text(max(args.bytes, args.baseline_bytes if baseline else 0))
        runs = [("baseline", baseline, args.baseline_bytes, args.baseline_batch, None)] if baseline else []
        runs += [(f"workers {w}", REPO, args.bytes, args.batch, w) for w in args.workers]
        for shape in args.shapes:
            if shape == "default" and args.m1:
                m1 = Path(args.m1)
            else:
                m1 = save_m1(tmp / f"m1_{shape}", PAPER_M1 if shape == "paper" else [])
            for name, tree, size, batch, workers in runs:
                work = tmp / f"{shape}_{name.replace(' ', '_')}"
                work.mkdir()
                # Without --segment-bytes, as many segments as the batch has lanes: each revision's best case.
                segment_bytes = args.segment_bytes or max(size // batch, 64)
                row = measure(tree, m1, text[:size], work, batch, segment_bytes, workers)
                revision = args.baseline_rev if name == "baseline" else "this tree"
                row |= {"m1": shape, "revision": revision, "batch": batch, "workers": workers,
                        "segment_bytes": segment_bytes}  # fmt: skip
                results["rows"].append(row)
                print(
                    f"{shape:7s} M1, {revision:9s} ({name}, batch {batch}, {segment_bytes}-byte segments): "
                    f"{row['bytes']:,} bytes, encode {row['encode_bytes_per_s']:,.0f} B/s, decode "
                    f"{row['decode_bytes_per_s']:,.0f} B/s, round trip {'exact' if row['round_trip'] else 'FAILED'}; "
                    f"load average {row['load_average']:.1f}",
                    flush=True,
                )
            mine = {row["packed_sha"] for row in results["rows"] if row["m1"] == shape and row["workers"]}
            if len(mine) > 1:
                print(f"{shape} M1: the worker counts wrote DIFFERENT files", flush=True)
                results["rows"][-1]["round_trip"] = False
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")
    return 0 if all(row["round_trip"] for row in results["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
