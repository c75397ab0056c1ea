"""`hat-export`: export a hat checkpoint as config.json + safetensors (no optimizer state).

Flat models (kind byte_lm / token_lm) load with `transformers.LlamaForCausalLM.from_pretrained(OUT_DIR)`; HAT models
are written in Aleph Alpha's released layout (`hat-import` reads them back). OUT_DIR must not exist; it appears only
once complete. A checkpoint's tokenizer.json is copied beside the weights.
"""

from __future__ import annotations

import sys

from hat.cli import make_parser, run

EXAMPLES = """
  hat-export runs/bpe_tiny exports/bpe_tiny                      # token LM -> HF Llama layout
  hat-export runs/hat_tiny exports/hat_tiny --dtype bfloat16     # HAT -> released TFree-HAT layout
  hat-export stores/llama exports/llama --max-shard-size 2GB     # sharded, with an index
"""


def main(argv: list[str] | None = None) -> int:
    """Exports the checkpoint and prints the output directory."""
    parser = make_parser("Export a hat checkpoint as config.json + safetensors.", EXAMPLES)
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
    parser.add_argument(
        "--runtime",
        choices=["hf", "vllm"],
        default="hf",
        help="HAT only: the released runtime the export must load in (vllm also needs cross-attention in every "
        "decoder layer, no pooling QK-norm, pooling width = backbone width)",
    )
    args = parser.parse_args(argv)

    from hat.convert.export import export_checkpoint

    print(export_checkpoint(args.checkpoint, args.out_dir, args.dtype, args.max_shard_size, args.format, args.runtime))
    return 0


def entry() -> None:
    """The `hat-export` console script."""
    sys.exit(run(main))


if __name__ == "__main__":
    entry()
