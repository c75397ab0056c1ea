"""Training: optimizer and jitted steps, the loop, checkpoints and metrics."""

from hat.train.checkpoint import Checkpointer, CheckpointError, load_config_from_checkpoint, locate_checkpoint
from hat.train.loop import TrainingError, train
from hat.train.mesh import MeshError

__all__ = [
    "CheckpointError",
    "Checkpointer",
    "MeshError",
    "TrainingError",
    "load_config_from_checkpoint",
    "locate_checkpoint",
    "train",
]
