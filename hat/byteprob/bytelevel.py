"""Every hat model as a byte-level model, and byte-level ensembles of any of them.

A byte-level model gives, over 257 outcomes (bytes 0..255, then end-of-text), the distribution of the next byte:
for a whole text at once (`text_logprobs`, teacher-forced) or along a growing text (`stream`, for sampling).

- HAT and the byte LM: one forward pass per packed window, contexts laid out as in training (`hat.evaluate`) for
  texts, and as in `hat.generate` (re-run per byte) for streams. Their byte 192 doubles as end-of-text (released
  HAT's convention; it never occurs in valid UTF-8), so its probability is end-of-text's and byte 192 gets none.
- Token LMs: the exact next-byte distribution of `hat.byteprob.exact`.
- Ensembles: a weighted mixture (sum_i w_i q_i) or a weighted product of experts (prod_i q_i^w_i, renormalised over
  the 257 outcomes) of any members, themselves byte-level models.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hat.byteprob.exact import EOT_OUTCOME, NUM_OUTCOMES, StreamTable, TokenTable, text_logprobs
from hat.byteprob.lookahead import LookaheadTable
from hat.byteprob.models import TokenModel
from hat.checkpoint import LoadedModel, is_param_store
from hat.checkpoint.store import read_manifest
from hat.config import EOT_BYTE, Config
from hat.data import PackedSequences, prepare_in_memory
from hat.data.layout import layout_context
from hat.text.bpe import BPETokenizer
from hat.text.hf_bpe import HFByteBPE, load_any_tokenizer


class ByteStreamLike(Protocol):
    """A growing text: `logprobs()` of the next outcome (257), `push(byte)`."""

    def logprobs(self) -> np.ndarray: ...

    def push(self, value: int) -> None: ...


class ByteLevelModel(Protocol):
    """Next-byte distributions over 257 outcomes (bytes, then end-of-text) of any model."""

    name: str

    def text_logprobs(self, data: bytes) -> np.ndarray:
        """(len(data) + 1) x 257 log-probabilities: before every byte of `data`, then after its end."""
        ...

    def stream(self, prompt: bytes) -> ByteStreamLike:
        """A stream positioned after `prompt`."""
        ...


def _byte_rows(logprobs_Nx256: np.ndarray) -> np.ndarray:
    """256-way byte-model rows -> 257 outcomes (byte 192 is end-of-text; see the module docstring)."""
    rows = np.full((len(logprobs_Nx256), NUM_OUTCOMES), -np.inf)
    rows[:, :256] = logprobs_Nx256
    rows[:, EOT_OUTCOME] = logprobs_Nx256[:, EOT_BYTE]
    rows[:, EOT_BYTE] = -np.inf
    return rows


class NativeByteModel:
    """A HAT or byte-LM checkpoint as a byte-level model."""

    def __init__(self, loaded: LoadedModel, batch_size: int = 8) -> None:
        self.loaded, self.batch_size = loaded, batch_size
        self.name = f"{loaded.config.model.kind}:{loaded.path}"
        graphdef, self.params = nnx.split(loaded.model, nnx.Param)
        num_words = loaded.config.data.max_words

        @jax.jit
        def forward(params, inputs_BxT, word_ids_BxT):
            logits_BxTxV = nnx.merge(graphdef, params)(inputs_BxT, word_ids_BxT, num_words=num_words)
            return jax.nn.log_softmax(logits_BxTxV.astype(jnp.float32)[..., :256])

        self._forward = forward

    def text_logprobs(self, data: bytes) -> np.ndarray:
        """See `ByteLevelModel`: one forward pass per packed window of `data.seq_bytes` bytes."""
        config = self.loaded.config
        corpus = prepare_in_memory([data], config.model.max_word_bytes)
        source = PackedSequences.build(corpus, config.data.seq_bytes, config.data.max_words)
        rows = []
        for start in range(0, len(source), self.batch_size):
            examples = [source[i] for i in range(start, min(start + self.batch_size, len(source)))]
            inputs = np.zeros((self.batch_size, config.data.seq_bytes), np.int32)
            word_ids = np.full_like(inputs, config.data.max_words)
            for i, example in enumerate(examples):
                inputs[i], word_ids[i] = example["inputs"], example["word_ids"]
            out_BxTxV = np.asarray(self._forward(self.params, inputs, word_ids))
            for i, example in enumerate(examples):
                rows.append(out_BxTxV[i][example["loss_mask"] > 0])
        return _byte_rows(np.concatenate(rows).astype(np.float64))

    def stream(self, prompt: bytes) -> NativeStream:
        """See `ByteLevelModel`: the context is re-laid out and re-run for every byte (uncached)."""
        return NativeStream(self, prompt)


class NativeStream:
    """A growing text scored by a HAT or byte LM, laid out as `hat.generate` does."""

    def __init__(self, model: NativeByteModel, prompt: bytes) -> None:
        self.model, self.data = model, bytearray(prompt)

    def logprobs(self) -> np.ndarray:
        """See `ByteStreamLike`."""
        config = self.model.loaded.config
        inputs, word_ids, position = layout_context(
            bytes(self.data), config.data.seq_bytes, config.data.max_words, config.model.max_word_bytes
        )
        out = np.asarray(self.model._forward(self.model.params, inputs[None], word_ids[None]))[0, position]
        return _byte_rows(out[None].astype(np.float64))[0]

    def push(self, value: int) -> None:
        """See `ByteStreamLike`."""
        self.data.append(value)


class TokenByteModel:
    """A token LM with its tokenizer as a byte-level model (exact next-byte distributions)."""

    def __init__(self, model: TokenModel, tokenizer: BPETokenizer | HFByteBPE, name: str = "token_lm") -> None:
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.table = table_for(tokenizer)
        self.last_canonical_log_prob = math.nan

    def text_logprobs(self, data: bytes) -> np.ndarray:
        """See `ByteLevelModel`; also sets `last_canonical_log_prob` = log P(encode(data)) (natural log)."""
        rows, self.last_canonical_log_prob = text_logprobs(self.model, self.table, data)
        return rows

    def stream(self, prompt: bytes) -> ByteStreamLike:
        """See `ByteLevelModel`."""
        stream = self.table.stream(self.model)
        stream.extend(prompt)
        return stream


def combine(rows: Sequence[np.ndarray], weights: Sequence[float], how: Literal["mixture", "product"]) -> np.ndarray:
    """Combines members' log-probability rows (... x 257) into the ensemble's (normalised over the last axis)."""
    stacked = np.stack([np.asarray(r, np.float64) for r in rows])
    w = np.asarray(weights, np.float64).reshape(-1, *([1] * (stacked.ndim - 1)))
    if how == "mixture":
        with np.errstate(divide="ignore"):
            terms = stacked + np.log(w / w.sum())
        top = terms.max(axis=(0, -1), keepdims=True)
        return np.log(np.exp(terms - top).sum(axis=0)) + top[0]
    if how == "product":
        # A member with weight 0 does not vote, even on outcomes it rules out (0 * -inf counts as 0).
        with np.errstate(invalid="ignore"):
            summed = np.where(w == 0, 0.0, stacked * w).sum(axis=0)
        top = summed.max(axis=-1, keepdims=True)
        return summed - (np.log(np.exp(summed - top).sum(axis=-1, keepdims=True)) + top)
    raise ValueError(f"unknown ensemble {how!r}; expected 'mixture' or 'product'")


def fit_mixture_weights(
    rows: Sequence[Sequence[np.ndarray]], texts: Sequence[bytes], iterations: int = 100
) -> list[float]:
    """Mixture weights maximising the likelihood of `texts` (EM): `rows[i][j]` is member i's `text_logprobs` of
    text j. Each EM step cannot lower the likelihood; the weights stay positive and sum to 1."""
    log_p_MxN = np.stack(
        [
            np.concatenate([r[np.arange(len(t)), np.frombuffer(t, np.uint8)] for r, t in zip(member, texts) if t])
            for member in rows
        ]
    )
    w_M = np.full(len(rows), 1.0 / len(rows))
    for _ in range(iterations):
        log_joint_MxN = log_p_MxN + np.log(w_M)[:, None]
        top_N = log_joint_MxN.max(axis=0)
        posterior_MxN = np.exp(log_joint_MxN - top_N)
        posterior_MxN /= posterior_MxN.sum(axis=0)
        w_M = posterior_MxN.mean(axis=1)
    return w_M.tolist()


class Ensemble:
    """A weighted mixture or product of byte-level models; itself a byte-level model."""

    def __init__(
        self, members: Sequence[ByteLevelModel], weights: Sequence[float] | None = None, how: str = "mixture"
    ) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        weights = [1.0 / len(members)] * len(members) if weights is None else list(weights)
        if len(weights) != len(members) or any(w < 0 for w in weights) or not sum(weights) > 0:
            raise ValueError(f"need one non-negative weight per member ({len(members)}), not all 0; got {weights}")
        if how not in ("mixture", "product"):
            raise ValueError(f"unknown ensemble {how!r}; expected 'mixture' or 'product'")
        self.members, self.weights, self.how = list(members), weights, how
        self.name = f"{how}(" + ", ".join(f"{w:g}*{m.name}" for w, m in zip(weights, members)) + ")"

    def text_logprobs(self, data: bytes) -> np.ndarray:
        """See `ByteLevelModel`."""
        return combine([m.text_logprobs(data) for m in self.members], self.weights, self.how)

    def stream(self, prompt: bytes) -> EnsembleStream:
        """See `ByteLevelModel`."""
        return EnsembleStream(self, [m.stream(prompt) for m in self.members])


class EnsembleStream:
    """The members' streams advanced together."""

    def __init__(self, ensemble: Ensemble, streams: Sequence[ByteStreamLike]) -> None:
        self.ensemble, self.streams = ensemble, list(streams)

    def logprobs(self) -> np.ndarray:
        """See `ByteStreamLike`."""
        return combine([s.logprobs() for s in self.streams], self.ensemble.weights, self.ensemble.how)

    def push(self, value: int) -> None:
        """See `ByteStreamLike`."""
        for stream in self.streams:
            stream.push(value)


def text_bits(rows: np.ndarray, data: bytes) -> float:
    """Bits of `data`'s bytes under `rows` (from `text_logprobs`); end-of-text is not counted, as in training."""
    if not data:
        return 0.0
    targets = np.frombuffer(data, np.uint8).astype(np.int64)
    return float(-rows[np.arange(len(data)), targets].sum() / math.log(2))


def table_for(tokenizer: BPETokenizer | HFByteBPE) -> StreamTable:
    """The exact next-byte machinery a tokenizer needs: hat's prefix-stable rule (`hat.byteprob.exact`) or a
    foreign look-ahead pre-tokenizer (`hat.byteprob.lookahead`)."""
    return LookaheadTable(tokenizer) if isinstance(tokenizer, HFByteBPE) else TokenTable(tokenizer)


def tokenizer_for(config: Config, path: str | Path) -> BPETokenizer | HFByteBPE:
    """The tokenizer of the token-LM checkpoint at `path` (trained with `config`): `data.bpe.tokenizer`, else
    `tokenizer.json` in the parameter store or in the run's workdir; hat's own or a foreign one (a converted
    model's HF tokenizer.json, its eos id taken from the store's manifest, which conversion fills from the
    source's metadata)."""
    eos_id = read_manifest(path).get("eos_token_id") if is_param_store(path) else None
    if config.data.bpe.tokenizer:
        return load_any_tokenizer(config.data.bpe.tokenizer, eos_id)
    beside = Path(path) / "tokenizer.json"  # a parameter store carries its tokenizer
    return load_any_tokenizer(beside if beside.is_file() else Path(path).parent.parent / "tokenizer.json", eos_id)
