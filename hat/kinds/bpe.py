"""A token LM over byte-level BPE tokens (`model.kind: token_lm`, `data.format: bpe`), measured in bytes through
its exact next-byte distributions (`hat.byteprob`)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

from hat.byteprob.bytelevel import ByteLevelModel, TokenByteModel, tokenizer_for
from hat.byteprob.evaluate import score_files
from hat.byteprob.flat import CachedFlatTokenModel, FlatTokenModel
from hat.byteprob.models import TokenModel
from hat.byteprob.session import ByteLevelSession
from hat.checkpoint import LoadedModel
from hat.config import Config
from hat.data.run import RunData
from hat.data.token_store import TokenSequences
from hat.data.tokens import prepare_bpe_data, tokens_in_memory
from hat.kinds.base import Scorer, TokenModelKind, require
from hat.sampling import Session
from hat.text.bpe import EOT_ID


class TokenScorer(Scorer):
    """Each file's canonical tokenisation followed by end-of-text, in `seq_tokens` windows as in training (for a
    complete document that is the only valid tokenisation, so this is its exact probability)."""

    def __init__(self, loaded: LoadedModel, batch_size: int) -> None:
        super().__init__(loaded, batch_size)
        self.tokenizer = tokenizer_for(loaded.config, loaded.path)

    def source(self, texts: Sequence[bytes]) -> tuple[TokenSequences, dict[str, float]]:
        corpus = tokens_in_memory(self.tokenizer, [text for text in texts if text])
        return TokenSequences(corpus, self.config.data.bpe.seq_tokens), {}


class BPEKind(TokenModelKind):
    """A flat LM over the tokens of a byte-level BPE that hat trained (prefix-stable chunks)."""

    name = "bpe"
    data_format = "bpe"
    description = "BPE token LM"

    def validate(self, config: Config) -> None:
        require(
            config.model.vocab_size == config.data.bpe.vocab_size,
            f"data.format bpe needs model.kind token_lm with model.vocab_size == data.bpe.vocab_size "
            f"(got vocab_size {config.model.vocab_size} and {config.data.bpe.vocab_size})",
        )

    def prepare_data(self, config: Config) -> RunData:
        return prepare_bpe_data(config)

    def sequence_length(self, config: Config) -> int:
        return config.data.bpe.seq_tokens

    def scorer(self, loaded: LoadedModel, batch_size: int = 8) -> Scorer:
        return TokenScorer(loaded, batch_size)

    def evaluate_files(self, loaded: LoadedModel, paths: Sequence[Path], batch_size: int = 8) -> dict[str, Any]:
        """Through the exact next-byte chain (`bits_per_byte`, about one token step per byte) beside the canonical
        tokenisation under the same model and contexts (`bits_per_byte_canonical`)."""
        scores = score_files([self.byte_model(loaded)], paths)
        return scores["models"][0] | {"bytes": scores["bytes"]}

    def units(self, data: bytes, config: Config, source: Path | None = None) -> list[Hashable]:
        return tokenizer_for(config, source or config.workdir).encode(data)

    def byte_model(self, loaded: LoadedModel) -> ByteLevelModel:
        return self._byte_model(loaded, CachedFlatTokenModel(loaded))

    def session(self, loaded: LoadedModel, use_cache: bool = True) -> Session:
        # Uncached: every prefix recomputed in full (the reference the KV-cached token model must match).
        token_model = CachedFlatTokenModel(loaded) if use_cache else FlatTokenModel(loaded)
        return ByteLevelSession(self._byte_model(loaded, token_model))

    def _byte_model(self, loaded: LoadedModel, token_model: TokenModel) -> TokenByteModel:
        return TokenByteModel(token_model, tokenizer_for(loaded.config, loaded.path), f"token_lm:{loaded.path}")

    def end_of_text_id(self, config: Config) -> int | None:
        return EOT_ID
