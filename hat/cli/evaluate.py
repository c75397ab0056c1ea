"""`hat-eval`: bits per byte of hat checkpoints over text files, with zlib -9 beside it.

    hat-eval runs/tiny some_file.py other.txt
    hat-eval runs/tiny/checkpoints/2000 notes.md --json
    hat-eval runs/bpe_tiny notes.md --json             # token LM: whole document, one teacher-forced pass
    hat-eval runs/bpe_tiny notes.md --exact            # token LM: the exact next-byte chain beside it
    hat-eval runs/hat_tiny notes.md --also runs/bpe_tiny --also runs/byte_tiny --ensemble mixture
    hat-eval runs/hat_tiny a.py b.py --compare runs/byte_tiny --out runs/eval/suite.json

With one checkpoint and no other flag it prints one line (or one JSON object), scored as the model's kind scores
files (`hat.kinds`). A token LM scores each file as a complete document followed by end-of-text, by teacher-forced
passes over its canonical tokenisation (the only valid one for a complete document: forward-pass speed);
`--exact` scores it through the exact next-byte chain instead (`bits_per_byte`, about one token step per byte, the
end-of-text counted) beside the teacher-forced number (`bits_per_byte_canonical`). `--also` scores more checkpoints
byte by byte on the same files; `--ensemble` adds their byte-level mixture or product of experts (`--weights`,
default equal). `--compare` (more checkpoints) or `--suite` runs the evaluation suite: every model on the same files,
with units, parameters, FLOPs/byte, throughput and robustness to perturbed copies of the files, printed as one
table and written as JSON (`--out`) with PNG plots next to it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from hat.cli import make_parser, run
from hat.kinds import KindError


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return None if isinstance(value, float) and value != value else value


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command; returns the exit code."""
    parser = make_parser("Evaluate bits per byte of hat checkpoints on files.", __doc__.split("\n\n", 1)[1])
    parser.add_argument("checkpoint", help="a run's workdir, or a checkpoint step directory inside it")
    parser.add_argument("files", nargs="+", help="files to score (any bytes; each is one document)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per evaluation batch")
    parser.add_argument("--exact", action="store_true", help="token LM: score through the exact next-byte chain")
    parser.add_argument("--also", action="append", default=[], help="another checkpoint to score on the same files")
    parser.add_argument("--ensemble", choices=["mixture", "product"], help="also score the byte-level ensemble")
    parser.add_argument("--weights", type=float, nargs="+", help="ensemble weights, one per checkpoint")
    parser.add_argument("--compare", action="append", default=[], help="another checkpoint to compare (repeatable)")
    parser.add_argument("--suite", action="store_true", help="run the full suite even for one checkpoint")
    parser.add_argument("--out", default="runs/eval_suite.json", help="suite: JSON path (PNGs are written beside it)")
    parser.add_argument("--seed", type=int, default=0, help="suite: seed of the perturbed copies")
    args = parser.parse_args(argv)

    from hat.checkpoint import load_model
    from hat.evaluate import evaluate_files, evaluate_suite, format_table, write_plots

    suite = args.suite or bool(args.compare)
    if args.exact and (suite or args.also or args.ensemble):
        raise KindError("--exact scores one checkpoint on its own (--also/--ensemble are byte-level already)")
    loaded = [load_model(path) for path in [args.checkpoint, *args.compare]]
    if args.also or args.ensemble:
        return _byte_level(args, loaded[0])
    if suite:
        result = evaluate_suite(loaded, args.files, batch_size=args.batch_size, seed=args.seed)
    else:
        result = evaluate_files(loaded[0], args.files, batch_size=args.batch_size, exact=args.exact)
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
        if "bits_per_byte_canonical" in result:
            print(f"teacher-forced canonical tokenisation: {result['bits_per_byte_canonical']:.4f} bits/byte")
        if "m1_bits_per_byte" in result:
            rate, per_token = result["m1_bits_per_byte"], result["bytes_per_token"]
            print(f"M1's EqualInfoAC code: {rate:.4f} bits/byte, {per_token:.2f} bytes/token")
    return 0


def _byte_level(args: argparse.Namespace, loaded) -> int:
    """Byte-level scoring of one or more checkpoints (token LMs exactly) and their ensemble."""
    from hat.byteprob.evaluate import score_files
    from hat.checkpoint import load_model
    from hat.evaluate import zlib_bits_per_byte
    from hat.kinds import kind_of

    others = [load_model(path) for path in args.also]
    models = [kind_of(model.config).byte_model(model) for model in [loaded, *others]]
    if args.weights and len(args.weights) != len(models):
        raise KindError(f"--weights needs {len(models)} values, one per checkpoint")
    scores = score_files(models, args.files, args.ensemble, args.weights)
    zlib_bpb = zlib_bits_per_byte(args.files)
    if len(models) == 1 and not args.ensemble:
        result = scores["models"][0] | {
            "bytes": scores["bytes"],
            "zlib_bits_per_byte": zlib_bpb,
            "model_kind": loaded.config.model.kind,
            "checkpoint_step": loaded.step,
        }
    else:
        result = scores | {"zlib_bits_per_byte": zlib_bpb}
    if args.json:
        print(json.dumps(_jsonable(result)))
        return 0
    rows = scores["models"] + ([scores["ensemble"]] if scores["ensemble"] else [])
    for row in rows:
        canonical = row.get("bits_per_byte_canonical")
        extra = f"  (canonical tokenisation: {canonical:.4f})" if canonical is not None else ""
        print(f"{row['bits_per_byte']:.4f} bits/byte  {row['name']}{extra}")
    print(f"{zlib_bpb:.4f} bits/byte  zlib -9 ({scores['bytes']:,} bytes)")
    return 0


def entry() -> None:
    """The `hat-eval` console script."""
    sys.exit(run(main))


if __name__ == "__main__":
    entry()
