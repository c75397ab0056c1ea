"""Bits per byte of a trained hat checkpoint over text files, with zlib -9 beside it.

    python scripts/evaluate.py runs/tiny some_file.py other.txt
    python scripts/evaluate.py runs/tiny/checkpoints/2000 notes.md --json
    python scripts/evaluate.py runs/bpe_tiny notes.md --json             # token LM: exact and canonical bits/byte
    python scripts/evaluate.py runs/hat_tiny notes.md --also runs/bpe_tiny --also runs/byte_tiny --ensemble mixture

A token LM (data.format bpe) is scored through its exact next-byte distributions (`bits_per_byte`, about one model
call per byte) beside its canonical tokenisation (`bits_per_byte_canonical`). `--also` scores more checkpoints on
the same files; `--ensemble` adds their byte-level mixture or product of experts (`--weights`, default equal).
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
    parser.add_argument("--also", action="append", default=[], help="another checkpoint to score on the same files")
    parser.add_argument("--ensemble", choices=["mixture", "product"], help="also score the byte-level ensemble")
    parser.add_argument("--weights", type=float, nargs="+", help="ensemble weights, one per checkpoint")
    args = parser.parse_args(argv)

    from hat.data import CorpusError
    from hat.evaluate import evaluate_files
    from hat.inference import load_model
    from hat.text.bpe import TokenizerError
    from hat.train import CheckpointError

    try:
        loaded = load_model(args.checkpoint)
        if args.also or args.ensemble or loaded.config.model.kind == "token_lm":
            return _byte_level(args, loaded)
        result = evaluate_files(loaded, args.files, batch_size=args.batch_size)
    except (CorpusError, CheckpointError, TokenizerError, ValueError) as error:
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
    return 0


def _byte_level(args: argparse.Namespace, loaded) -> int:
    """Byte-level scoring of one or more checkpoints (token LMs exactly) and their ensemble."""
    from hat.byteprob.bytelevel import byte_model, load_byte_model
    from hat.byteprob.evaluate import score_files
    from hat.evaluate import zlib_bits_per_byte

    models = [byte_model(loaded), *(load_byte_model(path) for path in args.also)]
    if args.weights and len(args.weights) != len(models):
        raise ValueError(f"--weights needs {len(models)} values, one per checkpoint")
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
        print(_json_no_nan(result))
        return 0
    rows = scores["models"] + ([scores["ensemble"]] if scores["ensemble"] else [])
    for row in rows:
        canonical = row.get("bits_per_byte_canonical")
        extra = f"  (canonical tokenisation: {canonical:.4f})" if canonical is not None else ""
        print(f"{row['bits_per_byte']:.4f} bits/byte  {row['name']}{extra}")
    print(f"{zlib_bpb:.4f} bits/byte  zlib -9 ({scores['bytes']:,} bytes)")
    return 0


def _json_no_nan(value):
    """JSON text with NaN written as null (empty files), recursively."""

    def clean(v):
        if isinstance(v, float) and v != v:
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(value))


if __name__ == "__main__":
    sys.exit(main())
