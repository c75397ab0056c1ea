"""Training: optimizer and jitted steps, the loop and metrics."""

from hat.train.loop import TrainingError, train
from hat.train.mesh import MeshError
from hat.train.workdir import WorkdirError

__all__ = ["MeshError", "TrainingError", "WorkdirError", "train"]
