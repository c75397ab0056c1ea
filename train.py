"""Train a hat model from a config file.

    python train.py                                   # configs/hat_tiny.yaml on the Python stdlib corpus
    python train.py configs/byte_tiny.yaml workdir=runs/byte train.steps=500
    python train.py workdir=runs/tiny                 # rerun with the same workdir to resume
    python train.py configs/hat_llama3_8b.yaml --dry-run --fake-devices 8   # compile only: memory per device

Overrides are dotted `key.sub=value` pairs parsed as YAML; unknown keys are errors that name the valid ones.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Train a byte-level HAT (or flat byte LM) from a YAML config.",
        epilog="Example: python train.py configs/hat_tiny.yaml workdir=runs/tiny train.steps=200",
    )
    parser.add_argument("config", nargs="?", help="YAML config file (default: configs/hat_tiny.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides such as train.steps=100 or workdir=runs/x")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="build the model abstractly, compile the sharded step for the configured mesh and print parameter "
        "counts, FLOPs and per-device memory; allocates no parameters and reads no data",
    )
    parser.add_argument(
        "--fake-devices",
        type=int,
        default=0,
        metavar="N",
        help="simulate N CPU devices (XLA host platform), e.g. to dry-run a pod mesh on a laptop",
    )
    parser.add_argument("--json", action="store_true", help="with --dry-run: print the report as JSON")
    args = parser.parse_intermixed_args(argv)
    if args.fake_devices:
        # Must happen before jax is imported anywhere in this process.
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={args.fake_devices}"
        )
        os.environ["JAX_PLATFORMS"] = "cpu"
    config_path = args.config
    overrides = list(args.overrides)
    if config_path is not None and "=" in config_path and not config_path.endswith((".yaml", ".yml")):
        overrides.insert(0, config_path)
        config_path = None

    from hat.checkpoint import CheckpointError
    from hat.config import ConfigError, load_config
    from hat.data import CorpusError
    from hat.train import MeshError, TrainingError, train

    try:
        config = load_config(config_path, overrides)
        if args.dry_run:
            from hat.train.dry_run import dry_run, format_report

            report = dry_run(config)
            print(json.dumps(report, indent=1) if args.json else format_report(report))
            return 0
        summary = train(config)
    except (ConfigError, CorpusError, CheckpointError, TrainingError, MeshError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
