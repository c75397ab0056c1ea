"""Exact next-byte distributions of a token-level model (the Byte-Token Representation Lemma, Phan et al. 2025).

Definitions. A token model assigns a prefix probability P(t) = prod_i p(t_i | t_<i) to token sequences t (a
document starts after end-of-text). A token sequence is *valid* when the tokenizer can produce it as the start of a
document: t is a prefix of encode(y) for some byte string y. For hat's byte-level BPE (prefix-stable chunks, see
`hat.text.bpe`) this is exactly `encode(decode(t)) == t`; so the only valid sequence that decodes to x is
c(x) = encode(x), and the valid sequences ending inside a prefix x are the c(x[:k]).

The *covers* of a byte prefix x (n bytes) are the valid t whose last token is the first to reach position n:
|decode(t[:-1])| < n <= |decode(t)| and decode(t) starts with x. They are c(x) itself and every c(x[:k]) + [tau]
(k < n) where tau's bytes start with x[k:] and run past n, and the sequence is valid. No two covers are prefixes of
one another, so P~(x) = sum of P(t) over the covers of x sums disjoint events (up to the mass the model puts on
invalid sequences). The next-byte distribution is

    q(b | x)   = P~(x b) / Z(x)                               for each byte b
    q(EOT | x) = P(c(x)) * p(end-of-text | c(x)) / Z(x)        (the document ends after x)
    Z(x)       = sum_b P~(x b) + P(c(x)) * p(end-of-text | c(x))

The normalisation Z(x) redistributes the mass the model gives to invalid continuations (non-canonical
tokenisations), which a model trained on canonical encodings keeps small. For the empty prefix, c = () and the
distribution is that of a document's first byte (or an empty document).

Cost. Covers of x b only reach back `max_token_bytes` bytes, so q(. | x) needs the model's distributions after
c(x[:k]) for the last `max_token_bytes` values of k, and P(c(x[:k])) = P(c(x[:j])) * p(last token | c(x[:j])) with
j < k. Streaming keeps both, so each new byte costs one new model prefix, c(x), however many covers there are.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from hat.byteprob.models import Prefix, TokenModel
from hat.text.bpe import EOT_ID, BPETokenizer, chunk_start

NUM_OUTCOMES = 257  # the 256 byte values, then end-of-text
EOT_OUTCOME = 256


def outcome_logprobs(outcomes: list[np.ndarray], log_weights: list[np.ndarray]) -> np.ndarray:
    """The normalised log distribution over the 257 outcomes of weighted terms (term i puts exp(log_weights[i])
    on outcome outcomes[i]; terms of one outcome add up); outcomes without a term get -inf."""
    outcome_N, log_w_N = np.concatenate(outcomes), np.concatenate(log_weights)
    top = log_w_N.max()
    weights_O = np.bincount(outcome_N, weights=np.exp(log_w_N - top), minlength=NUM_OUTCOMES)
    with np.errstate(divide="ignore"):
        return np.log(weights_O) - np.log(weights_O.sum())


class StreamTable(Protocol):
    """A tokenizer's lookup table that starts exact next-byte streams (`TokenTable`, `LookaheadTable`)."""

    def stream(self, model: TokenModel):
        """A stream at the empty prefix: `extend`, `push`, `logprobs(n)`, `canonical_log_prob`, `model_calls`."""
        ...


class TokenIndex:
    """Token bytes padded into a matrix and tokens sorted by bytes (for prefix ranges); `excluded` ids (end-of-text,
    special tokens) never cover bytes."""

    def __init__(self, token_bytes: Sequence[bytes], excluded: Sequence[int]) -> None:
        self.lengths = np.array([len(b) for b in token_bytes], np.int32)
        self.max_len = int(self.lengths.max())
        self.bytes_VxL = np.zeros((len(token_bytes), self.max_len), np.int32)
        for index, data in enumerate(token_bytes):
            self.bytes_VxL[index, : len(data)] = np.frombuffer(data, np.uint8)
        skip = set(excluded)
        real = [i for i in range(len(token_bytes)) if i not in skip and token_bytes[i]]
        self.sorted_ids = np.array(sorted(real, key=lambda i: token_bytes[i]), np.int64)
        self.sorted_bytes = [token_bytes[i] for i in self.sorted_ids]

    def with_prefix(self, prefix: bytes, min_len: int) -> np.ndarray:
        """Ids of the tokens whose bytes start with `prefix` and are at least `min_len` long."""
        lo = bisect.bisect_left(self.sorted_bytes, prefix)
        stripped = prefix.rstrip(b"\xff")
        if stripped:
            # The smallest byte string greater than every string that starts with `prefix`.
            upper = stripped[:-1] + bytes([stripped[-1] + 1])
            hi = bisect.bisect_left(self.sorted_bytes, upper)
        else:
            hi = len(self.sorted_bytes)
        ids = self.sorted_ids[lo:hi]
        return ids[self.lengths[ids] >= min_len]


class TokenTable(TokenIndex):
    """Per-tokenizer lookups for hat's own BPE: a `TokenIndex`, and which tokens may follow a chunk tail (cached)."""

    eot_id = EOT_ID

    def __init__(self, tokenizer: BPETokenizer, cache_size: int = 4096) -> None:
        super().__init__(tokenizer.token_bytes, [EOT_ID])
        self.tokenizer = tokenizer
        self._masks: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self.cache_size = cache_size

    def stream(self, model: TokenModel) -> ByteStream:
        """A `ByteStream` of `model` at the empty prefix."""
        return ByteStream(model, self)

    def valid_after(self, tail: bytes) -> np.ndarray:
        """Boolean mask over the vocabulary: tokens tau with encode(tail + bytes(tau)) == encode(tail) + [tau].

        `tail` is the last (unfinished) chunk of a prefix; what precedes it does not matter (prefix-stable chunks).
        """
        mask = self._masks.get(tail)
        if mask is not None:
            self._masks.move_to_end(tail)
            return mask
        tok = self.tokenizer
        base = tok.encode(tail)
        ids = range(1, tok.vocab_size)
        encoded = tok.encode_batch([tail + tok.token_bytes[i] for i in ids])
        mask = np.zeros(tok.vocab_size, bool)
        n = len(base)
        for i, enc in zip(ids, encoded):
            mask[i] = len(enc) == n + 1 and enc[-1] == i and enc[:n] == base
        self._masks[tail] = mask
        if len(self._masks) > self.cache_size:
            self._masks.popitem(last=False)
        return mask


class ByteStream:
    """Exact next-byte distributions of a token model along a growing byte string.

        stream = ByteStream(model, table)      # empty prefix
        stream.extend(b"def pri")              # one new model prefix per byte, batched
        logq_O = stream.logprobs()             # 257 log-probabilities: bytes 0..255, then end-of-text

    Keeps, for every k, P(c(x[:k])) and, for the last `max_token_bytes` k, c(x[:k]), its chunk tail and the model's
    distribution after it.
    """

    def __init__(self, model: TokenModel, table: TokenTable, batch_size: int = 32) -> None:
        self.model, self.table, self.batch_size = model, table, batch_size
        self.data = bytearray()
        self.log_p: list[float] = [0.0]  # log P(c(x[:k])) for every k
        self.canonical: dict[int, Prefix] = {0: ()}  # c(x[:k]) for recent k
        self.tail_start: dict[int, int] = {0: 0}  # start of the last chunk of x[:k], recent k
        self.next_logprobs: dict[int, np.ndarray] = {}  # model distribution after c(x[:k]), recent k
        self._trunk: Prefix = ()  # encode(x[:chunk start of x])
        self._trunk_end = 0
        self.model_calls = 0

    def __len__(self) -> int:
        return len(self.data)

    def push(self, value: int) -> None:
        """Appends one byte."""
        self.extend(bytes([value]))

    def extend(self, data: bytes) -> None:
        """Appends bytes; the model prefixes they need are evaluated in batches. Afterwards `logprobs(n)` works
        for every n from the old length to the new one."""
        start = len(self.data)
        self._forget(start)
        for value in data:
            self._append_canonical(value)
        self._fill_logprobs(range(start, len(self.data) + 1))
        for k in range(start + 1, len(self.data) + 1):
            last = self.canonical[k][-1]
            j = k - int(self.table.lengths[last])
            self.log_p.append(self.log_p[j] + float(self.next_logprobs[j][last]))

    def _append_canonical(self, value: int) -> None:
        self.data.append(value)
        n = len(self.data)
        tail_start = self.tail_start[n - 1]
        tail_start += chunk_start(bytes(self.data[tail_start:]))
        if tail_start != self._trunk_end:
            self._trunk += tuple(self.table.tokenizer.encode(bytes(self.data[self._trunk_end : tail_start])))
            self._trunk_end = tail_start
        self.tail_start[n] = tail_start
        self.canonical[n] = self._trunk + tuple(self.table.tokenizer.encode(bytes(self.data[tail_start:])))

    def _fill_logprobs(self, positions: range) -> None:
        missing = [k for k in positions if k not in self.next_logprobs]
        for i in range(0, len(missing), self.batch_size):
            batch = missing[i : i + self.batch_size]
            rows = self.model.next_token_logprobs([self.canonical[k] for k in batch])
            self.model_calls += len(batch)
            for k, row in zip(batch, rows):
                self.next_logprobs[k] = np.asarray(row, np.float64)

    def _forget(self, n: int) -> None:
        """Drops per-position state that no cover of a prefix of length >= n can reach."""
        horizon = n + 1 - self.table.max_len
        for store in (self.canonical, self.tail_start, self.next_logprobs):
            for k in [k for k in store if k < horizon]:
                del store[k]

    def cover_terms(self, n: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """For the prefix x = data[:n] and each k that starts a cover extension: (k, token ids tau,
        log P(c(x[:k]) + [tau])) over the valid tau whose bytes start with x[k:] and run past the end of x."""
        terms = []
        for k in range(max(0, n + 1 - self.table.max_len), n + 1):
            ids = self.table.with_prefix(bytes(self.data[k:n]), n - k + 1)
            if len(ids):
                ids = ids[self.table.valid_after(bytes(self.data[self.tail_start[k] : k]))[ids]]
            if len(ids):
                terms.append((k, ids, self.log_p[k] + self.next_logprobs[k][ids]))
        return terms

    def logprobs(self, n: int | None = None) -> np.ndarray:
        """log q(outcome | x) for x = the first `n` bytes (default: all) over the 257 outcomes (bytes 0..255,
        end-of-text), float64; impossible bytes get -inf. Always normalised: the end-of-text term is finite, so
        Z(x) > 0. `n` may be any length reached since the last `extend` began."""
        n = len(self.data) if n is None else n
        self._fill_logprobs(range(n, n + 1))  # the empty prefix's distribution is fetched on first use
        outcomes, log_weights = [np.array([EOT_OUTCOME])], [np.array([self.log_p[n] + self.next_logprobs[n][EOT_ID]])]
        for k, ids, log_w in self.cover_terms(n):
            outcomes.append(self.table.bytes_VxL[ids, n - k])
            log_weights.append(log_w)
        return outcome_logprobs(outcomes, log_weights)

    def covers(self) -> list[tuple[Prefix, float]]:
        """The covers of the current prefix with their log prefix probabilities (c(x) first; empty for x = b"")."""
        n = len(self.data)
        if n == 0:
            return []
        out = [(self.canonical[n], self.log_p[n])]
        for k, ids, log_w in self.cover_terms(n):
            if k < n:
                out += [(self.canonical[k] + (int(i),), float(w)) for i, w in zip(ids, log_w)]
        return out

    @property
    def canonical_log_prob(self) -> float:
        """log P(encode(x)): the probability of the canonical tokenisation of the prefix."""
        return self.log_p[len(self.data)]


def next_byte_logprobs(model: TokenModel, table: StreamTable, prefix: bytes) -> np.ndarray:
    """log q(. | prefix) over 257 outcomes, computed from scratch (see the module docstring)."""
    stream = table.stream(model)
    stream.extend(prefix)
    return stream.logprobs()


def text_logprobs(model: TokenModel, table: StreamTable, data: bytes, block: int = 64) -> tuple[np.ndarray, float]:
    """The exact next-byte distribution before every byte of `data` and after its end ((len(data) + 1) x 257),
    and log P(encode(data)) (the canonical tokenisation's probability under the same model)."""
    stream = table.stream(model)
    rows = []
    for start in range(0, len(data), block):
        stream.extend(data[start : start + block])
        rows += [stream.logprobs(n) for n in range(start, len(stream))]
    rows.append(stream.logprobs())
    return np.stack(rows), stream.canonical_log_prob


def canonical_cover_check(covers: Sequence[tuple[Prefix, float]], canonical: Prefix) -> bool:
    """Whether `canonical` is among `covers` exactly once and no cover repeats."""
    seqs = [c for c, _ in covers]
    return seqs.count(canonical) == 1 and len(set(seqs)) == len(seqs)
