"""Loading a trained model from a checkpoint for evaluation and generation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from hat.config import Config
from hat.models import build_model
from hat.train.checkpoint import load_config_from_checkpoint, restore_params


@dataclass
class LoadedModel:
    """A model restored from a checkpoint, with the config it was trained with."""

    model: nnx.Module
    config: Config
    step: int
    path: Path


def load_model(path: str | Path) -> LoadedModel:
    """Restores the parameters at `path` (a run's workdir, or one checkpoint step inside it)."""
    config, directory, step = load_config_from_checkpoint(path)
    abstract = nnx.eval_shape(lambda: build_model(config.model, rngs=nnx.Rngs(0)))
    graphdef, abstract_params = nnx.split(abstract, nnx.Param)
    target = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), abstract_params)
    params = restore_params(directory / str(step), target)
    return LoadedModel(nnx.merge(graphdef, params), config, step, directory / str(step))
