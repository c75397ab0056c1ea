"""Shared by the end-to-end tests: the repository root, entry-point scripts loaded as modules, a tiny HAT."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# A HAT that compiles and trains in seconds (widths 32 / 64, two heads everywhere), as train.py overrides.
TINY_HAT = [
    "model.encoder.hidden_size=32", "model.encoder.mlp_hidden_size=64", "model.encoder.num_heads=2",
    "model.encoder.num_kv_heads=2", "model.decoder.hidden_size=32", "model.decoder.mlp_hidden_size=64",
    "model.decoder.num_heads=2", "model.decoder.num_kv_heads=2", "model.backbone.hidden_size=64",
    "model.backbone.mlp_hidden_size=128", "model.backbone.num_layers=2", "model.backbone.num_heads=2",
    "model.backbone.num_kv_heads=2", "model.pooling.num_heads=2", "model.pooling.num_kv_heads=2",
]  # fmt: skip


def load_script(name: str):
    """`train.py` ("train") or `scripts/<name>.py` as a module, so tests call its `main(argv)` in-process."""
    path = REPO / ("train.py" if name == "train" else f"scripts/{name}.py")
    spec = importlib.util.spec_from_file_location(f"hat_script_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
