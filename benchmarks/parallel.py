"""Sharded-training benchmark: train-step throughput and MFU of hat_tiny on 1 and 2 CPU devices, and the dry-run
memory table of the Llama-3.1-8B-sized HAT on simulated 8- and 256-device meshes.

    python benchmarks/parallel.py --steps 20 --out runs/bench_parallel

Each measurement runs in its own process (the simulated device count is fixed when jax starts), one after the
other in this invocation. Every throughput process measures the float32 matmul peak of its device in the same run,
so the MFU figures are relative to this machine, right now. On CPU the simulated devices share the same cores:
2 devices show the cost of sharding (collectives, smaller matmuls), not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

DRY_RUNS = {
    "8 GPUs (fsdp=8)": ("configs/hat_llama3_8b.yaml", 8),
    "TPU pod slice (data=8 x fsdp=32)": ("configs/hat_llama3_8b_pod.yaml", 256),
}


def throughput_worker(config_path: str, steps: int, overrides: list[str]) -> dict[str, float]:
    """Times `steps` train steps of the config on all local devices (after two compile/warm-up steps)."""
    import jax
    import numpy as np

    from hat.config import load_config
    from hat.kinds import kind_of
    from hat.train import loop
    from hat.train.mesh import measure_matmul_peak

    config = load_config(REPO / config_path, overrides)
    run_data = kind_of(config).prepare_data(config)
    setup = loop.setup_training(config)
    params, opt_state = loop.init_state(config, setup)
    batch_size = config.train.batch_size
    batches = [
        {k: np.stack([run_data.train[(s * batch_size + i) % len(run_data.train)][k] for i in range(batch_size)])
         for k in run_data.train[0]}
        for s in range(steps + 2)
    ]  # fmt: skip
    target_bytes = [float(b["text_mask"].sum()) for b in batches]
    for batch in batches[:2]:
        params, opt_state, metrics = setup.train_step(params, opt_state, loop.global_batch(batch, setup.shardings))
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for batch in batches[2:]:
        params, opt_state, metrics = setup.train_step(params, opt_state, loop.global_batch(batch, setup.shardings))
    jax.block_until_ready(metrics)
    seconds = time.perf_counter() - start
    peak = measure_matmul_peak()
    devices = jax.device_count()
    bytes_per_sec = sum(target_bytes[2:]) / seconds
    flops_per_sec = loop.step_flops(config) * steps / seconds
    return {
        "devices": devices,
        "mesh": dict(setup.rules.mesh.shape),
        "step_seconds": seconds / steps,
        "bytes_per_sec": bytes_per_sec,
        "bytes_per_sec_per_device": bytes_per_sec / devices,
        "model_flops_per_sec": flops_per_sec,
        "matmul_peak_flops": peak,
        # The simulated devices share one host: the machine's peak is one device's full-host matmul rate.
        "mfu": flops_per_sec / peak,
    }


def run_subprocess(args: list[str], devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark step failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout[proc.stdout.index("{") :])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="Numbers go to the README.")
    parser.add_argument("--config", default="configs/hat_tiny.yaml", help="config timed on 1 and 2 devices")
    parser.add_argument("--steps", type=int, default=20, help="timed train steps per device count")
    parser.add_argument("--skip-dry-run", action="store_true", help="only the throughput part")
    parser.add_argument("--out", default="runs/bench_parallel", help="directory for results.json")
    parser.add_argument("--worker", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(throughput_worker(args.config, args.steps, args.worker)))
        return 0

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = f"data.cache_dir={out / 'data'}"
    results: dict[str, dict] = {"throughput": {}, "dry_run": {}}
    for devices in (1, 2):
        worker = [__file__, "--config", args.config, "--steps", str(args.steps), "--worker", cache,
                  f"workdir={out / 'work'}"]  # fmt: skip
        results["throughput"][devices] = run_subprocess(worker, devices)
    if not args.skip_dry_run:
        for name, (config, devices) in DRY_RUNS.items():
            start = time.perf_counter()
            report = run_subprocess(
                [str(REPO / "train.py"), config, "--dry-run", "--json", "--fake-devices", str(devices)], devices
            )
            report["compile_seconds"] = time.perf_counter() - start
            results["dry_run"][name] = report
    (out / "results.json").write_text(json.dumps(results, indent=1))

    print(f"\n{args.config}: train step on CPU devices (same global batch)")
    print("| devices | step s | bytes/s | bytes/s/device | model GFLOP/s | matmul peak GFLOP/s | MFU |")
    print("|---|---|---|---|---|---|---|")
    for devices, r in results["throughput"].items():
        print(
            f"| {devices} | {r['step_seconds']:.3f} | {r['bytes_per_sec']:,.0f} | {r['bytes_per_sec_per_device']:,.0f} "
            f"| {r['model_flops_per_sec'] / 1e9:.1f} | {r['matmul_peak_flops'] / 1e9:.1f} | {r['mfu']:.1%} |"
        )
    one, two = results["throughput"][1], results["throughput"][2]
    print(f"2-device / 1-device throughput: {two['bytes_per_sec'] / one['bytes_per_sec']:.2f}x")
    if results["dry_run"]:
        gib = 1024**3
        print("\nhat_llama3_8b dry run: compiled train step, memory per device (GiB)")
        print("| mesh | devices | params (B) | arguments | temporaries | peak estimate | compile s |")
        print("|---|---|---|---|---|---|---|")
        for name, r in results["dry_run"].items():
            memory = r["memory_per_device_bytes"]
            print(
                f"| {name} | {r['devices']} | {r['params']['total'] / 1e9:.2f} | {memory['arguments'] / gib:.2f} "
                f"| {memory['temporaries'] / gib:.2f} | {memory['peak_estimate'] / gib:.2f} "
                f"| {r['compile_seconds']:.0f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
