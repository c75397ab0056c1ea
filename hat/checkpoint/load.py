"""Opening what a model is stored as (a run's orbax checkpoint or a parameter store): `open_params` for any target
tree and sharding (`train.init_from`), `load_model` for evaluation, generation and export."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from hat.checkpoint.run import CheckpointError, load_config_from_checkpoint, restore_params
from hat.checkpoint.store import is_param_store, load_store_config, read_param_store
from hat.config import Config
from hat.models import build_model, convert_layer_layout


@dataclass
class LoadedModel:
    """A model restored from a checkpoint, with the config it was trained with."""

    model: nnx.Module
    config: Config
    step: int
    path: Path


def open_params(path: str | Path, target: Any) -> Any:
    """The parameters at `path` (a parameter store, a run's workdir or one checkpoint step inside it) in the
    structure, dtypes and shardings of `target` (abstract arrays with shardings, or arrays).

    A checkpoint whose tree or shapes differ from `target` is a `CheckpointError` naming the path and the fix.
    """
    if is_param_store(path):
        return read_param_store(path, target)
    try:
        return restore_params(path, target)
    except ValueError as error:  # orbax: the checkpoint's tree or shapes differ from the target's
        first_line = str(error).strip().splitlines()[0]
        raise CheckpointError(
            f"{path} does not fit this model ({first_line}); match model.* to the checkpoint's config"
        ) from None


def _abstract_params(config: Config) -> tuple[nnx.GraphDef, nnx.State]:
    abstract = nnx.eval_shape(lambda: build_model(config.model, rngs=nnx.Rngs(0)))
    return nnx.split(abstract, nnx.Param)


def load_model(path: str | Path, scan_layers: bool | None = None) -> LoadedModel:
    """Restores the model at `path`: a run's workdir, one checkpoint step inside it, or a parameter store
    (`scripts/convert_llama.py`, imported released HAT checkpoints), built from the config stored with it.

    `scan_layers` picks the backbone layout of the returned model (None: as trained); generation wants the
    per-layer list, whose layers it steps one at a time with their caches.
    """
    if is_param_store(path):
        config, location, step = load_store_config(path), Path(path).resolve(), 0
    else:
        config, directory, step = load_config_from_checkpoint(path)
        location = directory / str(step)
    graphdef, abstract_params = _abstract_params(config)
    target = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), abstract_params)
    params = open_params(location, target)
    loaded = LoadedModel(nnx.merge(graphdef, params), config, step, location)
    return loaded if scan_layers is None else with_layer_layout(loaded, scan_layers)


def with_layer_layout(loaded: LoadedModel, scan_layers: bool) -> LoadedModel:
    """`loaded` with its backbone in the scanned (stacked) or per-layer layout; the same model either way."""
    if scan_layers == loaded.config.model.scan_layers:
        return loaded
    config = dataclasses.replace(loaded.config, model=dataclasses.replace(loaded.config.model, scan_layers=scan_layers))
    graphdef, params = _abstract_params(config)
    params = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), params)
    pure = nnx.to_pure_dict(nnx.state(loaded.model, nnx.Param))
    nnx.replace_by_pure_dict(params, convert_layer_layout(pure, scan_layers))
    return dataclasses.replace(loaded, model=nnx.merge(graphdef, params), config=config)
