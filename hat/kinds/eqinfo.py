"""An EqualInfoAC M2 (`model.kind: token_lm`, `data.format: eqinfo`): a token LM over the windows of text that a
byte LM (M1) and an arithmetic coder compressed to a fixed number of bits each (Lester et al., arXiv 2404.03626)."""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterator, Sequence
from pathlib import Path
from typing import Any

from hat.checkpoint import LoadedModel
from hat.compress.data import compress_in_memory, load_m1, prepare_eqinfo_data, spec_from_config
from hat.compress.generate import sample_eqinfo_bytes
from hat.config import Config
from hat.data.run import RunData
from hat.data.token_store import TokenSequences
from hat.kinds.base import KindError, Scorer, TokenModelKind, require
from hat.sampling import Sampling, Session, stop_stream


class WindowScorer(Scorer):
    """The files compressed with the run's M1, M2 scored on the tokens.

    `bits_per_byte` is M2's: summed token NLL over the bytes its target tokens cover. `m1_bits_per_byte` is the
    size of the EqualInfoAC code itself (window bits / bytes): what M2 must beat to have learned anything beyond
    M1.
    """

    def __init__(self, loaded: LoadedModel, batch_size: int) -> None:
        super().__init__(loaded, batch_size)
        self.m1, self.spec = load_m1(self.config), spec_from_config(self.config)

    def compress(self, texts: Sequence[bytes]) -> Any:
        """The token corpus of `texts` under the run's M1."""
        return compress_in_memory(self.m1, list(texts), self.spec, self.config.data.eqinfo.segment_bytes)

    def source(self, texts: Sequence[bytes]) -> tuple[TokenSequences, dict[str, float]]:
        corpus = self.compress(texts)
        num_bytes = corpus.num_bytes
        extra = {
            "bytes": num_bytes,
            "m1_bits_per_byte": self.spec.window_bits * corpus.num_windows / num_bytes if num_bytes else math.nan,
            "bytes_per_token": num_bytes / corpus.num_tokens if corpus.num_tokens else math.nan,
        }
        return TokenSequences(corpus, self.config.data.eqinfo.seq_tokens), extra


class EqualInfoKind(TokenModelKind):
    """M2 over EqualInfoAC[window_bits, 2**token_bits] tokens."""

    name = "eqinfo"
    data_format = "eqinfo"
    description = "EqualInfoAC M2"

    def validate(self, config: Config) -> None:
        token_bits = config.data.eqinfo.token_bits
        require(
            config.model.vocab_size == 1 << token_bits,
            f"data.format eqinfo needs model.kind token_lm with model.vocab_size 2**data.eqinfo.token_bits "
            f"({1 << token_bits})",
        )

    def prepare_data(self, config: Config) -> RunData:
        return prepare_eqinfo_data(config)

    def sequence_length(self, config: Config) -> int:
        return config.data.eqinfo.seq_tokens

    def scorer(self, loaded: LoadedModel, batch_size: int = 8) -> Scorer:
        return WindowScorer(loaded, batch_size)

    def units(self, data: bytes, config: Config, source: Path | None = None) -> list[Hashable]:
        eq = config.data.eqinfo
        corpus = compress_in_memory(load_m1(config), [data], spec_from_config(config), eq.segment_bytes)
        return corpus.tokens.tolist()

    def session(self, loaded: LoadedModel, use_cache: bool = True) -> Session:
        raise KindError(f"{loaded.path}: an EqualInfoAC M2 samples whole windows, not bytes; use hat.generate.generate")

    def generate(
        self,
        loaded: LoadedModel,
        prompts: Sequence[bytes],
        max_new_bytes: int,
        sampling: Sampling,
        stop: Sequence[bytes] = (),
        use_cache: bool = True,
    ) -> Iterator[tuple[int, bytes]]:
        """Each prompt in turn: M2 samples a window's tokens, M1 decodes them (`hat.compress.generate`)."""
        for row, prompt in enumerate(prompts):
            for piece in stop_stream(sample_eqinfo_bytes(loaded, bytes(prompt), max_new_bytes, sampling), stop):
                yield row, piece
