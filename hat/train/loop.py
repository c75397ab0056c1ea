"""The training loop: start processes, prepare data, build or restore the sharded state, step, evaluate, log,
checkpoint.

Reads like a table of contents; each concern lives in its own module. The same code runs on one CPU and on a pod:
every process runs this loop, reads its own rows of each global batch, and the jitted step is SPMD over the mesh.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import optax
import yaml
from flax import nnx
from tqdm import tqdm

from hat import data as hat_data
from hat.checkpoint import Checkpointer, CheckpointError, ConversionError, open_params
from hat.config import Config, to_dict
from hat.errors import HatError
from hat.kinds import kind_of
from hat.models import build_model, count_params
from hat.models.objective import evaluate_source, global_batch, make_eval_step
from hat.models.sharding import ShardingRules
from hat.train.budget import BudgetFit, agreed_steps, check_fit
from hat.train.mesh import build_mesh, build_rules, initialize_distributed, measure_matmul_peak
from hat.train.metrics import MetricWriter
from hat.train.step import (
    StepShardings,
    learning_rate_schedule,
    make_optimizer,
    make_train_step,
    state_shardings,
)
from hat.train.workdir import create_workdir, hold_workdir, write_workdir_file


class TrainingError(HatError, RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the message says what to do."""


@dataclass
class TrainSetup:
    """Everything a step needs, built for one mesh: jitted steps, shardings and the abstract state."""

    graphdef: nnx.GraphDef
    abstract_params: nnx.State
    tx: optax.GradientTransformation
    rules: ShardingRules
    shardings: StepShardings
    train_step: Any
    eval_step: Any


def setup_training(config: Config) -> TrainSetup:
    """Builds the mesh, the abstract model (no allocation), the optimizer and the sharded, jitted steps."""
    mesh = build_mesh(config.parallel)
    rules = build_rules(config.parallel, mesh)
    batch_shards = math.prod(mesh.shape[axis] for axis in rules.rules.get("act_batch", ()))
    if config.train.batch_size % (batch_shards * config.train.microbatches):
        raise TrainingError(
            f"train.batch_size ({config.train.batch_size}) must be a multiple of the batch shards ({batch_shards}, "
            f"from parallel.mesh) times train.microbatches ({config.train.microbatches})"
        )
    abstract = nnx.eval_shape(lambda: build_model(config.model, rngs=nnx.Rngs(0)))
    graphdef, abstract_params = nnx.split(abstract, nnx.Param)
    try:
        tx = make_optimizer(config.train, abstract_params)
    except ValueError as error:
        raise TrainingError(str(error)) from None
    shardings = state_shardings(rules, abstract_params, tx)
    num_words = config.data.max_words
    train_step = make_train_step(
        graphdef, tx, num_words, rules, shardings, config.train.microbatches, tuple(config.train.freeze)
    )
    eval_step = make_eval_step(graphdef, num_words, rules, shardings)
    return TrainSetup(graphdef, abstract_params, tx, rules, shardings, train_step, eval_step)


def with_steps(config: Config, setup: TrainSetup, steps: int) -> tuple[Config, TrainSetup]:
    """`config` with `train.steps = steps`, and `setup` with the optimizer and train step of that schedule (the
    optimizer state's structure, so its shardings and any restored state, stay the same)."""
    train_cfg = dataclasses.replace(config.train, steps=steps)
    config = dataclasses.replace(config, train=train_cfg)
    tx = make_optimizer(train_cfg, setup.abstract_params)
    train_step = make_train_step(
        setup.graphdef, tx, config.data.max_words, setup.rules, setup.shardings, train_cfg.microbatches,
        tuple(train_cfg.freeze),
    )  # fmt: skip
    return config, dataclasses.replace(setup, tx=tx, train_step=train_step)


def init_state(config: Config, setup: TrainSetup) -> tuple[nnx.State, optax.OptState]:
    """Fresh parameters and optimizer state, created directly in their shards (no full copy on any device)."""

    def init() -> tuple[nnx.State, optax.OptState]:
        # The "rbg" key implementation initialises parameters several times faster on CPU than threefry.
        model = build_model(config.model, rngs=nnx.Rngs(jax.random.key(config.seed, impl="rbg")))
        params = nnx.state(model, nnx.Param)
        return params, setup.tx.init(params)

    out_shardings = (setup.shardings.params, setup.shardings.opt_state)
    return jax.jit(init, out_shardings=out_shardings)()


def initial_state_from(path: str, setup: TrainSetup) -> tuple[nnx.State, optax.OptState]:
    """Parameters from a parameter store or a hat checkpoint, restored into this mesh's shardings, and a fresh
    optimizer state (`train.init_from`)."""
    try:
        params = open_params(path, abstract_state(setup)["params"])
    except (ConversionError, CheckpointError) as error:
        raise TrainingError(f"train.init_from: {error}") from None
    opt_state = jax.jit(setup.tx.init, out_shardings=setup.shardings.opt_state)(params)
    return params, opt_state


def abstract_state(setup: TrainSetup) -> dict[str, Any]:
    """Shapes, dtypes and target shardings of `{"params", "opt_state"}` (the restore target on this mesh)."""

    def with_sharding(x: Any, sharding: Any) -> Any:
        if isinstance(x, nnx.Variable):
            return x.copy(with_sharding(x.get_value(), sharding))
        if not hasattr(x, "shape"):  # optax's placeholder for a frozen part's (absent) state
            return x
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

    is_variable = lambda x: isinstance(x, nnx.Variable)
    params = jax.tree.map(with_sharding, setup.abstract_params, setup.shardings.params, is_leaf=is_variable)
    opt_state = jax.eval_shape(setup.tx.init, setup.abstract_params)
    opt_state = jax.tree.map(with_sharding, opt_state, setup.shardings.opt_state, is_leaf=is_variable)
    return {"params": params, "opt_state": opt_state}


def _check_resumable(config: Config, meta: dict[str, Any]) -> None:
    saved_model, model = dict(meta["config"]["model"]), to_dict(config)["model"]
    if saved_model != model:
        changed = [k for k in saved_model if saved_model[k] != model.get(k)]
        raise TrainingError(
            f"{config.workdir} holds a checkpoint of a different model (model.{', model.'.join(changed)} differ); "
            "use a new workdir or the original model settings"
        )


def step_flops(config: Config) -> float:
    """Model FLOPs of one training step (forward + backward = 3x forward) at the configured shapes.

    A frozen layer stack (`train.freeze`) has no weight gradients: its backward pass is one forward's worth
    (activation gradients only), so it counts 2x forward instead of 3x.
    """
    kind = kind_of(config)
    forward = lambda model: kind.forward_flops_per_unit(config, model)  # noqa: E731

    frozen = 0.0
    for part in set(config.train.freeze) & {"encoder", "backbone", "decoder"}:
        stack = getattr(config.model, part)
        without = dataclasses.replace(config.model, **{part: dataclasses.replace(stack, num_layers=0)})
        frozen += forward(config.model) - forward(without)
    return (3.0 * forward(config.model) - frozen) * kind.sequence_length(config) * config.train.batch_size


def train(config: Config) -> dict[str, float]:
    """Runs (or resumes) training as configured; returns the final held-out metrics.

    Process 0 holds the workdir for the whole run (`hold_workdir`): a second training process on it is refused.
    """
    kind_of(config)  # the kind's own config checks, before anything is started or written
    check_fit(config.train)
    initialize_distributed(config.distributed)
    is_primary = jax.process_index() == 0
    workdir = Path(config.workdir)
    create_workdir(workdir)
    if not is_primary:
        return _train(config, workdir, is_primary)
    with hold_workdir(workdir):
        write_workdir_file(workdir / "config.yaml", yaml.safe_dump(to_dict(config), sort_keys=False))
        return _train(config, workdir, is_primary)


def _train(config: Config, workdir: Path, is_primary: bool) -> dict[str, float]:
    cfg = config.train
    run_data = kind_of(config).prepare_data(config)
    setup = setup_training(config)

    checkpointer = Checkpointer(workdir, keep=cfg.keep_checkpoints, async_save=cfg.async_checkpoints)
    start_step = 0
    progress = {"train_seconds": 0.0, "train_bytes": 0.0}
    fitted_steps: int | None = None  # train.steps as fitted to the time budget (this run or the one it resumes)
    # Restored straight into this mesh's shardings, whatever mesh wrote the checkpoint; a newest checkpoint that
    # does not read back is reported and set aside, and the next older one is used.
    if (restored := checkpointer.restore_latest(abstract_state(setup), log=tqdm.write)) is not None:
        latest, state, meta = restored
        _check_resumable(config, meta)
        params, opt_state, start_step = state["params"], state["opt_state"], int(meta["data_step"])
        progress = {key: float(meta.get(key, 0.0)) for key in ("train_seconds", "train_bytes")}
        tqdm.write(f"resumed from {checkpointer.directory / str(latest)} at step {start_step}")
        if cfg.fit_steps_to_budget and meta.get("fitted_steps"):
            fitted_steps = int(meta["fitted_steps"])
            config, setup = with_steps(config, setup, fitted_steps)
            cfg = config.train
            tqdm.write(f"train.steps as fitted to the time budget before: {fitted_steps}")
    elif cfg.init_from:
        params, opt_state = initial_state_from(cfg.init_from, setup)
        tqdm.write(f"initialised from {cfg.init_from}")
    else:
        params, opt_state = init_state(config, setup)

    sizes = count_params(nnx.merge(setup.graphdef, setup.abstract_params))
    mesh = setup.rules.mesh
    tqdm.write(
        f"{config.model.kind}: {sizes['total'] / 1e6:.2f}M params; mesh {dict(mesh.shape)} over "
        f"{jax.process_count()} process(es); train {run_data.num_train_bytes / 1e6:.1f} MB in "
        f"{run_data.num_train_files} files ({len(run_data.train)} sequences), "
        f"held out {run_data.num_heldout_files} files"
    )
    writer = MetricWriter(workdir, enabled=is_primary, resume_step=start_step)
    flops_per_step = step_flops(config)
    peak_flops = cfg.peak_flops_per_device * jax.device_count()
    if not peak_flops:
        # On CPU the devices share the host's cores: the machine's peak is one device's full-host matmul rate.
        peak_flops = measure_matmul_peak() * jax.process_count()
    if start_step == 0:
        writer.write(0, {f"params/{k}": v for k, v in sizes.items()} | {"perf/peak_flops": peak_flops})

    dataset = hat_data.train_dataset(
        run_data.train, cfg.batch_size, config.data.seed, jax.process_index(), jax.process_count()
    )
    batches = hat_data.iterate_from(dataset, start_step)
    heldout_metrics: dict[str, float] = {}
    # Training seconds and text bytes so far (over all processes), carried across resumes in the checkpoint, so
    # that curves against time, bytes and FLOPs line up for every model kind.
    train_seconds, train_bytes = progress["train_seconds"], progress["train_bytes"]

    def run_eval(step: int) -> None:
        nonlocal heldout_metrics
        if run_data.heldout is None:
            return
        heldout_metrics = evaluate_source(
            setup.eval_step, params, run_data.heldout, cfg.batch_size, cfg.eval_sequences, setup.shardings
        )
        progress_now = {"time/train_seconds": train_seconds, "time/train_bytes": train_bytes}
        writer.write(step, {f"eval/{k}": v for k, v in heldout_metrics.items()} | progress_now)
        tqdm.write(f"step {step}: held-out {heldout_metrics['bits_per_byte']:.4f} bits/byte")

    window = {"bytes": 0.0, "steps": 0, "start": time.perf_counter()}
    # A logged step's metrics stay on the device until the next step has been dispatched, so reading them never
    # stalls the host; throughput covers the steps up to that one and the time until its metrics arrived.
    pending: tuple[int, dict[str, jax.Array], float, int] | None = None
    step = start_step
    bar = tqdm(
        total=cfg.steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True, disable=not is_primary
    )
    schedule = learning_rate_schedule(cfg)

    def flush_metrics() -> None:
        nonlocal pending
        if pending is None:
            return
        done_step, device_metrics, num_bytes, num_steps = pending
        pending = None
        values = {f"train/{k}": float(v) for k, v in device_metrics.items()}
        now = time.perf_counter()
        seconds = max(now - window["start"], 1e-9)
        window["start"] = now
        if not math.isfinite(values["train/loss"]):
            raise TrainingError(
                f"loss is {values['train/loss']} at step {done_step}; the last good checkpoint is kept in "
                f"{checkpointer.directory}. Lower train.learning_rate or raise train.warmup_steps and rerun."
            )
        model_flops = flops_per_step * num_steps / seconds
        values |= {
            "perf/bytes_per_sec": num_bytes / seconds,
            "perf/bytes_per_sec_per_device": num_bytes / seconds / jax.device_count(),
            "perf/model_flops_per_sec": model_flops,
            "perf/model_flops_per_sec_per_device": model_flops / jax.device_count(),
            "perf/mfu": model_flops / peak_flops,
            "time/train_seconds": train_seconds,
            "time/train_bytes": train_bytes,
            "train/learning_rate": float(schedule(done_step)),
        }
        writer.write(done_step, values)
        bar.set_postfix(
            bpb=f"{values['train/bits_per_byte']:.3f}", bytes_s=f"{values['perf/bytes_per_sec'] / 1e3:.0f}k"
        )

    def save(at_step: int) -> None:
        flush_metrics()  # a NaN loss must stop the run before its parameters are saved
        extra = {"train_seconds": train_seconds, "train_bytes": train_bytes}
        if fitted_steps is not None:
            extra["fitted_steps"] = fitted_steps
        checkpointer.save(at_step, {"params": params, "opt_state": opt_state}, config, extra)

    def end_step() -> int:
        return min(cfg.steps, start_step + cfg.stop_after_steps) if cfg.stop_after_steps else cfg.steps

    fit = BudgetFit(cfg, start_step) if cfg.fit_steps_to_budget and fitted_steps is None else None
    if fit is not None and not fit.can_time:
        tqdm.write(
            f"train.fit_steps_to_budget: resumed at step {start_step}, too near the warmup's end (step "
            f"{fit.fit_at}) to time it; keeping train.steps={cfg.steps}"
        )
        fit = None
    last_step = end_step()
    try:
        while step < last_step:
            if cfg.time_budget_s and train_seconds >= cfg.time_budget_s:
                tqdm.write(f"time budget of {cfg.time_budget_s:.0f}s reached at step {step}")
                break
            t0 = time.perf_counter()
            local = next(batches)
            params, opt_state, metrics = setup.train_step(params, opt_state, global_batch(local, setup.shardings))
            step += 1
            flush_metrics()
            # Token batches say how many bytes their targets cover; byte batches have one byte per target.
            step_bytes = float(local.get("target_bytes", local["loss_mask"]).sum()) * jax.process_count()
            window["bytes"] += step_bytes
            train_bytes += step_bytes
            window["steps"] += 1
            if step % cfg.log_every == 0 or step == cfg.steps:
                pending = (step, metrics, window["bytes"], window["steps"])
                window["bytes"], window["steps"] = 0.0, 0
            evaluates = bool(cfg.eval_every) and step % cfg.eval_every == 0
            saves = bool(cfg.checkpoint_every) and step % cfg.checkpoint_every == 0
            if evaluates or saves or step == last_step or (fit is not None and step in fit.marks_at):
                # Steps are dispatched ahead of their results (by up to a logging interval): the clock is read after
                # they finish, so that their compute counts as training time, not as the evaluation's or the save's.
                jax.block_until_ready(opt_state)
            step_seconds = time.perf_counter() - t0
            train_seconds += step_seconds
            bar.update(1)
            if fit is not None and (steps := fit.observe(step, train_seconds, step_seconds)) is not None:
                fitted_steps = agreed_steps(steps)
                config, setup = with_steps(config, setup, fitted_steps)
                cfg, schedule = config.train, learning_rate_schedule(config.train)
                last_step = end_step()
                bar.total = cfg.steps
                bar.refresh()
                if is_primary:
                    write_workdir_file(workdir / "config.yaml", yaml.safe_dump(to_dict(config), sort_keys=False))
                tqdm.write(
                    f"train.steps fitted to the time budget of {cfg.time_budget_s:.0f}s: {fitted_steps} "
                    f"({fit.rate:.2f} steps/s; train.steps={fitted_steps} reruns this schedule)"
                )
                fit = None
            if evaluates:
                flush_metrics()
                run_eval(step)
                window["start"] = time.perf_counter()
            if saves:
                save(step)
        flush_metrics()
        if not cfg.eval_every or step % cfg.eval_every != 0:
            run_eval(step)
        if checkpointer.latest_step() != step:
            save(step)
    finally:
        bar.close()
        try:
            checkpointer.close()
        finally:
            writer.close()  # even when the checkpoint's disk is full: the metrics file is closed, not left open
    summary = {"step": step, "train_seconds": train_seconds} | {f"eval/{k}": v for k, v in heldout_metrics.items()}
    if is_primary:
        write_workdir_file(workdir / "summary.json", json.dumps(summary, indent=1))
    return summary
