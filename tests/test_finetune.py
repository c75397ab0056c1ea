"""Starting runs from given parameters (train.init_from), frozen parts and per-part learning rates."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx
from support import TINY_HAT, cli

from hat.checkpoint import load_model
from hat.checkpoint.store import ParamStoreWriter, flatten_params
from hat.config import ConfigError, load_config
from hat.models import build_model
from hat.train.step import make_optimizer

CORPUS = "data.corpus=['" + str(Path(json.__file__).parent) + "']"
TINY = [
    CORPUS, *TINY_HAT, "data.seq_bytes=256", "data.max_words=96", "data.eval_fraction=0", "train.batch_size=4",
    "train.log_every=1", "train.checkpoint_every=100", "train.peak_flops_per_device=1e9",
]  # fmt: skip


def _params(config):
    return nnx.state(build_model(config.model, rngs=nnx.Rngs(0)), nnx.Param)


@pytest.mark.slow
def test_lr_scale_scales_one_part_and_freeze_stops_it():
    config = load_config(None, TINY_HAT)
    params = _params(config)
    grads = jax.tree.map(lambda p: 0.01 * (1 + np.arange(p.size, dtype=np.float32).reshape(p.shape) % 3), params)

    def first_update(**train_overrides):
        # No clipping: it would see different gradient norms once parts are frozen (it covers trained parts only).
        overrides = ["train.warmup_steps=0", "train.grad_clip_norm=1e9", *train_overrides.values()]
        cfg = load_config(None, [*TINY_HAT, *overrides])
        tx = make_optimizer(cfg.train, params)
        updates, _ = tx.update(grads, tx.init(params), params)
        return flatten_params(updates)

    plain = first_update()
    scaled = first_update(scale="train.lr_scale={backbone: 0.25}")
    frozen = first_update(freeze="train.freeze=[backbone, encoder]")
    for name, update in plain.items():
        if name.startswith("backbone."):
            np.testing.assert_allclose(scaled[name], 0.25 * np.asarray(update), rtol=1e-6)
        else:
            np.testing.assert_array_equal(scaled[name], update)
        if name.startswith(("backbone.", "encoder.")):
            assert not np.any(frozen[name])
        else:
            np.testing.assert_array_equal(frozen[name], update)
    with pytest.raises(ConfigError, match=r"train.freeze names parts \['backbon'\]"):
        make_optimizer(load_config(None, [*TINY_HAT, "train.freeze=[backbon]"]).train, params)


@pytest.mark.slow
def test_init_from_checkpoint_then_store_and_errors(hat_run, tmp_path):
    train = cli("train")
    first = hat_run  # the shared tiny HAT run (conftest.py): the same model settings as TINY
    # Stage-2 style: start a new run from the first run's parameters. The learning rate at step 0 is 0 (warmup
    # starts at 0), so after one step the parameters must equal the first run's exactly.
    second = tmp_path / "second"
    args = [f"workdir={second}", *TINY, "train.steps=4", "train.warmup_steps=2", "train.stop_after_steps=1",
            f"train.init_from={first}", "train.lr_scale={backbone: 0.1}"]  # fmt: skip
    assert train(args) == 0
    before = flatten_params(nnx.state(load_model(first).model, nnx.Param))
    after = flatten_params(nnx.state(load_model(second).model, nnx.Param))
    assert all(np.array_equal(before[k], after[k]) for k in before)

    # A store of a different model: a one-line error naming the mismatch.
    other = load_config(None, [*TINY, "model.backbone.mlp_hidden_size=96"])
    with ParamStoreWriter(tmp_path / "store", other) as writer:
        for name, value in flatten_params(_params(other)).items():
            writer.write(name, np.asarray(value))
        writer.finalize()
    for source, message in [
        (tmp_path / "store", r"does not fit the configured model: .*mlp.gate_proj has shape \(64, 96\)"),
        (tmp_path / "missing", "checkpoint not found"),
    ]:
        from hat.train import TrainingError

        with pytest.raises(TrainingError, match=message) as info:
            from hat.train import train as run

            third = [f"workdir={tmp_path / 'third'}", *TINY, "train.steps=1", f"train.init_from={source}"]
            run(load_config(None, third))
        assert "\n" not in str(info.value)


def test_frozen_stack_counts_one_backward_pass_in_model_flops():
    from hat.train.loop import step_flops

    full = step_flops(load_config(None, TINY_HAT))
    frozen = step_flops(load_config(None, [*TINY_HAT, "train.freeze=[backbone]"]))
    no_backbone = step_flops(load_config(None, [*TINY_HAT, "model.backbone.num_layers=0"]))
    # 3x forward for the trained parts, 2x for the frozen backbone (activation gradients, no weight gradients).
    assert frozen == pytest.approx(no_backbone + (full - no_backbone) * 2 / 3, rel=1e-9)
