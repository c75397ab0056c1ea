"""Sample a continuation of a prompt from a trained hat checkpoint, byte by byte.

    python scripts/generate.py runs/tiny --prompt "def main(" --max-new-bytes 200 --temperature 0.8
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
    args = parser.parse_args(argv)
    if args.max_new_bytes < 0 or args.temperature < 0 or not 0 <= args.top_k <= 256:
        parser.error("--max-new-bytes and --temperature must be >= 0 and --top-k in [0, 256]")

    from hat.generate import sample_bytes
    from hat.inference import load_model
    from hat.train import CheckpointError

    try:
        loaded = load_model(args.checkpoint)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = sys.stdout.buffer
    out.write(args.prompt.encode())
    out.flush()
    if loaded.config.data.format == "eqinfo":
        from hat.compress.generate import sample_eqinfo_bytes as sample_bytes  # M2: tokens -> windows -> M1 bytes
    sampled = sample_bytes(loaded, args.prompt.encode(), args.max_new_bytes, args.temperature, args.top_k, args.seed)
    for value in sampled:
        # Raw bytes go straight out: a terminal shows invalid UTF-8 as replacement characters.
        out.write(bytes([value]))
        out.flush()
    out.write(b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
