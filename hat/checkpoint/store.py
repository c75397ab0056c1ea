"""Parameter stores: a model's parameters as one tensorstore (zarr3) array each, plus its config as JSON.

Conversions write here (Llama imports, released-HAT imports) because a store can be written one tensor at a time:
an 8B model converts in the memory of its largest tensor, where an orbax save needs the whole tree in memory.
Reading is sharded: each array is read straight into the target sharding's pieces (`jax.make_array_from_callback`),
so `train.py` (`train.init_from`), evaluation and generation restore a store onto any mesh.

Layout of `DIR/`:
    hat_params.json          {"format": "hat-params", "version": 1, "config": <run config>, "params": {name: shape}}
    params/<name>/           one zarr3 array per parameter, names like `backbone.layers.3.mlp.up_proj`

Parameters are stored per layer (`backbone.layers.N.*`); a scanned model reads them into its stacked layout.
A store is written into a hidden sibling directory and renamed into place when complete, so an interrupted
conversion never leaves a directory that looks finished.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jax
import numpy as np
import tensorstore as ts
from flax import nnx

from hat.config import Config, config_from_dict, to_dict
from hat.data.atomic import atomic_directory
from hat.errors import HatError
from hat.models import build_model

STORE_FILE = "hat_params.json"
STORE_FORMAT = "hat-params"
# Chunks of at most this many elements (64 MiB of float32), cut along the first axis.
_CHUNK_ELEMENTS = 1 << 24


class ConversionError(HatError, ValueError):
    """A conversion or store cannot proceed; the message names the file or field and the fix."""


def is_param_store(path: str | Path) -> bool:
    """Whether `path` is a complete parameter store."""
    return (Path(path) / STORE_FILE).is_file()


def model_param_shapes(config: Config, scan_layers: bool = False) -> dict[str, tuple[int, ...]]:
    """Flat parameter names and shapes of the model `config` describes (no allocation)."""
    model_cfg = dataclasses.replace(config.model, scan_layers=scan_layers)
    abstract = nnx.eval_shape(lambda: build_model(model_cfg, rngs=nnx.Rngs(0)))
    return {name: tuple(leaf.shape) for name, leaf in flatten_params(nnx.state(abstract, nnx.Param)).items()}


def flatten_params(params: Any) -> dict[str, Any]:
    """`nnx.State` or pure dict -> `{"a.b.c": leaf}` (leaves unwrapped from their Variables)."""
    pure = nnx.to_pure_dict(params) if isinstance(params, nnx.State) else params
    flat: dict[str, Any] = {}

    def visit(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                visit(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node

    visit(pure, "")
    return flat


def unflatten_params(flat: dict[str, Any]) -> dict[str, Any]:
    """`{"a.b.c": leaf}` -> nested pure dict (integer keys for layer indices, as `nnx.to_pure_dict` gives)."""
    tree: dict[Any, Any] = {}
    for name, leaf in flat.items():
        node = tree
        keys = [int(part) if part.isdigit() else part for part in name.split(".")]
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = leaf
    return tree


@contextmanager
def staging_dir(out_dir: str | Path, what: str = "the parameter store") -> Iterator[Path]:
    """Yields a hidden sibling of `out_dir` to write into; renamed to `out_dir` when the block completes
    (`hat.data.atomic.atomic_directory`).

    An existing `out_dir` is refused before anything is written; an error inside the block deletes the partial
    directory, so nothing that looks complete is ever left behind. A full, read-only or unwritable disk is a
    one-line `hat.errors.StorageError` naming `what` and `out_dir`.
    """
    out_dir = Path(out_dir).resolve()
    if out_dir.exists():
        raise ConversionError(f"output directory already exists: {out_dir} (choose a new path or delete it)")
    with atomic_directory(out_dir, what=what) as partial:
        yield partial


class ParamStoreWriter:
    """Writes a store one tensor at a time; `finalize()` checks that every parameter arrived, then publishes it.

        with ParamStoreWriter(out_dir, config) as writer:
            for name, array in tensors:
                writer.write(name, array)
            writer.finalize()

    Leaving the block without `finalize()` (an error, Ctrl-C) deletes the partial directory.
    """

    def __init__(self, out_dir: str | Path, config: Config) -> None:
        self.out_dir = Path(out_dir).resolve()
        if self.out_dir.exists():
            raise ConversionError(f"output directory already exists: {self.out_dir} (choose a new path or delete it)")
        self.config = config
        self.expected = model_param_shapes(config, scan_layers=False)
        self.written: dict[str, tuple[int, ...]] = {}
        self.partial_dir = Path()
        self._staging = contextlib.ExitStack()
        self.extra_files: dict[str, Path] = {}
        self._done = False

    def __enter__(self) -> ParamStoreWriter:
        self.partial_dir = self._staging.enter_context(staging_dir(self.out_dir))
        (self.partial_dir / "params").mkdir()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if not self._done:
            # An error, or no finalize(): the store is incomplete, so the staging directory is deleted, not published.
            unfinished = exc_info if exc_info[0] else (ConversionError, ConversionError("not finalized"), None)
            self._staging.__exit__(*unfinished)

    def write(self, name: str, array: np.ndarray) -> None:
        """Stores parameter `name` (float32); its shape must be the model's."""
        if name not in self.expected:
            raise ConversionError(f"parameter {name!r} is not part of the configured model")
        if name in self.written:
            raise ConversionError(f"parameter {name!r} written twice")
        if tuple(array.shape) != self.expected[name]:
            raise ConversionError(
                f"parameter {name!r} has shape {tuple(array.shape)}, the configured model needs {self.expected[name]}"
            )
        write_array(self.partial_dir / "params" / name, np.asarray(array, np.float32))
        self.written[name] = tuple(array.shape)

    def write_blocks(
        self,
        name: str,
        shape: tuple[int, ...],
        block_shape: tuple[int, ...],
        blocks: Iterator[tuple[tuple, np.ndarray]],
    ) -> None:
        """Stores parameter `name` from `(index, block)` pieces (`index` a tuple of slices), so a tensor larger than
        memory allows is written a piece at a time; `block_shape` is the array's chunk shape (pieces aligned to it
        are written without reading anything back)."""
        if name not in self.expected or name in self.written or tuple(shape) != self.expected[name]:
            raise ConversionError(f"parameter {name!r} with shape {tuple(shape)} does not fit the configured model")
        store = _create(self.partial_dir / "params" / name, list(shape), list(block_shape))
        for index, block in blocks:
            store[index].write(np.asarray(block, np.float32)).result()
        self.written[name] = tuple(shape)

    def add_file(self, name: str, source: Path) -> None:
        """Copies a side file (e.g. `tokenizer.json`) into the store when it is finalized."""
        self.extra_files[name] = Path(source)

    def missing(self) -> list[str]:
        """Parameters of the model not written yet."""
        return [name for name in self.expected if name not in self.written]

    def finalize(self, extra_meta: dict[str, Any] | None = None) -> Path:
        """Writes the manifest and renames the store into place; returns its path."""
        if missing := self.missing():
            raise ConversionError(f"{len(missing)} parameters were never written, e.g. {missing[:3]}")
        for name, source in self.extra_files.items():
            shutil.copyfile(source, self.partial_dir / name)
        manifest = {
            "format": STORE_FORMAT,
            "version": 1,
            "config": to_dict(self.config),
            "params": {name: list(shape) for name, shape in self.written.items()},
            **(extra_meta or {}),
        }
        (self.partial_dir / STORE_FILE).write_text(json.dumps(manifest, indent=1))
        self._staging.close()  # renames the partial directory into place
        self._done = True
        return self.out_dir


def write_array(path: Path, array: np.ndarray) -> None:
    """One float32 zarr3 array, chunked along its first axis."""
    if not array.shape:
        raise ConversionError(f"scalar parameter at {path.name}: stores hold arrays only")
    shape = list(array.shape)
    row = math.prod(shape[1:]) or 1
    chunk = [max(1, min(shape[0], _CHUNK_ELEMENTS // row)), *shape[1:]]
    _create(path, shape, chunk).write(array).result()


def _create(path: Path, shape: list[int], chunk: list[int]) -> ts.TensorStore:
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}}
    layout = ts.ChunkLayout(chunk_shape=chunk)
    return ts.open(spec, create=True, dtype=ts.float32, shape=shape, chunk_layout=layout).result()


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The store's manifest; a clear error when `path` is not a store."""
    manifest_path = Path(path) / STORE_FILE
    if not manifest_path.is_file():
        raise ConversionError(f"not a hat parameter store: {path} (no {STORE_FILE}; convert or export first)")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != STORE_FORMAT:
        raise ConversionError(f"{manifest_path} is not a {STORE_FORMAT} manifest")
    return manifest


def load_store_config(path: str | Path) -> Config:
    """The run config saved with a store."""
    return config_from_dict(read_manifest(path)["config"])


def _open(path: Path) -> ts.TensorStore:
    return ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}}, open=True).result()


def iter_store(path: str | Path) -> Iterator[tuple[str, np.ndarray]]:
    """Yields `(name, float32 array)` one parameter at a time (per-layer names)."""
    yield from StoreTensors(path).items()


class StoreTensors(Mapping):
    """A store's parameters as a read-on-access mapping `{per-layer name: float32 array}` (nothing held)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.shapes = {name: tuple(shape) for name, shape in read_manifest(path)["params"].items()}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.shapes:
            raise KeyError(name)
        return np.asarray(_open(self.path / "params" / name).read().result(), np.float32)

    def __iter__(self) -> Iterator[str]:
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)


def read_param_store(path: str | Path, abstract_params: nnx.State) -> nnx.State:
    """Reads a store into the structure of `abstract_params`, each leaf in its own sharding and dtype.

    Leaves of `abstract_params` may be `jax.ShapeDtypeStruct`s with shardings (restore onto a mesh) or arrays
    (placed on the default device). A scanned backbone reads its stacked leaves from the per-layer arrays.
    Each process reads only the pieces its devices hold. `abstract_params` is filled in place and returned.
    """
    path = Path(path)
    stored = StoreTensors(path).shapes
    targets = flatten_params(abstract_params)
    # Per target leaf: the per-layer arrays a stacked (scanned) leaf is read from, or [] for a leaf stored as is.
    layers = {name: _layer_names(name, leaf.shape[0] if leaf.shape else 0, stored) for name, leaf in targets.items()}
    default = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    problems = []
    for name, leaf in targets.items():
        sources = layers[name] or [name]
        shape = tuple(leaf.shape[1:]) if layers[name] else tuple(leaf.shape)
        for source in sources:
            if source not in stored:
                problems.append(f"{source} missing")
            elif stored[source] != shape:
                problems.append(f"{source} has shape {stored[source]}, the model needs {shape}")
    if problems:
        raise ConversionError(
            f"store {path} does not fit the configured model: {'; '.join(problems[:4])}"
            + (f" (+{len(problems) - 4} more)" if len(problems) > 4 else "")
        )

    def read(name: str, leaf: Any) -> jax.Array:
        sharding = getattr(leaf, "sharding", None) or default
        if layers[name]:
            arrays = [_open(path / "params" / source) for source in layers[name]]

            def callback(index: tuple[slice, ...]) -> np.ndarray:
                picked = range(len(arrays))[index[0]]
                return np.stack([arrays[i][index[1:]].read().result() for i in picked]).astype(leaf.dtype)

        else:
            array = _open(path / "params" / name)

            def callback(index: tuple[slice, ...]) -> np.ndarray:
                return np.asarray(array[index].read().result()).astype(leaf.dtype)

        return jax.make_array_from_callback(tuple(leaf.shape), sharding, callback)

    restored = {name: read(name, leaf) for name, leaf in targets.items()}
    pure = unflatten_params(restored)
    nnx.replace_by_pure_dict(abstract_params, pure)
    return abstract_params


def _layer_names(name: str, num_layers: int, stored: dict[str, tuple[int, ...]]) -> list[str]:
    """For a stacked (scanned) leaf `backbone.layers.<rest>`: the per-layer names it reads; else []."""
    prefix = "backbone.layers."
    if not name.startswith(prefix) or name[len(prefix) :].split(".")[0].isdigit() or name in stored:
        return []
    rest = name[len(prefix) :]
    return [f"{prefix}{index}.{rest}" for index in range(num_layers)]
