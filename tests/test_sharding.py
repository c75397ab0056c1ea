"""Sharded training on 8 simulated CPU devices equals one device; checkpoints move between meshes.

Each check runs in a fresh process (tests/workers/mesh_checks.py) because the simulated device count must be set
before jax starts.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # separate processes
REPO = Path(__file__).resolve().parent.parent


def run_worker(case: str, workdir: Path) -> dict:
    env = os.environ | {"PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests/workers/mesh_checks.py"), case, str(workdir)],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def test_sharded_step_equals_one_device(tmp_path: Path):
    results = run_worker("step", tmp_path)
    assert set(results) == {"data8", "fsdp4_tensor2", "data2_fsdp2_tensor2"}
    for name, result in results.items():
        assert result["devices"] == 8
        assert result["loss"] == pytest.approx(result["reference_loss"], rel=1e-6), name
        # The update is the gradient itself (SGD, rate 1): it must agree to float32 precision.
        assert result["max_update"] > 1e-2
        assert result["max_param_gap"] < 1e-5 * max(result["max_update"], 1.0), name
    assert not results["data8"]["param_sharded"]  # pure data parallelism replicates parameters
    assert results["fsdp4_tensor2"]["param_sharded"] and results["data2_fsdp2_tensor2"]["param_sharded"]


def test_checkpoint_restores_onto_another_mesh(tmp_path: Path):
    losses = run_worker("resume", tmp_path)
    straight = {int(k): v for k, v in losses["straight"].items()}
    moved = {int(k): v for k, v in losses["moved"].items()}
    assert sorted(straight) == sorted(moved) == [1, 2, 3, 4, 5, 6]
    for step in straight:
        assert moved[step] == pytest.approx(straight[step], rel=1e-5), step


def test_param_store_restores_onto_mesh_and_frozen_backbone_stays(tmp_path: Path):
    result = run_worker("store", tmp_path)
    assert result["max_gap"] == 0.0  # per-layer store read into the stacked, fsdp x tensor-sharded layout exactly
    assert result["sharded"]
    assert result["backbone_gap"] == 0.0 and result["other_change"] > 0  # stage 1: only the new parts train
    # Adam's two moments for the trainable parameters only (plus scalar step counters).
    assert 2 * result["trainable"] <= result["moment_elements"] <= 2 * result["trainable"] + 4
