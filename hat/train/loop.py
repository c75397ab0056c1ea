"""The training loop: prepare data, build or restore the model, step, evaluate, log and checkpoint.

Reads like a table of contents; each concern lives in its own module.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
import yaml
from flax import nnx
from tqdm import tqdm

from hat import data as hat_data
from hat.config import Config, to_dict
from hat.models import build_model, count_params
from hat.train.checkpoint import Checkpointer
from hat.train.metrics import MetricWriter
from hat.train.step import LN2, learning_rate_schedule, make_eval_step, make_optimizer, make_train_step


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the message says what to do."""


@dataclass
class RunData:
    """The training and held-out sources of a run.

    A source is a grain `RandomAccessDataSource` of example dicts with int32 `inputs`, `targets`, `word_ids` and
    float32 `loss_mask`, `text_mask` (plus `target_bytes` for token data; see `hat.train.step.target_bytes`).
    """

    train: hat_data.PackedSequences
    heldout: hat_data.PackedSequences | None
    num_train_files: int
    num_heldout_files: int
    num_train_bytes: int


def prepare_data(config: Config) -> RunData:
    """Resolves the corpus, splits it by file and prepares both parts as tensorstore arrays (cached)."""
    if config.data.format == "eqinfo":
        from hat.compress.data import prepare_eqinfo_data

        return prepare_eqinfo_data(config)
    data_cfg = config.data
    docs = hat_data.resolve_documents(data_cfg.corpus)
    train_docs, heldout_docs = hat_data.split_documents(docs, data_cfg.eval_fraction, data_cfg.seed)
    cache_dir = Path(data_cfg.cache_dir or Path(config.workdir) / "data")
    max_word = config.model.max_word_bytes
    train = hat_data.prepare_corpus(train_docs, cache_dir, max_word, name="train")
    if train.num_words == 0:
        raise hat_data.CorpusError(f"the training files of data.corpus={data_cfg.corpus!r} hold no bytes")
    heldout = hat_data.prepare_corpus(heldout_docs, cache_dir, max_word, name="heldout") if heldout_docs else None
    pack = lambda corpus: hat_data.PackedSequences.build(corpus, data_cfg.seq_bytes, data_cfg.max_words)  # noqa: E731
    return RunData(
        pack(train), pack(heldout) if heldout else None, len(train_docs), len(heldout_docs), train.num_text_bytes
    )


def pad_batch(batch: dict[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
    """Pads a short final batch with fully masked rows so every eval batch has one shape (one compile)."""
    missing = batch_size - len(batch["inputs"])
    if missing <= 0:
        return batch
    return {k: np.concatenate([v, np.zeros((missing, *v.shape[1:]), v.dtype)]) for k, v in batch.items()}


def evaluate_source(eval_step, params, source: hat_data.PackedSequences, batch_size: int, max_sequences: int = 0):
    """Exact held-out totals over `source`: bits per text byte, and nats per target (EOT included)."""
    totals = {"text_nats": 0.0, "text_bytes": 0.0, "nats": 0.0, "targets": 0.0}
    for batch in hat_data.eval_dataset(source, batch_size, max_sequences):
        out = eval_step(params, pad_batch(batch, batch_size))
        for key in totals:
            totals[key] += float(out[key])
    return {
        "bits_per_byte": totals["text_nats"] / max(totals["text_bytes"], 1.0) / LN2,
        "loss": totals["nats"] / max(totals["targets"], 1.0),
        "bytes": totals["text_bytes"],
    }


def _check_resumable(config: Config, meta: dict[str, Any]) -> None:
    saved_model, model = meta["config"]["model"], to_dict(config)["model"]
    if saved_model != model:
        changed = [k for k in saved_model if saved_model[k] != model.get(k)]
        raise TrainingError(
            f"{config.workdir} holds a checkpoint of a different model (model.{', model.'.join(changed)} differ); "
            "use a new workdir or the original model settings"
        )


def train(config: Config) -> dict[str, float]:
    """Runs (or resumes) training as configured; returns the final held-out metrics."""
    workdir = Path(config.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    cfg = config.train
    run_data = prepare_data(config)

    # The "rbg" key implementation initialises parameters several times faster on CPU than threefry.
    model = build_model(config.model, rngs=nnx.Rngs(jax.random.key(config.seed, impl="rbg")))
    graphdef, params = nnx.split(model, nnx.Param)
    del model
    tx = make_optimizer(cfg)
    opt_state = tx.init(params)
    train_step = make_train_step(graphdef, tx, config.data.max_words)
    eval_step = make_eval_step(graphdef, config.data.max_words)

    checkpointer = Checkpointer(workdir, keep=cfg.keep_checkpoints)
    start_step = 0
    if (latest := checkpointer.latest_step()) is not None:
        # The freshly initialised state is the restore target: it carries shapes, dtypes and shardings.
        state, meta = checkpointer.restore(latest, {"params": params, "opt_state": opt_state})
        _check_resumable(config, meta)
        params, opt_state, start_step = state["params"], state["opt_state"], int(meta["data_step"])
        tqdm.write(f"resumed from {checkpointer.directory / str(latest)} at step {start_step}")

    sizes = count_params(nnx.merge(graphdef, params))
    tqdm.write(
        f"{config.model.kind}: {sizes['total'] / 1e6:.2f}M params; "
        f"train {run_data.num_train_bytes / 1e6:.1f} MB in {run_data.num_train_files} files "
        f"({len(run_data.train)} sequences), held out {run_data.num_heldout_files} files"
    )
    writer = MetricWriter(workdir)
    if start_step == 0:
        writer.write(0, {f"params/{k}": v for k, v in sizes.items()})

    dataset = hat_data.train_dataset(run_data.train, cfg.batch_size, config.data.seed)
    batches = hat_data.iterate_from(dataset, start_step)
    heldout_metrics: dict[str, float] = {}

    def run_eval(step: int) -> None:
        nonlocal heldout_metrics
        if run_data.heldout is None:
            return
        heldout_metrics = evaluate_source(eval_step, params, run_data.heldout, cfg.batch_size, cfg.eval_sequences)
        writer.write(step, {f"eval/{k}": v for k, v in heldout_metrics.items()} | {"time/train_seconds": train_seconds})
        tqdm.write(f"step {step}: held-out {heldout_metrics['bits_per_byte']:.4f} bits/byte")

    train_seconds, window_bytes, window_start = 0.0, 0.0, time.perf_counter()
    # A logged step's metrics stay on the device until the next step has been dispatched, so reading them never
    # stalls the host; bytes/s covers the bytes up to that step and the time until its metrics arrived.
    pending: tuple[int, dict[str, jax.Array], float] | None = None
    step = start_step
    bar = tqdm(total=cfg.steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)

    schedule = learning_rate_schedule(cfg)

    def flush_metrics() -> None:
        nonlocal pending, window_start
        if pending is None:
            return
        done_step, device_metrics, num_bytes = pending
        pending = None
        values = {f"train/{k}": float(v) for k, v in device_metrics.items()}
        now = time.perf_counter()
        bytes_per_sec = num_bytes / max(now - window_start, 1e-9)
        window_start = now
        if not math.isfinite(values["train/loss"]):
            raise TrainingError(
                f"loss is {values['train/loss']} at step {done_step}; the last good checkpoint is kept in "
                f"{checkpointer.directory}. Lower train.learning_rate or raise train.warmup_steps and rerun."
            )
        values |= {"perf/bytes_per_sec": bytes_per_sec, "time/train_seconds": train_seconds}
        values["train/learning_rate"] = float(schedule(done_step))
        writer.write(done_step, values)
        bar.set_postfix(bpb=f"{values['train/bits_per_byte']:.3f}", bytes_s=f"{bytes_per_sec / 1e3:.0f}k")

    try:
        while step < cfg.steps:
            if cfg.time_budget_s and train_seconds >= cfg.time_budget_s:
                tqdm.write(f"time budget of {cfg.time_budget_s:.0f}s reached at step {step}")
                break
            t0 = time.perf_counter()
            batch = next(batches)
            params, opt_state, metrics = train_step(params, opt_state, batch)
            step += 1
            flush_metrics()
            window_bytes += float(batch.get("target_bytes", batch["loss_mask"]).sum())
            if step % cfg.log_every == 0 or step == cfg.steps:
                pending = (step, metrics, window_bytes)
                window_bytes = 0.0
            train_seconds += time.perf_counter() - t0
            bar.update(1)
            if step % cfg.eval_every == 0:
                flush_metrics()
                run_eval(step)
                window_start = time.perf_counter()
            if step % cfg.checkpoint_every == 0:
                flush_metrics()  # a NaN loss must stop the run before its parameters are saved
                checkpointer.save(step, {"params": params, "opt_state": opt_state}, config)
        flush_metrics()
        if step % cfg.eval_every != 0:
            run_eval(step)
        if checkpointer.latest_step() != step:
            checkpointer.save(step, {"params": params, "opt_state": opt_state}, config)
    finally:
        bar.close()
        checkpointer.close()
        writer.close()
    summary = {"step": step, "train_seconds": train_seconds} | {f"eval/{k}": v for k, v in heldout_metrics.items()}
    (workdir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
