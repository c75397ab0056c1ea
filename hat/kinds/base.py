"""What a model kind is: everything about a run that depends on what it models and what data it reads.

A kind is the pair (`model.kind`, `data.format`) — a HAT over bytes, a flat byte LM, a token LM over BPE tokens, an
EqualInfoAC M2 over compressed-text tokens — and one `ModelKind` object in `hat.kinds` owns every decision that
differs between them: config checks, data preparation, sequence length and FLOPs, batch fields, the evaluation
scorer and its units, the byte-level model for `hat.byteprob`, generation, and export. Everything else (the
training loop, the dry run, evaluation, generation, export, the command line) asks the kind and never branches on
`model.kind` or `data.format` itself.
"""

from __future__ import annotations

import abc
import math
import time
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax.numpy as jnp
from flax import nnx

from hat.byteprob.bytelevel import ByteLevelModel
from hat.checkpoint import LoadedModel
from hat.config import Config, ConfigError, ModelConfig
from hat.data.run import RunData
from hat.errors import HatError
from hat.models import flops_per_byte
from hat.models.objective import evaluate_source, make_eval_step
from hat.sampling import Sampling, Session, sample_session

if TYPE_CHECKING:
    import grain

BATCH_FIELDS = {
    "inputs": jnp.int32,
    "targets": jnp.int32,
    "word_ids": jnp.int32,
    "loss_mask": jnp.float32,
    "text_mask": jnp.float32,
}


class KindError(HatError, ValueError):
    """A model kind cannot do what was asked (or the config names no kind); the message says what can."""


@dataclass
class Score:
    """Bits per byte of a model over some files, and how long scoring took (compilation excluded)."""

    bits_per_byte: float
    bytes: int
    seconds: float
    extra: dict[str, float]


class Scorer(abc.ABC):
    """Bits per byte of one model on any files, with its eval step compiled once for all of them.

    Each file is one document followed by end-of-text, laid out as the kind's training data lays it out, so a
    held-out file scores the training loop's held-out number. Each kind gives `source(texts)`.
    """

    def __init__(self, loaded: LoadedModel, batch_size: int) -> None:
        self.loaded, self.config, self.batch_size = loaded, loaded.config, batch_size
        graphdef, self.params = nnx.split(loaded.model, nnx.Param)
        self.eval_step = make_eval_step(graphdef, self.config.data.max_words)
        self.compiled = False

    @abc.abstractmethod
    def source(self, texts: Sequence[bytes]) -> tuple[grain.sources.RandomAccessDataSource, dict[str, float]]:
        """The evaluation examples of `texts` (one document each), and kind-specific figures about them (`bytes`:
        the text bytes scored, when they differ from the bytes the targets cover)."""

    def __call__(self, paths: Sequence[Path], timed: bool = True) -> Score:
        """Scores the files; when `timed`, the first call runs one batch untimed, so the time excludes compiling."""
        source, extra = self.source([Path(path).read_bytes() for path in paths])
        if not len(source):
            return Score(math.nan, int(extra.get("bytes", 0)), 0.0, extra)
        if timed and not self.compiled:
            evaluate_source(self.eval_step, self.params, source, self.batch_size, max_sequences=self.batch_size)
            self.compiled = True
        start = time.perf_counter()
        result = evaluate_source(self.eval_step, self.params, source, self.batch_size)
        seconds = time.perf_counter() - start
        if "bytes" in extra:  # the files' bytes differ from the bytes the scored targets cover
            extra["scored_bytes"] = result["bytes"]
        num_bytes = int(extra.pop("bytes", result["bytes"]))
        bits = result["bits_per_byte"] if result["bytes"] else math.nan
        return Score(bits, num_bytes, seconds, extra)


class ModelKind(abc.ABC):
    """One registered model kind (see the module docstring); subclasses live one per module in `hat.kinds`."""

    name: str  # the registry key, e.g. "hat"
    model_kind: str  # model.kind
    data_format: str  # data.format
    unit: str  # what the model's backbone runs over: "word", "byte", "token"
    description: str

    # --- config and training shapes -------------------------------------------------------------------------

    # Whether the network's inputs are bytes (hashed byte n-gram embeddings, `model.ngrams`, need them).
    byte_inputs: bool = True

    def check(self, config: Config) -> None:
        """Raises `ConfigError` for settings this kind cannot run with: what all kinds share, then `validate`."""
        require(
            self.byte_inputs or not config.model.ngrams.sizes,
            f"model.ngrams hashes byte n-grams, but a {self.description} reads tokens (remove model.ngrams)",
        )
        self.validate(config)

    def validate(self, config: Config) -> None:
        """Raises `ConfigError` for settings this kind cannot run with (beyond what `hat.config` checks); the
        base kind needs nothing more."""
        return None

    @abc.abstractmethod
    def prepare_data(self, config: Config) -> RunData:
        """The run's training and held-out sources (cached under `hat.data.run.cache_directory`)."""

    @abc.abstractmethod
    def sequence_length(self, config: Config) -> int:
        """Units (bytes or tokens) per training sequence."""

    def units_per_backbone_slot(self, config: Config) -> float:
        """Input units per backbone position at training shapes (a HAT runs every word slot, used or not)."""
        return 1.0

    def forward_flops_per_unit(self, config: Config, model: ModelConfig | None = None) -> float:
        """Forward FLOPs per input unit at training shapes (`model` replaces `config.model`, e.g. without a
        frozen stack)."""
        model = model or config.model
        return flops_per_byte(model, self.sequence_length(config), self.units_per_backbone_slot(config))

    def batch_fields(self) -> dict[str, Any]:
        """Name -> dtype of every field of a training batch."""
        return dict(BATCH_FIELDS)

    # --- evaluation ---------------------------------------------------------------------------------------------

    @abc.abstractmethod
    def scorer(self, loaded: LoadedModel, batch_size: int = 8) -> Scorer:
        """A scorer of files for the evaluation suite and `hat.evaluate.evaluate_files`."""

    def evaluate_files(
        self, loaded: LoadedModel, paths: Sequence[Path], batch_size: int = 8, exact: bool = False
    ) -> dict[str, Any]:
        """Bits per byte of `loaded` over the files (each one document), and the kind's own figures. `exact`:
        through the exact next-byte chain where that differs from the kind's scorer (token LMs over a
        tokenizer); a kind without one refuses it."""
        if exact:
            raise KindError(
                f"{loaded.path}: --exact scores a BPE token LM's next-byte chain; a {self.description} "
                "has none (its default scoring is already its exact probability)"
            )
        score = self.scorer(loaded, batch_size)(paths, timed=False)
        return {"bits_per_byte": score.bits_per_byte, "bytes": score.bytes, **score.extra}

    @abc.abstractmethod
    def units(self, data: bytes, config: Config, source: Path | None = None) -> list[Hashable]:
        """The units the model's backbone runs over for `data` (for unit statistics); `source` is the checkpoint
        (where a token LM's tokenizer is found)."""

    def unit_vocabulary(self, config: Config) -> int | None:
        """The number of possible units, or None for an open set (then: the distinct units seen)."""
        return config.model.vocab_size

    def flops_per_text_byte(self, config: Config, bytes_per_unit: float) -> float:
        """Forward FLOPs per byte of text whose units hold `bytes_per_unit` bytes on average."""
        return flops_per_byte(config.model, self.sequence_length(config), 1.0) / bytes_per_unit

    # --- byte-level probabilities and generation ------------------------------------------------------------------

    def byte_model(self, loaded: LoadedModel) -> ByteLevelModel:
        """The model as a byte-level model (`hat.byteprob`): next-byte distributions, for scoring and ensembles."""
        raise KindError(f"{loaded.path}: a {self.description} has no byte-level distribution in hat.byteprob")

    def prompt_bytes_kept(self, config: Config, prompt: bytes) -> int:
        """How many of the prompt's last bytes generation reads (a context longer than the model's is cut)."""
        return len(prompt)

    @abc.abstractmethod
    def session(self, loaded: LoadedModel, use_cache: bool = True) -> Session:
        """A decode session for `hat.sampling.sample_session`."""

    def generate(
        self,
        loaded: LoadedModel,
        prompts: Sequence[bytes],
        max_new_bytes: int,
        sampling: Sampling,
        stop: Sequence[bytes] = (),
        use_cache: bool = True,
    ) -> Iterator[tuple[int, bytes]]:
        """Yields `(row, new bytes)` for a batch of prompts (`hat.sampling.sample_session`'s stop rule)."""
        return sample_session(self.session(loaded, use_cache), prompts, max_new_bytes, sampling, stop)

    # --- export -------------------------------------------------------------------------------------------------

    export_format: str  # the layout `hat.convert.export` writes this kind in: "hf" (Llama) or "released" (HAT)

    def end_of_text_id(self, config: Config) -> int | None:
        """The id that ends a document in the model's vocabulary (bos/eos of an export), or None."""
        return None


class TokenModelKind(ModelKind):
    """What the flat LMs over tokens share: a token's target stands for several bytes of text (`target_bytes`),
    and the network exports in the HF Llama layout."""

    model_kind = "token_lm"
    unit = "token"
    export_format = "hf"
    byte_inputs = False

    def batch_fields(self) -> dict[str, Any]:
        return super().batch_fields() | {"target_bytes": jnp.float32}


def require(condition: bool, message: str) -> None:
    """Raises `ConfigError(message)` unless `condition`."""
    if not condition:
        raise ConfigError(message)
