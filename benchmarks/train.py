"""Side-by-side training benchmark: HAT versus the flat byte model for the same wall-clock budget.

    python benchmarks/train.py --budget-s 600 --out runs/bench

Trains `configs/hat_tiny.yaml` and `configs/byte_tiny.yaml` one after the other in this one invocation (each in
its own process, same machine, same budget of training seconds), then prints held-out bits/byte, bytes/s and their
ratios, zlib -9 on the same held-out files, and writes `<out>/heldout_bpb.png` (held-out bits/byte against
training seconds for both models, with the zlib line).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

MODELS = {"hat_tiny": REPO / "configs/hat_tiny.yaml", "byte_tiny": REPO / "configs/byte_tiny.yaml"}


def run_training(
    name: str, config: Path, out: Path, budget_s: float, eval_every: int, steps: int | None, extra: list[str]
) -> Path:
    """Trains one model in a subprocess (a fresh JAX runtime) and returns its workdir."""
    workdir = out / name
    command = [
        sys.executable, str(REPO / "train.py"), str(config), f"workdir={workdir}",
        f"train.time_budget_s={budget_s}", f"train.eval_every={eval_every}", "train.checkpoint_every=100000",
        f"data.cache_dir={out / 'data'}", *([f"train.steps={steps}"] if steps else []), *extra,
    ]  # fmt: skip
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    return workdir


def summarize(workdir: Path) -> dict[str, float]:
    """Final held-out bits/byte, median bytes/s and the eval curve of one run."""
    from hat.train.metrics import read_metrics

    rows = read_metrics(workdir)
    evals = [(r["time/train_seconds"], r["eval/bits_per_byte"]) for r in rows if "eval/bits_per_byte" in r]
    speeds = sorted(r["perf/bytes_per_sec"] for r in rows if "perf/bytes_per_sec" in r)
    steps = max(r["step"] for r in rows)
    return {
        "heldout_bits_per_byte": evals[-1][1],
        "bytes_per_sec": speeds[len(speeds) // 2],
        "steps": steps,
        "curve": evals,
    }


def heldout_zlib(config: Path) -> float:
    """zlib -9 bits/byte on the held-out files of a config's corpus split."""
    from hat import data as hat_data
    from hat.config import load_config
    from hat.evaluate import zlib_bits_per_byte

    cfg = load_config(config)
    _, heldout = hat_data.split_documents(hat_data.resolve_documents(cfg.data.corpus), cfg.data.eval_fraction)
    return zlib_bits_per_byte([d.path for d in heldout])


def plot(results: dict[str, dict], zlib_bpb: float, path: Path) -> None:
    """Held-out bits/byte against training seconds, one line per model, zlib as a horizontal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, result in results.items():
        seconds, bpb = zip(*result["curve"])
        ax.plot(seconds, bpb, marker="o", markersize=3, label=f"{name} ({result['bytes_per_sec'] / 1e3:.1f} kB/s)")
    ax.axhline(zlib_bpb, color="gray", linestyle="--", label=f"zlib -9 ({zlib_bpb:.2f})")
    ax.set_xlabel("training seconds (2 CPU cores)")
    ax.set_ylabel("held-out bits/byte")
    ax.set_ylim(top=min(4.0, ax.get_ylim()[1]))
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("HAT vs flat byte transformer, same wall-clock budget")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train hat_tiny and byte_tiny for equal time and compare.")
    parser.add_argument("--budget-s", type=float, default=600, help="training seconds per model")
    parser.add_argument("--eval-every", type=int, default=100, help="steps between held-out evaluations")
    parser.add_argument(
        "--hat-steps", type=int, default=None,
        help="schedule length for hat_tiny (default: its config); set it to the steps that fit the budget",
    )
    parser.add_argument(
        "--byte-steps", type=int, default=None,
        help="schedule length for byte_tiny, so its learning rate also decays within the budget",
    )
    parser.add_argument("--out", type=Path, default=REPO / "runs/bench", help="output directory")
    parser.add_argument("overrides", nargs="*", help="extra dotted overrides applied to both runs")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    steps = {"hat_tiny": args.hat_steps, "byte_tiny": args.byte_steps}
    for name, config in MODELS.items():
        workdir = run_training(name, config, args.out, args.budget_s, args.eval_every, steps[name], args.overrides)
        results[name] = summarize(workdir)
    zlib_bpb = heldout_zlib(MODELS["hat_tiny"])
    hat, flat = results["hat_tiny"], results["byte_tiny"]
    print(f"\n{'model':<10} {'held-out bits/byte':>19} {'bytes/s':>10} {'steps':>6}")
    for name, r in results.items():
        print(f"{name:<10} {r['heldout_bits_per_byte']:>19.4f} {r['bytes_per_sec']:>10.0f} {r['steps']:>6}")
    print(f"{'zlib -9':<10} {zlib_bpb:>19.4f}")
    ratios = {
        "speed_ratio_hat_over_byte": hat["bytes_per_sec"] / flat["bytes_per_sec"],
        "bpb_hat_minus_byte": hat["heldout_bits_per_byte"] - flat["heldout_bits_per_byte"],
    }
    print(f"HAT / byte bytes-per-second ratio: {ratios['speed_ratio_hat_over_byte']:.2f}x")
    print(f"HAT - byte held-out bits/byte: {ratios['bpb_hat_minus_byte']:+.4f}")
    plot(results, zlib_bpb, args.out / "heldout_bpb.png")
    summary = {"budget_s": args.budget_s, "zlib_bits_per_byte": zlib_bpb, **ratios}
    summary |= {name: {k: v for k, v in r.items() if k != "curve"} for name, r in results.items()}
    (args.out / "benchmark.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {args.out / 'heldout_bpb.png'} and {args.out / 'benchmark.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
