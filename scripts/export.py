"""Export a hat checkpoint as config.json + safetensors (no optimizer state).

    python scripts/export.py runs/bpe_tiny exports/bpe_tiny                      # token LM -> HF Llama layout
    python scripts/export.py runs/hat_tiny exports/hat_tiny --dtype bfloat16     # HAT -> released TFree-HAT layout
    python scripts/export.py stores/llama exports/llama --max-shard-size 2GB     # sharded, with an index

Flat models (kind byte_lm / token_lm) load with `transformers.LlamaForCausalLM.from_pretrained(OUT_DIR)`; HAT models
are written in Aleph Alpha's released layout (`scripts/import_hat.py` reads them back). OUT_DIR must not exist; it
appears only once complete. A checkpoint's tokenizer.json is copied beside the weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export a hat checkpoint as config.json + safetensors.")
    parser.add_argument("checkpoint", help="a run's workdir, a checkpoint step directory, or a parameter store")
    parser.add_argument("out_dir", help="directory to create (must not exist)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="tensor dtype on disk")
    parser.add_argument("--max-shard-size", default="5GB", help="largest safetensors file (e.g. 5GB, 500MB, 2GiB)")
    parser.add_argument(
        "--format",
        choices=["auto", "hf", "released"],
        default="auto",
        help="auto: HF Llama for flat models, the released HAT layout for HAT",
    )
    args = parser.parse_args(argv)

    from hat.checkpoint import CheckpointError
    from hat.convert.export import export_checkpoint

    try:
        out = export_checkpoint(args.checkpoint, args.out_dir, args.dtype, args.max_shard_size, args.format)
    except (CheckpointError, ValueError) as error:  # ConversionError and ConfigError are ValueErrors
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
