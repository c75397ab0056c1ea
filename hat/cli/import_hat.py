"""`hat-import`: import a released HAT checkpoint (Aleph Alpha's TFree-HAT layout) as a hat parameter store.

RELEASED_DIR holds config.json and model.safetensors (or shards with model.safetensors.index.json). Tensors are read
one at a time, so the import needs about the memory of the largest tensor. Features hat cannot represent (other RoPE
scalings, whole-vector QK-norm, MLP biases, ...) are refused with the config field named. OUT_DIR must not exist; it
appears only once complete. The store's config carries what the released runtime does around the network (context
length, special tokens, no leading end-of-text, per-part windows), so evaluation and generation behave as there;
`--precision released` also runs it in bfloat16 with norms that do not upcast, as the released runtime does.
"""

from __future__ import annotations

import sys

from hat.cli import make_parser, run

EXAMPLES = """
  hat-import checkpoints/tfree-hat-7b stores/tfree-hat-7b
  hat-import checkpoints/tfree-hat-7b stores/tfree-hat-7b-bf16 --precision released
  python scripts/evaluate.py stores/tfree-hat-7b notes.md        # the store loads like any checkpoint
"""


def main(argv: list[str] | None = None) -> int:
    """Imports the released checkpoint and prints the store's path."""
    parser = make_parser("Import a released HAT checkpoint as a hat parameter store.", EXAMPLES)
    parser.add_argument("released_dir", help="directory with config.json and safetensors (single file or sharded)")
    parser.add_argument("out_dir", help="parameter store to create (must not exist)")
    parser.add_argument(
        "--precision",
        choices=["float32", "released"],
        default="float32",
        help="released: bfloat16 compute and norms without upcast, as the released runtime runs the checkpoint",
    )
    args = parser.parse_args(argv)

    from hat.convert.released import import_released

    print(import_released(args.released_dir, args.out_dir, args.precision))
    return 0


def entry() -> None:
    """The `hat-import` console script."""
    sys.exit(run(main))


if __name__ == "__main__":
    entry()
