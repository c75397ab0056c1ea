"""Loading a trained model from a checkpoint for evaluation and generation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from hat.config import Config
from hat.convert.store import is_param_store, load_store_config, read_param_store
from hat.models import build_model, convert_layer_layout
from hat.train.checkpoint import load_config_from_checkpoint, restore_params


@dataclass
class LoadedModel:
    """A model restored from a checkpoint, with the config it was trained with."""

    model: nnx.Module
    config: Config
    step: int
    path: Path


def load_model(path: str | Path, scan_layers: bool | None = None) -> LoadedModel:
    """Restores the parameters at `path`: a run's workdir, one checkpoint step inside it, or a parameter store
    (`scripts/convert_llama.py`, imported released HAT checkpoints).

    `scan_layers` picks the backbone layout of the returned model (None: as trained); generation wants the
    per-layer list, whose layers it steps one at a time with their caches.
    """
    if is_param_store(path):
        config = load_store_config(path)
        abstract = nnx.eval_shape(lambda: build_model(config.model, rngs=nnx.Rngs(0)))
        graphdef, abstract_params = nnx.split(abstract, nnx.Param)
        params = read_param_store(path, abstract_params)
        loaded = LoadedModel(nnx.merge(graphdef, params), config, 0, Path(path).resolve())
        return loaded if scan_layers is None else with_layer_layout(loaded, scan_layers)
    config, directory, step = load_config_from_checkpoint(path)
    abstract = nnx.eval_shape(lambda: build_model(config.model, rngs=nnx.Rngs(0)))
    graphdef, abstract_params = nnx.split(abstract, nnx.Param)
    target = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), abstract_params)
    params = restore_params(directory / str(step), target)
    loaded = LoadedModel(nnx.merge(graphdef, params), config, step, directory / str(step))
    return loaded if scan_layers is None else with_layer_layout(loaded, scan_layers)


def with_layer_layout(loaded: LoadedModel, scan_layers: bool) -> LoadedModel:
    """`loaded` with its backbone in the scanned (stacked) or per-layer layout; the same model either way."""
    if scan_layers == loaded.config.model.scan_layers:
        return loaded
    config = dataclasses.replace(loaded.config, model=dataclasses.replace(loaded.config.model, scan_layers=scan_layers))
    abstract = nnx.eval_shape(lambda: build_model(config.model, rngs=nnx.Rngs(0)))
    graphdef, params = nnx.split(abstract, nnx.Param)
    params = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), params)
    pure = nnx.to_pure_dict(nnx.state(loaded.model, nnx.Param))
    nnx.replace_by_pure_dict(params, convert_layer_layout(pure, scan_layers))
    return dataclasses.replace(loaded, model=nnx.merge(graphdef, params), config=config)
