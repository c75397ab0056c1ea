"""What the models over raw bytes (`data.format: bytes`) share: packed byte windows, byte scoring, native
byte-level distributions."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from hat import data as hat_data
from hat.byteprob.bytelevel import ByteLevelModel, NativeByteModel
from hat.checkpoint import LoadedModel
from hat.config import Config
from hat.data.layout import ContextRules, fit_context
from hat.data.run import RunData, cache_directory, split_run_documents
from hat.kinds.base import ModelKind, Scorer, require
from hat.sampling import Sampling


class ByteScorer(Scorer):
    """Files packed into byte windows exactly as training packs them (`hat.data.pipeline`), under the model's
    context rules (`hat.data.layout.ContextRules`: leading end-of-text, special tokens)."""

    def source(self, texts: Sequence[bytes]) -> tuple[hat_data.PackedSequences, dict[str, float]]:
        model, data = self.config.model, self.config.data
        rules = ContextRules.of(model)
        corpus = hat_data.prepare_in_memory(list(texts), model.max_word_bytes, rules.special_tokens)
        return hat_data.PackedSequences.build(corpus, data.seq_bytes, data.max_words, rules), {}


def prepare_byte_data(config: Config) -> RunData:
    """A run's data for `data.format: bytes`: split by file, words as tensorstore arrays (cached), packed."""
    train_docs, heldout_docs = split_run_documents(config)
    cache_dir, max_word, data_cfg = cache_directory(config), config.model.max_word_bytes, config.data
    train = hat_data.prepare_corpus(train_docs, cache_dir, max_word, name="train")
    if train.num_words == 0:
        raise hat_data.CorpusError(f"the training files of data.corpus={data_cfg.corpus!r} hold no bytes")
    heldout = hat_data.prepare_corpus(heldout_docs, cache_dir, max_word, name="heldout") if heldout_docs else None
    rules = ContextRules.of(config.model)
    pack = lambda corpus: hat_data.PackedSequences.build(  # noqa: E731
        corpus, data_cfg.seq_bytes, data_cfg.max_words, rules
    )
    return RunData(
        pack(train), pack(heldout) if heldout else None, len(train_docs), len(heldout_docs), train.num_text_bytes
    )


class ByteModelKind(ModelKind):
    """What the two models over raw bytes share: byte data, byte scoring, native byte-level distributions."""

    data_format = "bytes"
    export_format = "hf"

    def prepare_data(self, config: Config) -> RunData:
        return prepare_byte_data(config)

    def sequence_length(self, config: Config) -> int:
        return config.data.seq_bytes

    def scorer(self, loaded: LoadedModel, batch_size: int = 8) -> Scorer:
        return ByteScorer(loaded, batch_size)

    def byte_model(self, loaded: LoadedModel) -> ByteLevelModel:
        require(
            loaded.config.model.leading_end_of_text,
            "a byte-level model gives a distribution before the first byte; a model fed without a leading "
            "end-of-text (model.leading_end_of_text: false, as the released runtime) has none",
        )
        return NativeByteModel(loaded)

    def generate(
        self,
        loaded: LoadedModel,
        prompts: Sequence[bytes],
        max_new_bytes: int,
        sampling: Sampling,
        stop: Sequence[bytes] = (),
        use_cache: bool = True,
    ) -> Iterator[tuple[int, bytes]]:
        """`ModelKind.generate` with the model's special tokens (`model.special_tokens`): their strings in prompts
        and stop strings are fed as their bytes, and generated special bytes are shown as their strings."""
        tokens = ContextRules.of(loaded.config.model).special_tokens
        if not tokens.mapping:
            return super().generate(loaded, prompts, max_new_bytes, sampling, stop, use_cache)
        pieces = super().generate(
            loaded,
            [tokens.encode(p) for p in prompts],
            max_new_bytes,
            sampling,
            [tokens.encode(s) for s in stop],
            use_cache,
        )
        return ((row, tokens.decode(piece)) for row, piece in pieces)

    def prompt_bytes_kept(self, config: Config, prompt: bytes) -> int:
        data, max_word = config.data, config.model.max_word_bytes
        return len(fit_context(prompt, data.seq_bytes, data.max_words, max_word, ContextRules.of(config.model)))
