"""Import a released HAT checkpoint (Aleph Alpha's TFree-HAT layout) as a hat parameter store.

    python scripts/import_hat.py checkpoints/tfree-hat-7b stores/tfree-hat-7b
    python scripts/evaluate.py stores/tfree-hat-7b notes.md        # the store loads like any checkpoint

RELEASED_DIR holds config.json and model.safetensors (or shards with model.safetensors.index.json). Tensors are read
one at a time, so the import needs about the memory of the largest tensor. Features hat cannot represent (other RoPE
scalings, whole-vector QK-norm, MLP biases, ...) are refused with the config field named. OUT_DIR must not exist; it
appears only once complete.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Import a released HAT checkpoint as a hat parameter store.")
    parser.add_argument("released_dir", help="directory with config.json and safetensors (single file or sharded)")
    parser.add_argument("out_dir", help="parameter store to create (must not exist)")
    args = parser.parse_args(argv)

    from hat.convert.released import import_released

    try:
        out = import_released(args.released_dir, args.out_dir)
    except ValueError as error:  # ConversionError and ConfigError are ValueErrors
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
