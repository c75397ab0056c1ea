"""Everything a trained model is stored as, and the one way to open it.

- `hat.checkpoint.run`: orbax checkpoints of a training run (parameters, optimizer state, config, data position).
- `hat.checkpoint.store`: parameter stores (tensorstore arrays + config), written one tensor at a time.
- `hat.checkpoint.load`: `open_params` and `load_model` read either, onto any mesh.
"""

from hat.checkpoint.load import LoadedModel, load_model, open_params, with_layer_layout
from hat.checkpoint.run import (
    Checkpointer,
    CheckpointError,
    CorruptCheckpointError,
    load_config_from_checkpoint,
    locate_checkpoint,
)
from hat.checkpoint.store import ConversionError, ParamStoreWriter, is_param_store, load_store_config, read_param_store

__all__ = [
    "CheckpointError",
    "Checkpointer",
    "ConversionError",
    "CorruptCheckpointError",
    "LoadedModel",
    "ParamStoreWriter",
    "is_param_store",
    "load_config_from_checkpoint",
    "load_model",
    "load_store_config",
    "locate_checkpoint",
    "open_params",
    "read_param_store",
    "with_layer_layout",
]
