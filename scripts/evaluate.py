"""Bits per byte of hat checkpoints over text files, with zlib -9 beside it.

    python scripts/evaluate.py runs/tiny some_file.py other.txt
    python scripts/evaluate.py runs/tiny/checkpoints/2000 notes.md --json
    python scripts/evaluate.py runs/hat_tiny a.py b.py --compare runs/byte_tiny --out runs/eval/suite.json

With one checkpoint and no suite flag it prints one line (or one JSON object). `--compare` (more checkpoints, any
model kind) or `--suite` runs the evaluation suite: every model on the same files, with units, parameters,
FLOPs/byte, throughput and robustness to perturbed copies of the files, printed as one table and written as JSON
(`--out`) with PNG plots next to it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return None if isinstance(value, float) and value != value else value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate bits per byte of hat checkpoints on files.")
    parser.add_argument("checkpoint", help="a run's workdir, or a checkpoint step directory inside it")
    parser.add_argument("files", nargs="+", help="files to score (any bytes; each is one document)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per evaluation batch")
    parser.add_argument("--compare", action="append", default=[], help="another checkpoint to compare (repeatable)")
    parser.add_argument("--suite", action="store_true", help="run the full suite even for one checkpoint")
    parser.add_argument("--out", default="runs/eval_suite.json", help="suite: JSON path (PNGs are written beside it)")
    parser.add_argument("--seed", type=int, default=0, help="suite: seed of the perturbed copies")
    args = parser.parse_args(argv)

    from hat.data import CorpusError
    from hat.evaluate import evaluate_files, evaluate_suite, format_table, write_plots
    from hat.inference import load_model
    from hat.train import CheckpointError

    suite = args.suite or bool(args.compare)
    try:
        loaded = [load_model(path) for path in [args.checkpoint, *args.compare]]
        if suite:
            result = evaluate_suite(loaded, args.files, batch_size=args.batch_size, seed=args.seed)
        else:
            result = evaluate_files(loaded[0], args.files, batch_size=args.batch_size)
    except (CorpusError, CheckpointError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if suite:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(_jsonable(result), indent=1))
        plots = write_plots(result, out)
        if args.json:
            print(json.dumps(_jsonable(result)))
        else:
            print(format_table(result))
            print(f"wrote {out} and {', '.join(str(p) for p in plots)}")
    elif args.json:
        print(json.dumps(_jsonable(result)))
    elif result["bytes"] == 0:
        print("the files hold no bytes: nothing to score")
    else:
        print(
            f"{result['bits_per_byte']:.4f} bits/byte over {result['bytes']:,} bytes "
            f"({result['model_kind']}, step {result['checkpoint_step']}); zlib -9: {result['zlib_bits_per_byte']:.4f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
