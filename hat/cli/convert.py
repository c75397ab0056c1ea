"""`hat-convert`: convert a Hugging Face Llama-family checkpoint or a llama.cpp GGUF file into a hat parameter store.

`--to lm` gives a flat token LM with the same logits (evaluate it, sample from it, or train it further).
`--to hat` gives a HAT whose backbone holds the Llama's transformer blocks and whose byte encoder, pooling, decoder
and head are new, sized by `--config` (a HAT run config; its `model.backbone` is replaced by the Llama's). Train it
with the conversion recipe: `hat-train configs/hat_from_llama.yaml train.init_from=runs/llama_hat` (stage 1:
backbone frozen), then `configs/hat_from_llama_stage2.yaml` (everything, backbone at a lower learning rate).

The output is a parameter store (one tensorstore array per parameter plus `hat_params.json`) written one tensor at
a time into a hidden directory that is renamed into place only when complete. The backbone's settings are printed
as config overrides, so a recipe config can be matched to the converted model.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from hat.cli import make_parser, run

EXAMPLES = """
  hat-convert HF_DIR runs/llama_lm --to lm
  hat-convert SmolLM2-135M-Instruct.Q4_1.gguf runs/smollm2 --to lm   # GGUF: dequantised, tokenizer.json written
  hat-convert HF_DIR runs/llama_hat --to hat --config configs/hat_from_llama.yaml
  hat-train configs/hat_from_llama.yaml train.init_from=runs/llama_hat     # stage 1 of the recipe
"""


def backbone_overrides(stack: Any) -> list[str]:
    """`model.backbone.*=value` overrides that give a config the converted backbone's architecture."""
    lines = []
    for field in dataclasses.fields(stack):
        value = getattr(stack, field.name)
        if dataclasses.is_dataclass(value):
            value = "{" + ", ".join(f"{k}: {v}" for k, v in dataclasses.asdict(value).items()) + "}"
        elif value is None:
            value = "null"
        lines.append(f"model.backbone.{field.name}={value}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Converts the checkpoint, then prints the store's path and the backbone's settings as overrides."""
    parser = make_parser("Convert a Hugging Face Llama checkpoint into a hat parameter store.", EXAMPLES)
    parser.add_argument(
        "hf_dir", help="directory with config.json and *.safetensors (and tokenizer.json), or a Llama GGUF file"
    )
    parser.add_argument("out_dir", help="new directory for the converted parameters (must not exist)")
    parser.add_argument("--to", choices=["lm", "hat"], default="lm", help="flat token LM, or HAT around the blocks")
    parser.add_argument("--config", help="--to hat: HAT run config giving encoder/pooling/decoder sizes and seed")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides of --config")
    args = parser.parse_intermixed_args(argv)

    from hat.config import load_config
    from hat.convert.llama import convert_llama, open_llama_source

    base = load_config(args.config, args.overrides) if (args.config or args.to == "hat") else None
    out = convert_llama(args.hf_dir, args.out_dir, to=args.to, base=base, progress=True)
    spec = open_llama_source(args.hf_dir).spec
    print(f"wrote {out} ({args.to}); backbone settings for a matching config:")
    for line in backbone_overrides(spec.stack):
        print(f"  {line}")
    return 0


def entry() -> None:
    """The `hat-convert` console script."""
    sys.exit(run(main))


if __name__ == "__main__":
    entry()
