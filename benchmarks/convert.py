"""Benchmarks of the Llama conversion path.

    python benchmarks/convert.py demo --bpe-run runs/demo/bpe --budget-s 360
    python benchmarks/convert.py memory

`demo`: a BPE token LM trained by hat (configs/bpe_tiny.yaml; `--bpe-run`, trained first when missing) is exported
to the Hugging Face Llama layout, converted into a HAT with `convert_llama --to hat` (configs/hat_from_bpe_tiny.yaml:
hat_tiny around the token LM's blocks) and trained with the stage-1 recipe (backbone frozen) for `--budget-s`
seconds of training; a HAT of the same size (configs/hat_tiny.yaml) trains from scratch for the same time. Both arms
run one after the other on the same data and report held-out bits/byte over the same held-out sequences; a PNG of
the curves against training time is written beside the JSON. A control arm runs the stage-1 recipe around a frozen
*random* backbone (same step cost), separating what the pretrained blocks contribute from what cheaper steps do.

`memory`: writes a synthetic checkpoint with Llama 3.2 1B's shapes (1.24B parameters, bfloat16, sharded) and
converts it (`--to lm`, which reads every tensor) in a child process, reporting that process's peak resident memory
(VmHWM) against the checkpoint's size on disk.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LLAMA32_1B = dict(
    model_type="llama", architectures=["LlamaForCausalLM"], vocab_size=128256, hidden_size=2048,
    intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, head_dim=64,
    rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=True, hidden_act="silu", torch_dtype="bfloat16",
    rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 8192},
)  # fmt: skip


def _curve(workdir: Path) -> list[tuple[float, float]]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [(r["time/train_seconds"], r["eval/bits_per_byte"]) for r in rows if "eval/bits_per_byte" in r]


def run_demo(args: argparse.Namespace) -> dict:
    from hat.config import load_config
    from hat.convert.export import export_checkpoint
    from hat.convert.llama import convert_llama
    from hat.train import train

    out = Path(args.out)
    bpe_run = Path(args.bpe_run)
    if not (bpe_run / "summary.json").is_file():
        train(load_config(REPO / "configs/bpe_tiny.yaml", [f"workdir={bpe_run}", "train.time_budget_s=0"]))
    bpe_summary = json.loads((bpe_run / "summary.json").read_text())
    for name in ("hf", "hat_store"):
        shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    export_checkpoint(bpe_run, out / "hf")
    export_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    base = load_config(REPO / "configs/hat_from_bpe_tiny.yaml")
    convert_llama(out / "hf", out / "hat_store", to="hat", base=base)
    convert_s = time.perf_counter() - t0

    budget = [f"train.time_budget_s={args.budget_s}", f"train.steps={args.steps}", "train.eval_every=50"]
    stage1 = REPO / "configs/hat_from_bpe_tiny.yaml"
    arms = {
        "stage1_from_bpe_lm": (stage1, "stage1", [f"train.init_from={out / 'hat_store'}"]),
        "scratch": (REPO / "configs/hat_tiny.yaml", "scratch", []),
        # Control: the same recipe and step cost around a frozen *random* backbone, to separate what the pretrained
        # blocks contribute from what cheaper steps (no backbone gradients) contribute.
        "stage1_random_backbone": (stage1, "frozen_random", ["train.init_from=''"]),
    }
    previous = out / "demo.json"
    results = json.loads(previous.read_text())["arms"] if previous.is_file() else {}
    for name in args.arms:
        path, workdir, overrides = arms[name]
        shutil.rmtree(out / workdir, ignore_errors=True)
        config = load_config(path, [f"workdir={out / workdir}", *overrides, *budget])
        summary = train(config)
        results[name] = {
            "eval_bits_per_byte": summary["eval/bits_per_byte"],
            "steps": summary["step"],
            "train_seconds": summary["train_seconds"],
            "curve": _curve(Path(config.workdir)),
        }
    report = {
        "budget_s": args.budget_s,
        "bpe_lm": {"eval_bits_per_byte_canonical": bpe_summary.get("eval/bits_per_byte"),
                   "train_seconds": bpe_summary.get("train_seconds"), "steps": bpe_summary.get("step")},
        "export_s": export_s,
        "convert_s": convert_s,
        "arms": results,
    }  # fmt: skip
    _plot(results, out / "convert_demo.png", args.budget_s)
    return report


def _plot(results: dict, path: Path, budget: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, result in results.items():
        seconds, bpb = zip(*result["curve"]) if result["curve"] else ((), ())
        ax.plot(seconds, bpb, marker="o", label=f"{name} ({result['steps']} steps)")
    ax.set_xlabel("training seconds (2 CPU cores)")
    ax.set_ylabel("held-out bits/byte")
    ax.set_title(f"Stage 1 from a converted BPE LM vs scratch ({budget:.0f} s each)", fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_synthetic_llama(directory: Path, seed: int = 0) -> int:
    """A Llama-3.2-1B-shaped checkpoint with random bfloat16 weights, in 1 GB shards; returns its parameter count."""
    import ml_dtypes
    import numpy as np

    from hat.convert.safetensors_io import ShardedWriter

    cfg = LLAMA32_1B
    dim, mlp, hd = cfg["hidden_size"], cfg["intermediate_size"], cfg["head_dim"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    shapes = {"model.embed_tokens.weight": (cfg["vocab_size"], dim), "model.norm.weight": (dim,)}
    for i in range(cfg["num_hidden_layers"]):
        prefix = f"model.layers.{i}."
        shapes |= {
            prefix + "self_attn.q_proj.weight": (q, dim), prefix + "self_attn.k_proj.weight": (kv, dim),
            prefix + "self_attn.v_proj.weight": (kv, dim), prefix + "self_attn.o_proj.weight": (dim, q),
            prefix + "mlp.gate_proj.weight": (mlp, dim), prefix + "mlp.up_proj.weight": (mlp, dim),
            prefix + "mlp.down_proj.weight": (dim, mlp), prefix + "input_layernorm.weight": (dim,),
            prefix + "post_attention_layernorm.weight": (dim,),
        }  # fmt: skip
    directory.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    writer = ShardedWriter(directory, max_shard_bytes=10**9)
    for name, shape in shapes.items():
        writer.add(name, (rng.standard_normal(shape, np.float32) * 0.02).astype(ml_dtypes.bfloat16))
    writer.close()
    (directory / "config.json").write_text(json.dumps(cfg, indent=1))
    return sum(int(np.prod(shape)) for shape in shapes.values())


_CHILD = """
import time
from hat.convert.llama import convert_llama

def high_water_bytes():
    # VmHWM: this process image's peak resident set (ru_maxrss would carry the parent's peak across fork + exec).
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024

baseline = high_water_bytes()
t0 = time.perf_counter()
convert_llama({src!r}, {dst!r}, to="lm")
print("RESULT", baseline, high_water_bytes(), time.perf_counter() - t0)
"""


def run_memory(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    source, target = out / "synthetic_llama32_1b", out / "synthetic_llama32_1b_lm"
    shutil.rmtree(source, ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)
    params = write_synthetic_llama(source)
    disk = sum(p.stat().st_size for p in source.glob("*.safetensors"))
    child = _CHILD.format(repo=str(REPO), src=str(source), dst=str(target))
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True)
    baseline, peak, seconds = proc.stdout.split("RESULT")[1].split()
    peak = int(peak)
    store = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    report = {
        "params": params,
        "checkpoint_bytes_on_disk": disk,
        "peak_rss_bytes": peak,
        "rss_after_imports_bytes": int(baseline),
        "peak_over_disk": peak / disk,
        "convert_seconds": float(seconds),
        "store_bytes": store,
    }
    if not args.keep:
        shutil.rmtree(source)
        shutil.rmtree(target)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmarks of Llama conversion: recipe demo and host memory.")
    parser.add_argument("what", choices=["demo", "memory"], help="which benchmark")
    parser.add_argument("--out", default="runs/bench_convert", help="working directory; JSON report written here")
    parser.add_argument("--bpe-run", default="runs/demo/bpe", help="demo: BPE token LM run (trained when missing)")
    parser.add_argument("--budget-s", type=float, default=360.0, help="demo: training seconds per HAT arm")
    parser.add_argument("--steps", type=int, default=450, help="demo: schedule length of every arm")
    parser.add_argument(
        "--arms", nargs="+", default=["stage1_from_bpe_lm", "scratch", "stage1_random_backbone"],
        choices=["stage1_from_bpe_lm", "scratch", "stage1_random_backbone"],
        help="demo: arms to (re)run; results of other arms are kept from an earlier demo.json in --out",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="memory: keep the synthetic checkpoint and its store")
    args = parser.parse_args(argv)
    report = run_demo(args) if args.what == "demo" else run_memory(args)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"{args.what}.json").write_text(json.dumps(report, indent=1))
    printable = json.loads(json.dumps(report))
    for arm in printable.get("arms", {}).values():
        arm.pop("curve")
    print(json.dumps(printable, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
