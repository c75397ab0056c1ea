"""Conversions between hat and other formats.

- `hat.convert.store`: parameter stores (tensorstore arrays + config), written one tensor at a time.
- `hat.convert.llama`: Hugging Face Llama-family checkpoints -> a flat token LM or a HAT backbone.
- `hat.convert.export`: hat checkpoints -> `config.json` + safetensors (HF Llama layout, or the released HAT layout).
- `hat.convert.released`: the released HAT layout (Aleph Alpha's TFree-HAT) <-> hat, config and tensors.
- `hat.convert.layout`: PyTorch `nn.Linear` <-> hat kernel layouts and the Llama layer's parameter names.
- `hat.convert.safetensors_io`: sharded safetensors directories (HF index format), written and read lazily.
"""

from hat.convert.store import (
    ConversionError,
    ParamStoreWriter,
    is_param_store,
    load_store_config,
    read_param_store,
)

__all__ = ["ConversionError", "ParamStoreWriter", "is_param_store", "load_store_config", "read_param_store"]
