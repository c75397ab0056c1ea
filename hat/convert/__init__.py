"""Conversions between hat and other formats.

- `hat.convert.llama`: Hugging Face Llama-family checkpoints (or GGUF files) -> a flat token LM or a HAT backbone.
- `hat.convert.gguf`: llama.cpp GGUF files of Llama models: metadata, dequantised tensors under Hugging Face names.
- `hat.convert.gguf_tokenizer`: a GGUF's byte-level BPE metadata -> a Hugging Face `tokenizer.json`.
- `hat.convert.export`: hat checkpoints -> `config.json` + safetensors (HF Llama layout, or the released HAT layout).
- `hat.convert.released`: the released HAT layout (Aleph Alpha's TFree-HAT) <-> hat, config and tensors.
- `hat.convert.layout`: PyTorch `nn.Linear` <-> hat kernel layouts and the Llama layer's parameter names.
- `hat.convert.safetensors_io`: sharded safetensors directories (HF index format), written and read lazily.

Conversions write parameter stores (`hat.checkpoint.store`).
"""
