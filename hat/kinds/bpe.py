"""A token LM over byte-level BPE tokens (`model.kind: token_lm`, `data.format: bpe`), measured in bytes through
its exact next-byte distributions (`hat.byteprob`)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

from hat.byteprob.bytelevel import ByteLevelModel, TokenByteModel, tokenizer_for
from hat.byteprob.evaluate import score_files
from hat.byteprob.flat import CachedFlatTokenModel, FlatTokenModel
from hat.byteprob.session import ByteLevelSession
from hat.checkpoint import LoadedModel
from hat.config import Config
from hat.data.documents import DocumentWindows
from hat.data.run import RunData
from hat.data.tokens import prepare_bpe_data
from hat.kinds.base import Scorer, TokenModelKind, require
from hat.sampling import Session
from hat.text.bpe import EOT_ID


class TokenScorer(Scorer):
    """Each file as a complete document (`hat.data.documents`): its canonical tokenisation between end-of-text
    tokens, scored by teacher-forced passes of `seq_tokens` tokens, the closing end-of-text included. For a
    complete document that is the only valid tokenisation, so this is the document's exact probability."""

    def __init__(self, loaded: LoadedModel, batch_size: int) -> None:
        super().__init__(loaded, batch_size)
        self.tokenizer = tokenizer_for(loaded.config, loaded.path)

    def source(self, texts: Sequence[bytes]) -> tuple[DocumentWindows, dict[str, float]]:
        tokenizer = self.tokenizer
        documents = tokenizer.encode_batch([text for text in texts if text])
        windows = DocumentWindows(documents, tokenizer.token_lengths, tokenizer.eot_id, self.config.data.bpe.seq_tokens)
        return windows, {}


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

    def evaluate_files(
        self, loaded: LoadedModel, paths: Sequence[Path], batch_size: int = 8, exact: bool = False
    ) -> dict[str, Any]:
        """Each file as a complete document followed by end-of-text: by one teacher-forced pass over its canonical
        tokenisation (`TokenScorer`, forward-pass speed), or with `exact` through the exact next-byte chain (about
        one token step per byte: `bits_per_byte`, its end-of-text counted) beside the teacher-forced number
        (`bits_per_byte_canonical`). The two agree up to the mass the model puts on non-canonical tokenisations."""
        teacher_forced = super().evaluate_files(loaded, paths, batch_size)
        if not exact:
            return teacher_forced
        scores = score_files([self.byte_model(loaded)], paths, end_of_text=True)
        chain = scores["models"][0]
        return {
            "name": chain["name"],
            "bits_per_byte": chain["bits_per_byte"],
            "bits_per_byte_canonical": teacher_forced["bits_per_byte"],
            "bytes": scores["bytes"],
        }

    def units(self, data: bytes, config: Config, source: Path | None = None) -> list[Hashable]:
        return tokenizer_for(config, source or config.workdir).encode(data)

    def byte_model(self, loaded: LoadedModel) -> ByteLevelModel:
        return self._byte_model(loaded, use_cache=True)

    def session(self, loaded: LoadedModel, use_cache: bool = True) -> Session:
        return ByteLevelSession(self._byte_model(loaded, use_cache))

    def _byte_model(self, loaded: LoadedModel, use_cache: bool) -> TokenByteModel:
        # Uncached: every prefix recomputed in full (the reference the KV-cached token model must match).
        tokenizer = tokenizer_for(loaded.config, loaded.path)
        model = CachedFlatTokenModel if use_cache else FlatTokenModel
        return TokenByteModel(model(loaded, tokenizer.eot_id), tokenizer, f"token_lm:{loaded.path}")

    def end_of_text_id(self, config: Config) -> int | None:
        return EOT_ID
