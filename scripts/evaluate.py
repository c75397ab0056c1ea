"""Bits per byte of a trained hat checkpoint over text files, with zlib -9 beside it.

    python scripts/evaluate.py runs/tiny some_file.py other.txt
    python scripts/evaluate.py runs/tiny/checkpoints/2000 notes.md --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate bits per byte of a hat checkpoint on files.")
    parser.add_argument("checkpoint", help="a run's workdir, or a checkpoint step directory inside it")
    parser.add_argument("files", nargs="+", help="files to score (any bytes; each is one document)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per evaluation batch")
    args = parser.parse_args(argv)

    from hat.data import CorpusError
    from hat.evaluate import evaluate_files
    from hat.inference import load_model
    from hat.train import CheckpointError

    try:
        loaded = load_model(args.checkpoint)
        result = evaluate_files(loaded, args.files, batch_size=args.batch_size)
    except (CorpusError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({k: (None if v != v else v) for k, v in result.items()}))
    elif result["bytes"] == 0:
        print("the files hold no bytes: nothing to score")
    else:
        print(
            f"{result['bits_per_byte']:.4f} bits/byte over {result['bytes']:,} bytes "
            f"({result['model_kind']}, step {result['checkpoint_step']}); zlib -9: {result['zlib_bits_per_byte']:.4f}"
        )
        if "m1_bits_per_byte" in result:
            rate, per_token = result["m1_bits_per_byte"], result["bytes_per_token"]
            print(f"M1's EqualInfoAC code: {rate:.4f} bits/byte, {per_token:.2f} bytes/token")
    return 0


if __name__ == "__main__":
    sys.exit(main())
