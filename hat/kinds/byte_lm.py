"""The flat byte-level baseline (`model.kind: byte_lm`): the backbone stack run directly over bytes."""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path

from hat.checkpoint import LoadedModel
from hat.config import EOT_BYTE, Config
from hat.kinds.byte_data import ByteModelKind
from hat.models import flops_per_byte
from hat.sampling import Session
from hat.sessions import FlatSession, UncachedSession


class ByteLMKind(ByteModelKind):
    """A flat LM over bytes."""

    name = model_kind = "byte_lm"
    unit = "byte"
    description = "flat byte LM"

    def units(self, data: bytes, config: Config, source: Path | None = None) -> list[Hashable]:
        return list(data)

    def flops_per_text_byte(self, config: Config, bytes_per_unit: float) -> float:
        return flops_per_byte(config.model, config.data.seq_bytes, 1.0)

    def session(self, loaded: LoadedModel, use_cache: bool = True) -> Session:
        return FlatSession(loaded) if use_cache else UncachedSession(loaded)

    def end_of_text_id(self, config: Config) -> int | None:
        return EOT_BYTE
