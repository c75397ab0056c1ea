"""Shared by the end-to-end tests: the repository root, commands and scripts to call in-process, a tiny HAT."""

import functools
import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path

from hat.cli import run

REPO = Path(__file__).resolve().parent.parent

# A HAT that compiles and trains in seconds (widths 32 / 64, two heads everywhere), as train.py overrides.
TINY_HAT = [
    "model.encoder.hidden_size=32", "model.encoder.mlp_hidden_size=64", "model.encoder.num_heads=2",
    "model.encoder.num_kv_heads=2", "model.decoder.hidden_size=32", "model.decoder.mlp_hidden_size=64",
    "model.decoder.num_heads=2", "model.decoder.num_kv_heads=2", "model.backbone.hidden_size=64",
    "model.backbone.mlp_hidden_size=128", "model.backbone.num_layers=2", "model.backbone.num_heads=2",
    "model.backbone.num_kv_heads=2", "model.pooling.num_heads=2", "model.pooling.num_kv_heads=2",
]  # fmt: skip


def cli(name: str) -> Callable[[list[str]], int]:
    """The command `hat.cli.<name>` as its console script runs it: its exit code, a `HatError` as one stderr line."""
    return functools.partial(run, importlib.import_module(f"hat.cli.{name}").main)


def load_script(name: str, folder: str = "scripts"):
    """`scripts/<name>.py` (or `<folder>/<name>.py`, e.g. a benchmark) as a module, so tests call its functions and
    `main(argv)` in-process."""
    path = REPO / folder / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"hat_script_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
