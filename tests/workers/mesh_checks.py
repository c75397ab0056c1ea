"""Runs sharded-training checks on 8 simulated CPU devices and prints their measurements as JSON.

The device count must be fixed before jax is imported, so tests/test_sharding.py runs this file in a fresh
process: `python tests/workers/mesh_checks.py step|resume WORKDIR`.
"""

import os
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
os.environ["JAX_PLATFORMS"] = "cpu"

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from hat.config import load_config  # noqa: E402
from hat.kinds import kind_of  # noqa: E402
from hat.train import loop  # noqa: E402
from hat.train.metrics import read_metrics  # noqa: E402
from hat.train.step import make_train_step, state_shardings  # noqa: E402

MESHES = {
    "data8": {"data": 8, "fsdp": 1, "tensor": 1},
    "fsdp4_tensor2": {"data": 1, "fsdp": 4, "tensor": 2},
    "data2_fsdp2_tensor2": {"data": 2, "fsdp": 2, "tensor": 2},
}
# Every width, head count and the batch divide by the mesh axes, so each rule really shards.
TINY = [
    "model.encoder.hidden_size=32", "model.encoder.mlp_hidden_size=64", "model.encoder.num_heads=2",
    "model.encoder.num_kv_heads=2", "model.encoder.sliding_window=32", "model.decoder.hidden_size=32",
    "model.decoder.mlp_hidden_size=64", "model.decoder.num_heads=2", "model.decoder.num_kv_heads=2",
    "model.decoder.sliding_window=32", "model.backbone.hidden_size=64", "model.backbone.mlp_hidden_size=128",
    "model.backbone.num_layers=2", "model.backbone.num_heads=4", "model.backbone.num_kv_heads=2",
    "model.pooling.num_heads=2", "model.pooling.num_kv_heads=2", "data.seq_bytes=128", "data.max_words=48",
    "train.batch_size=8", "train.warmup_steps=0", "train.learning_rate=1e-2", "train.log_every=1",
    "train.eval_every=1000", "train.eval_sequences=8", "model.ngrams.buckets=4096", "train.fit_steps_to_budget=false",
]  # fmt: skip


def mesh_overrides(mesh: dict[str, int]) -> list[str]:
    return [f"parallel.mesh.{axis}={size}" for axis, size in mesh.items()]


def check_step(workdir: Path) -> dict:
    """One train step on one device and on each mesh from the same state and batch: loss and parameter gaps."""
    base = [f"workdir={workdir}", "data.corpus=['" + str(Path(json.__file__).parent) + "']", *TINY]
    config = load_config(None, base)
    run_data = kind_of(config).prepare_data(config)
    batch = {k: np.stack([run_data.train[i][k] for i in range(8)]) for k in run_data.train[0]}
    setup = loop.setup_training(config)
    host_params = jax.device_get(loop.init_state(config, setup)[0])
    # Plain SGD with rate 1 makes the update the gradient itself, so parameters compare at float32 precision
    # (Adam's first step, g / |g|, would turn float noise in near-zero gradients into full-size differences).
    tx = optax.sgd(1.0)
    host_opt = tx.init(host_params)
    # The reference: the same step jitted without any sharding, on one device.
    one_device_step = make_train_step(setup.graphdef, tx, config.data.max_words)
    device = jax.devices()[0]
    ref_params, _, ref_metrics = one_device_step(
        jax.device_put(host_params, device), jax.device_put(host_opt, device), batch
    )
    ref_params = jax.device_get(ref_params)
    results = {}
    for name, mesh in MESHES.items():
        config = load_config(None, [*base, *mesh_overrides(mesh)])
        mesh_setup = loop.setup_training(config)
        shardings = state_shardings(mesh_setup.rules, mesh_setup.abstract_params, tx)
        step = make_train_step(mesh_setup.graphdef, tx, config.data.max_words, mesh_setup.rules, shardings)
        sharded_params = jax.device_put(host_params, shardings.params)
        sharded_opt = jax.device_put(host_opt, shardings.opt_state)
        new_params, _, metrics = step(sharded_params, sharded_opt, loop.global_batch(batch, shardings))
        gap = lambda a, b: float(np.max(np.abs(np.asarray(a) - b)))
        gaps = jax.tree.map(gap, jax.device_get(new_params), ref_params)
        shard_counts = {len(leaf.sharding.device_set) for leaf in jax.tree.leaves(new_params)}
        results[name] = {
            "loss": float(metrics["loss"]),
            "reference_loss": float(ref_metrics["loss"]),
            "max_param_gap": max(jax.tree.leaves(gaps)),
            "max_update": max(
                float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                for a, b in zip(jax.tree.leaves(ref_params), jax.tree.leaves(host_params))
            ),
            "devices": len(mesh_setup.rules.mesh.devices.flat),
            "param_sharded": any(not leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(new_params)),
            "device_sets": sorted(shard_counts),
        }
    return results


def check_resume(workdir: Path) -> dict:
    """Train 6 steps on one mesh; train 3 of the same schedule, then resume on another mesh to step 6: the
    per-step losses of both runs."""
    corpus = "data.corpus=['" + str(Path(json.__file__).parent) + "']"
    common = [
        corpus, *TINY, "train.steps=6", "train.checkpoint_every=3", f"data.cache_dir={workdir / 'data'}",
        "data.eval_fraction=0", "train.peak_flops_per_device=1e9",
    ]  # fmt: skip
    straight = workdir / "straight"
    loop.train(load_config(None, [f"workdir={straight}", *common, *mesh_overrides(MESHES["fsdp4_tensor2"])]))
    moved = workdir / "moved"
    first_leg = [f"workdir={moved}", *common, "train.stop_after_steps=3", *mesh_overrides(MESHES["fsdp4_tensor2"])]
    loop.train(load_config(None, first_leg))
    loop.train(load_config(None, [f"workdir={moved}", *common, *mesh_overrides(MESHES["data2_fsdp2_tensor2"])]))

    def losses(run: Path) -> dict[int, float]:
        return {row["step"]: row["train/loss"] for row in read_metrics(run) if "train/loss" in row}

    return {"straight": losses(straight), "moved": losses(moved)}


def check_store(workdir: Path) -> dict:
    """A parameter store written per layer, read by train.init_from onto an fsdp x tensor mesh with a scanned
    backbone; then two steps with the backbone frozen."""
    from flax import nnx

    from hat.checkpoint.store import ParamStoreWriter, flatten_params, iter_store
    from hat.models import build_model

    corpus = "data.corpus=['" + str(Path(json.__file__).parent) + "']"
    source = load_config(None, [corpus, *TINY])
    with ParamStoreWriter(workdir / "store", source) as writer:
        model = build_model(source.model, rngs=nnx.Rngs(7))
        for name, value in flatten_params(nnx.state(model, nnx.Param)).items():
            writer.write(name, np.asarray(value))
        writer.finalize()
    run = [
        f"workdir={workdir / 'run'}", corpus, *TINY, "model.scan_layers=true", f"train.init_from={workdir / 'store'}",
        "train.freeze=[backbone]", "train.steps=2", "data.eval_fraction=0", "train.peak_flops_per_device=1e9",
        *mesh_overrides(MESHES["fsdp4_tensor2"]),
    ]  # fmt: skip
    config = load_config(None, run)
    setup = loop.setup_training(config)
    params, opt_state = loop.initial_state_from(config.train.init_from, setup)
    restored = flatten_params(jax.device_get(params))
    stored = dict(iter_store(workdir / "store"))
    layers = config.model.backbone.num_layers
    gaps = []
    for name, value in restored.items():
        if name.startswith("backbone.layers."):
            rest = name.removeprefix("backbone.layers.")
            value_ref = np.stack([stored[f"backbone.layers.{i}.{rest}"] for i in range(layers)])
        else:
            value_ref = stored[name]
        gaps.append(float(np.max(np.abs(np.asarray(value) - value_ref))))
    sharded = any(not leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(params))
    moment_elements = sum(np.size(leaf) for leaf in jax.tree.leaves(opt_state))
    loop.train(config)
    from hat.checkpoint import load_model

    trained = flatten_params(nnx.state(load_model(workdir / "run", scan_layers=False).model, nnx.Param))
    change = {k: float(np.max(np.abs(np.asarray(v) - stored[k]))) for k, v in trained.items()}
    backbone_gap = max(v for k, v in change.items() if k.startswith("backbone."))
    other_change = max(v for k, v in change.items() if not k.startswith("backbone."))
    params_total = sum(int(np.prod(v.shape)) for v in stored.values())
    params_backbone = sum(int(np.prod(v.shape)) for k, v in stored.items() if k.startswith("backbone."))
    return {
        "max_gap": max(gaps), "sharded": sharded, "backbone_gap": backbone_gap, "other_change": other_change,
        "moment_elements": int(moment_elements), "trainable": params_total - params_backbone,
    }  # fmt: skip


if __name__ == "__main__":
    case, out = sys.argv[1], Path(sys.argv[2])
    result = {"step": check_step, "resume": check_resume, "store": check_store}[case](out)
    print("RESULT " + json.dumps(result))
