"""`hat-train` (also `python train.py`): train a hat model from a config file.

Overrides are dotted `key.sub=value` pairs parsed as YAML; unknown keys are errors that name the valid ones.
"""

from __future__ import annotations

import json
import os
import sys

from hat.cli import at_least, make_parser, run

EXAMPLES = """
  hat-train                                         # configs/hat_tiny.yaml on the Python stdlib corpus
  hat-train configs/byte_tiny.yaml workdir=runs/byte train.steps=500
  hat-train workdir=runs/tiny                       # rerun with the same workdir to resume
  hat-train configs/hat_llama3_8b.yaml --dry-run --fake-devices 8   # compile only: memory per device
  python train.py ...                               # the same command from a checkout
"""


def main(argv: list[str] | None = None) -> int:
    """Trains (or, with `--dry-run`, compiles and reports) the configured run; prints the final summary line."""
    parser = make_parser(
        "Train a byte-level HAT (or a flat byte / token LM) from a YAML config.\n"
        "Overrides are dotted key.sub=value pairs parsed as YAML; unknown keys are errors naming the valid ones.",
        EXAMPLES,
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
        type=at_least(0),
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
    # The config is optional, so a first positional that is an override belongs to the overrides.
    if config_path is not None and "=" in config_path and not config_path.endswith((".yaml", ".yml")):
        overrides.insert(0, config_path)
        config_path = None

    from hat.config import load_config

    config = load_config(config_path, overrides)
    if args.dry_run:
        from hat.train.dry_run import dry_run, format_report

        report = dry_run(config)
        print(json.dumps(report, indent=1) if args.json else format_report(report))
        return 0
    from hat.train import train

    summary = train(config)
    print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))
    return 0


def entry() -> None:
    """The `hat-train` console script."""
    sys.exit(run(main))


if __name__ == "__main__":
    entry()
