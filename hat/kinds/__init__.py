"""The registry of model kinds: one `ModelKind` per (`model.kind`, `data.format`) pair, one module each.

    kind = kind_of(config)            # validates what the kind needs; ConfigError naming the valid pairs
    run_data = kind.prepare_data(config)
    scorer = kind.scorer(loaded)

To add a kind: write a module here with a `ModelKind` subclass (see `hat.kinds.base` for what it owns) and add
an instance to `KINDS`. Nothing outside this package branches on `model.kind` or `data.format`.
"""

from __future__ import annotations

from pathlib import Path

from hat.byteprob.bytelevel import ByteLevelModel
from hat.checkpoint import load_model
from hat.config import Config, ConfigError
from hat.kinds.base import KindError, ModelKind, Score, Scorer
from hat.kinds.bpe import BPEKind
from hat.kinds.byte_lm import ByteLMKind
from hat.kinds.eqinfo import EqualInfoKind
from hat.kinds.hat_bytes import HatKind

KINDS: dict[tuple[str, str], ModelKind] = {
    (kind.model_kind, kind.data_format): kind for kind in (HatKind(), ByteLMKind(), BPEKind(), EqualInfoKind())
}


def kind_of(config: Config) -> ModelKind:
    """The kind of a run's config, after checking what that kind needs of the config."""
    key = (config.model.kind, config.data.format)
    kind = KINDS.get(key)
    if kind is None:
        pairs = ", ".join(f"model.kind {m} with data.format {f}" for m, f in KINDS)
        raise ConfigError(f"model.kind {key[0]} does not run on data.format {key[1]}; the registered kinds are {pairs}")
    kind.check(config)
    return kind


def load_byte_model(path: str | Path) -> ByteLevelModel:
    """The checkpoint at `path` as a byte-level model (`hat.byteprob`), however its kind computes bytes."""
    loaded = load_model(path)
    return kind_of(loaded.config).byte_model(loaded)


__all__ = ["KINDS", "KindError", "ModelKind", "Score", "Scorer", "kind_of", "load_byte_model"]
