"""Memory and compute tools: gradient accumulation equals one big batch; the dry run compiles a scale config."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from flax import nnx
from test_models import batch as layout_batch
from test_models import rngs, tiny_config

from hat.config import load_config
from hat.models import build_model
from hat.train.step import make_train_step

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gradient_accumulation_equals_one_batch():
    cfg = tiny_config()
    graphdef, params = nnx.split(build_model(cfg, rngs=rngs()), nnx.Param)
    texts = ["Hello, world!", "def f(x): return x", "日本語 text", "a  b\tc", "camelCaseWord", "x", "", "9 + 10"]
    inputs, word_ids = layout_batch(*texts)
    lengths = np.array([len(t.encode()) + 1 for t in texts])
    mask = (np.arange(inputs.shape[1])[None] < lengths[:, None]).astype(np.float32)
    step_batch = {
        "inputs": inputs, "word_ids": word_ids, "targets": np.roll(inputs, -1, axis=1), "loss_mask": mask,
        "text_mask": mask,
    }  # fmt: skip
    tx = optax.sgd(1.0)  # the update is the gradient itself
    results = {}
    for microbatches in (1, 4):
        step = make_train_step(graphdef, tx, 40, microbatches=microbatches)
        copy = jax.tree.map(np.array, params)
        new_params, _, metrics = step(copy, tx.init(copy), step_batch)
        results[microbatches] = (jax.device_get(new_params), {k: float(v) for k, v in metrics.items()})
    (one_params, one_metrics), (acc_params, acc_metrics) = results[1], results[4]
    assert acc_metrics["loss"] == np.float32(one_metrics["loss"]) or np.isclose(
        acc_metrics["loss"], one_metrics["loss"], rtol=1e-6
    )
    np.testing.assert_allclose(acc_metrics["grad_norm"], one_metrics["grad_norm"], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), acc_params, one_params)


@pytest.mark.slow
def test_dry_run_of_the_1b_config_on_eight_simulated_devices():
    # The 1B config's widths, heads and mesh, shortened in depth and sequence so the compile takes seconds.
    overrides = ["model.backbone.num_layers=2", "model.encoder.num_layers=1", "model.decoder.num_layers=1",
                 "data.seq_bytes=1024", "data.max_words=192", "train.batch_size=8"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")} | {"PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "configs/hat_1b.yaml", "--dry-run", "--fake-devices", "8",
         "--json", *overrides],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1}
    config = load_config(REPO / "configs/hat_1b.yaml", overrides)
    width, mlp = config.model.backbone.hidden_size, config.model.backbone.mlp_hidden_size
    assert report["params"]["backbone"] > 2 * 3 * width * mlp  # two layers' MLPs at least
    memory = report["memory_per_device_bytes"]
    # FSDP: each device holds an eighth of the float32 parameters and both Adam moments.
    state_bytes = 3 * 4 * report["params"]["total"]
    assert state_bytes / 8 <= memory["arguments"] < state_bytes / 8 * 1.2 + 8 * 1024 * 8 * 5
    assert memory["temporaries"] > 0 and report["model_flops_per_step"] > 0
