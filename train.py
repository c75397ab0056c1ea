"""Train a hat model from a config file.

    python train.py                                   # configs/hat_tiny.yaml on the Python stdlib corpus
    python train.py configs/byte_tiny.yaml workdir=runs/byte train.steps=500
    python train.py workdir=runs/tiny                 # rerun with the same workdir to resume

Overrides are dotted `key.sub=value` pairs parsed as YAML; unknown keys are errors that name the valid ones.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Train a byte-level HAT (or flat byte LM) from a YAML config.",
        epilog="Example: python train.py configs/hat_tiny.yaml workdir=runs/tiny train.steps=200",
    )
    parser.add_argument("config", nargs="?", help="YAML config file (default: configs/hat_tiny.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides such as train.steps=100 or workdir=runs/x")
    args = parser.parse_args(argv)
    config_path = args.config
    overrides = list(args.overrides)
    if config_path is not None and "=" in config_path and not config_path.endswith((".yaml", ".yml")):
        overrides.insert(0, config_path)
        config_path = None

    from hat.config import ConfigError, load_config
    from hat.data import CorpusError
    from hat.train import CheckpointError, TrainingError, train

    try:
        config = load_config(config_path, overrides)
        summary = train(config)
    except (ConfigError, CorpusError, CheckpointError, TrainingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
