"""Loading a trained model from a checkpoint for evaluation and generation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from hat.config import Config
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
    """Restores the parameters at `path` (a run's workdir, or one checkpoint step inside it).

    `scan_layers` picks the backbone layout of the returned model (None: as trained); generation wants the
    per-layer list, whose layers it steps one at a time with their caches.
    """
    config, directory, step = load_config_from_checkpoint(path)
    abstract = nnx.eval_shape(lambda: build_model(config.model, rngs=nnx.Rngs(0)))
    graphdef, abstract_params = nnx.split(abstract, nnx.Param)
    target = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), abstract_params)
    params = restore_params(directory / str(step), target)
    if scan_layers is not None and scan_layers != config.model.scan_layers:
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, scan_layers=scan_layers))
        abstract = nnx.eval_shape(lambda: build_model(config.model, rngs=nnx.Rngs(0)))
        graphdef, new_params = nnx.split(abstract, nnx.Param)
        new_params = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), new_params)
        nnx.replace_by_pure_dict(new_params, convert_layer_layout(nnx.to_pure_dict(params), scan_layers))
        params = new_params
    return LoadedModel(nnx.merge(graphdef, params), config, step, directory / str(step))
