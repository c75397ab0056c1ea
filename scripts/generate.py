"""Sample a continuation of a prompt from a trained hat checkpoint, byte by byte.

    python scripts/generate.py runs/tiny --prompt "def main(" --max-new-bytes 200 --temperature 0.8
    python scripts/generate.py runs/bpe_tiny --prompt "def pri"       # token LM, exact byte by byte
    python scripts/generate.py runs/hat_tiny --also runs/bpe_tiny --ensemble product --prompt "import "

A token LM (data.format bpe) samples from its exact next-byte distribution, so a prompt that ends inside a token
continues that token. `--also` with `--ensemble` samples from a byte-level ensemble of several checkpoints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate text from a hat checkpoint.")
    parser.add_argument("checkpoint", help="a run's workdir, or a checkpoint step directory inside it")
    parser.add_argument("--prompt", default="", help="text to continue (UTF-8); may be empty")
    parser.add_argument("--max-new-bytes", type=int, default=256, help="bytes to generate at most")
    parser.add_argument("--temperature", type=float, default=0.8, help="sampling temperature; 0 is greedy")
    parser.add_argument("--top-k", type=int, default=0, help="sample among the k most likely bytes (0: all)")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--also", action="append", default=[], help="another checkpoint for the ensemble")
    parser.add_argument("--ensemble", choices=["mixture", "product"], default="mixture", help="how to combine")
    parser.add_argument("--weights", type=float, nargs="+", help="ensemble weights, one per checkpoint")
    args = parser.parse_args(argv)
    if args.max_new_bytes < 0 or args.temperature < 0 or not 0 <= args.top_k <= 256:
        parser.error("--max-new-bytes and --temperature must be >= 0 and --top-k in [0, 256]")

    from hat.byteprob.bytelevel import Ensemble, byte_model, load_byte_model, sample
    from hat.generate import sample_bytes
    from hat.inference import load_model
    from hat.text.bpe import TokenizerError
    from hat.train import CheckpointError

    try:
        loaded = load_model(args.checkpoint)
        byte_level = None
        if args.also or loaded.config.model.kind == "token_lm":
            models = [byte_model(loaded), *(load_byte_model(path) for path in args.also)]
            byte_level = models[0] if len(models) == 1 else Ensemble(models, args.weights, args.ensemble)
    except (CheckpointError, TokenizerError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = sys.stdout.buffer
    out.write(args.prompt.encode())
    out.flush()
    prompt = args.prompt.encode()
    if byte_level is not None:
        sampled = sample(byte_level, prompt, args.max_new_bytes, args.temperature, args.top_k, args.seed)
    else:
        sampled = sample_bytes(loaded, prompt, args.max_new_bytes, args.temperature, args.top_k, args.seed)
    for value in sampled:
        # Raw bytes go straight out: a terminal shows invalid UTF-8 as replacement characters.
        out.write(bytes([value]))
        out.flush()
    out.write(b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
