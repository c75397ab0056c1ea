"""Equal-compute training benchmark: HAT, the BPE token LM and the flat byte LM of the same backbone, side by side.

    python benchmarks/train.py --budget-s 600 --out runs/bench
    python benchmarks/train.py --arm hat=configs/hat_tiny.yaml \
        --arm hat_no_ngrams=configs/hat_tiny.yaml:model.ngrams.sizes=[]

Trains each arm (default: `hat_tiny`, `bpe_tiny`, `byte_tiny`) one after the other in this one invocation, each in
its own process (a fresh JAX runtime) on the same corpus split, for the same budget of training seconds. Every arm
runs its config's own schedule, or with `--fit-steps` a schedule fitted to the budget in the arm's own run
(`train.fit_steps_to_budget`: its warmup is timed, then `train.steps` is what the rest of the budget holds, so that
every learning rate decays within the budget whatever the machine), or `--steps N` for all. Then prints,
per arm: held-out bits/byte at the end of its budget (equal wall-clock) and interpolated at the training bytes and
the training FLOPs that every arm reached (equal bytes, equal FLOPs),
training bytes/s, FLOPs per text byte, parameters; zlib -9 on the same held-out files; and, with `--eval-files`,
each final model's bits/byte on other text (token LMs by whole-document canonical scoring). Writes
`<out>/heldout_bpb.png` (held-out bits/byte against seconds, bytes and FLOPs) and `<out>/benchmark.json`.

Throughput numbers need an idle machine: the load average is printed before each arm, and after it the cores that
other processes kept busy while it trained (`hat.machine_load.OtherCPU`: the load average counts our own threads),
with a warning when they disturbed it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hat.machine_load import BUSY_OTHER_CORES, OtherCPU

REPO = Path(__file__).resolve().parent.parent
DEFAULT_ARMS = [f"{name}=configs/{name}.yaml" for name in ("hat_tiny", "bpe_tiny", "byte_tiny")]


def parse_arm(text: str) -> tuple[str, Path, list[str]]:
    """`name=config.yaml[:override,override...]` -> (name, config, overrides)."""
    name, _, rest = text.partition("=")
    config, _, overrides = rest.partition(":")
    if not name or not config:
        raise SystemExit(f"--arm {text!r}: expected NAME=CONFIG.yaml[:key=value,key=value]")
    path = Path(config) if Path(config).is_absolute() else REPO / config
    return name, path, split_overrides(overrides)


def split_overrides(text: str) -> list[str]:
    """Comma-separated overrides; a comma in brackets is in a value (`train.lr_scale={encoder: 2, decoder: 2}`)."""
    out, depth, start = [], 0, 0
    for i, char in enumerate(text + ","):
        depth += (char in "[{(") - (char in "]})")
        if char == "," and depth == 0:
            out.append(text[start:i].strip())
            start = i + 1
    return [override for override in out if override]


def train_command(name: str, config: Path, overrides: list[str], args: argparse.Namespace, workdir: Path) -> list[str]:
    """The `train.py` command line of one arm (its own workdir, the shared data cache of its config)."""
    return [
        sys.executable, str(REPO / "train.py"), str(config), f"workdir={workdir}",
        f"train.time_budget_s={args.budget_s}", f"train.eval_every={args.eval_every}",
        f"train.eval_sequences={args.eval_sequences}", "train.checkpoint_every=1000000",
        f"data.cache_dir={args.out / 'data' / config.stem}", *overrides,
    ]  # fmt: skip


def run_training(name: str, config: Path, overrides: list[str], args: argparse.Namespace) -> tuple[Path, float]:
    """Trains one arm in a subprocess; returns its workdir and the wall-clock seconds of the whole command (data
    preparation, compilation and evaluations included)."""
    workdir = args.out / name
    if args.reuse and (workdir / "summary.json").is_file():
        print(f"\n[{name}] reusing the finished run in {workdir}")
        return workdir, float("nan")
    shutil.rmtree(workdir, ignore_errors=True)
    if args.fit_steps:
        overrides = [*overrides, "train.fit_steps_to_budget=true"]
    elif args.steps:
        overrides = [*overrides, f"train.steps={args.steps}", "train.fit_steps_to_budget=false"]
    command = train_command(name, config, overrides, args, workdir)
    print(f"\n[{name}] load average {os.getloadavg()[0]:.2f}")
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return workdir, time.perf_counter() - start


def summarize(workdir: Path, start_load: float) -> dict[str, Any]:
    """Final held-out bits/byte, throughput, size and the eval curve (seconds, bytes, FLOPs, bits/byte)."""
    from hat.config import load_config
    from hat.kinds import kind_of
    from hat.train.loop import step_flops
    from hat.train.metrics import read_metrics

    config = load_config(workdir / "config.yaml")
    rows = read_metrics(workdir)
    flops_per_step = step_flops(config)
    coder_flops_per_byte = m1_flops_per_byte(config)
    curve = [
        (
            r["time/train_seconds"],
            r["time/train_bytes"],
            r["step"] * flops_per_step + r["time/train_bytes"] * coder_flops_per_byte,
            r["eval/bits_per_byte"],
        )
        for r in rows
        if "eval/bits_per_byte" in r
    ]
    speeds = sorted(r["perf/bytes_per_sec"] for r in rows if "perf/bytes_per_sec" in r)
    params = next(r["params/total"] for r in rows if "params/total" in r)
    steps = max(r["step"] for r in rows)
    seconds, text_bytes, flops, bpb = curve[-1]
    return {
        "kind": kind_of(config).name,
        "heldout_bits_per_byte": bpb,
        "bytes_per_sec": speeds[len(speeds) // 2],
        "train_seconds": seconds,
        "train_bytes": text_bytes,
        "train_flops": flops,
        # Forward + backward FLOPs per training byte (3x the forward pass), plus M1's forward pass for M2.
        "train_flops_per_byte": flops / text_bytes,
        "m1_flops_per_byte": coder_flops_per_byte,
        "params": params,
        "steps": steps,
        "schedule_steps": config.train.steps,
        "start_load": start_load,
        "curve": curve,
    }


def m1_flops_per_byte(config) -> float:
    """M2 (`data.format: eqinfo`): M1's forward FLOPs per text byte, which the paper adds to M2's (its FLOPs/byte
    = 2 x non-embedding params / compression ratio + M1's FLOPs/byte); 0 for every other arm."""
    if config.data.format != "eqinfo":
        return 0.0
    from hat.checkpoint.run import load_config_from_checkpoint
    from hat.kinds import kind_of

    m1_config, _, _ = load_config_from_checkpoint(config.data.eqinfo.m1_checkpoint)
    return kind_of(m1_config).forward_flops_per_unit(m1_config)


def interpolate(curve: list[tuple[float, ...]], axis: int, x: float) -> float:
    """Held-out bits/byte at `x` along one axis of the curve (linear in log x between evaluations)."""
    points = [(p[axis], p[3]) for p in curve if p[axis] > 0]
    if x <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= x <= x1:
            t = (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0)) if x1 > x0 else 1.0
            return y0 + t * (y1 - y0)
    return points[-1][1]


def heldout_zlib(config: Path) -> float:
    """zlib -9 bits/byte on the held-out files of a config's corpus split."""
    from hat import data as hat_data
    from hat.config import load_config
    from hat.evaluate import zlib_bits_per_byte

    cfg = load_config(config)
    _, heldout = hat_data.split_documents(hat_data.resolve_documents(cfg.data.corpus), cfg.data.eval_fraction)
    return zlib_bits_per_byte([d.path for d in heldout])


def score_other_text(workdir: Path, paths: list[Path]) -> float:
    """The final model's bits/byte over other files (each file one document)."""
    from hat.checkpoint import load_model
    from hat.evaluate import evaluate_files

    return evaluate_files(load_model(workdir), paths)["bits_per_byte"]


def plot(results: dict[str, dict], zlib_bpb: float, path: Path) -> None:
    """Held-out bits/byte against training seconds, bytes and FLOPs (one panel each), zlib as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), sharey=True)
    labels = ["training seconds (2 CPU cores)", "training bytes", "training FLOPs"]
    for axis, (ax, label) in enumerate(zip(axes, labels)):
        for name, result in results.items():
            xs = [p[axis] for p in result["curve"]]
            ys = [p[3] for p in result["curve"]]
            ax.plot(xs, ys, marker="o", markersize=3, label=f"{name} ({result['bytes_per_sec'] / 1e3:.1f} kB/s)")
        ax.axhline(zlib_bpb, color="gray", linestyle="--", label=f"zlib -9 ({zlib_bpb:.2f})")
        ax.set_xlabel(label)
        if axis:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # labelled minor ticks overlap
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("held-out bits/byte")
    # Every arm's end and zlib in view, with the early curve of the fastest learner: first evaluations can be
    # near 8 bits/byte and would squash the differences that matter.
    ends = [r["curve"][-1][3] for r in results.values()]
    top = max(*ends, min(r["curve"][0][3] for r in results.values()), zlib_bpb) + 0.5
    axes[0].set_ylim(top=top)
    axes[0].legend(fontsize=8)
    fig.suptitle("Same backbone, same data: held-out bits/byte at equal time, bytes and FLOPs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Train HAT, BPE and flat byte models for equal time and compare them at equal time, bytes "
        "and FLOPs."
    )
    parser.add_argument("--budget-s", type=float, default=600, help="training seconds per arm (default 600)")
    parser.add_argument(
        "--arm", action="append", default=None, metavar="NAME=CONFIG[:key=value,...]",
        help="an arm to train (repeatable; default: hat_tiny, bpe_tiny, byte_tiny)",
    )  # fmt: skip
    parser.add_argument("--steps", type=int, default=None, help="one schedule length for every arm")
    parser.add_argument(
        "--fit-steps", action="store_true",
        help="fit each arm's schedule to the budget in its own run (train.fit_steps_to_budget; else: the config's)",
    )  # fmt: skip
    parser.add_argument(
        "--reuse", action="store_true", help="report an arm whose run in --out has finished instead of retraining it"
    )
    parser.add_argument("--eval-every", type=int, default=100, help="steps between held-out evaluations")
    parser.add_argument("--eval-sequences", type=int, default=128, help="held-out sequences per evaluation")
    parser.add_argument("--eval-files", type=Path, nargs="*", default=[], help="other text to score every arm on")
    parser.add_argument("--out", type=Path, default=REPO / "runs/bench", help="output directory")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    arms = [parse_arm(text) for text in args.arm or DEFAULT_ARMS]

    results = {}
    for name, config, overrides in arms:
        load = os.getloadavg()[0]
        with OtherCPU() as others:
            workdir, wall_s = run_training(name, config, overrides, args)
        print(f"[{name}] other processes kept {others.cores:.2f} cores busy" + ("  (WARNING)" if others.busy else ""))
        results[name] = summarize(workdir, load) | {"wall_s": wall_s, "other_cores": others.cores}
        if args.eval_files:
            results[name]["other_text_bits_per_byte"] = score_other_text(args.out / name, args.eval_files)
    zlib_bpb = heldout_zlib(arms[0][1])
    equal_bytes = min(r["train_bytes"] for r in results.values())
    equal_flops = min(r["train_flops"] for r in results.values())
    for result in results.values():
        result["bits_per_byte_at_equal_bytes"] = interpolate(result["curve"], 1, equal_bytes)
        result["bits_per_byte_at_equal_flops"] = interpolate(result["curve"], 2, equal_flops)

    header = (
        f"{'arm':<22} {'equal time':>10} {'equal bytes':>11} {'equal FLOPs':>11} {'kB/s':>6} {'GFLOP/B':>8} "
        f"{'params':>7} {'steps':>6} {'wall s':>6} {'load':>5} {'others':>6}"
        + (f" {'other text':>10}" if args.eval_files else "")
    )
    print(
        f"\nheld-out bits/byte after {args.budget_s:.0f} s of training per arm; equal bytes = "
        f"{equal_bytes / 1e6:.2f} MB, equal FLOPs = {equal_flops:.3g}"
    )
    print(header)
    for name, r in results.items():
        line = (
            f"{name:<22} {r['heldout_bits_per_byte']:>10.4f} {r['bits_per_byte_at_equal_bytes']:>11.4f} "
            f"{r['bits_per_byte_at_equal_flops']:>11.4f} {r['bytes_per_sec'] / 1e3:>6.1f} "
            f"{r['train_flops_per_byte'] / 1e9:>8.4f} {r['params'] / 1e6:>6.2f}M {r['steps']:>6} "
            f"{r['wall_s']:>6.0f} {r['start_load']:>5.2f} {r['other_cores']:>6.2f}"
        )
        if args.eval_files:
            line += f" {r['other_text_bits_per_byte']:>10.4f}"
        print(line)
    print(f"{'zlib -9':<22} {zlib_bpb:>10.4f}")
    print("load: the one-minute load average as the arm started; others: cores other processes kept busy meanwhile")
    if any(r["other_cores"] > BUSY_OTHER_CORES for r in results.values()):
        print("WARNING: other processes ran during some arms; their seconds and bytes/s are not comparable")
    plot(results, zlib_bpb, args.out / "heldout_bpb.png")
    summary = {"budget_s": args.budget_s, "zlib_bits_per_byte": zlib_bpb, "equal_bytes": equal_bytes,
               "equal_flops": equal_flops, "arms": results}  # fmt: skip
    (args.out / "benchmark.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {args.out / 'heldout_bpb.png'} and {args.out / 'benchmark.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
