"""Exact integer arithmetic coding over any alphabet, driven by quantised probability vectors.

Probabilities are quantised to integer frequencies that sum to `2**precision` with at least `min_freq` per symbol
(`quantize`, vectorised over positions). The coder keeps its interval as Python integers: `[low, low + width)`
scaled by `2**-scale`, after the bits already settled. Encoding a symbol is exact rational arithmetic
(`low = low * T + width * cum`, `width *= freq`); the leading bits that `low` and `low + width - 1` share are
shifted out as soon as they are settled. Only when `width` outgrows `state_bits` is the interval rounded inward
(the same rounding on both sides), so the code length exceeds the ideal `sum(-log2 q)` by at most about 2 bits per
stream plus `2**-(state_bits - precision - 1)` bits per symbol.

A stream ends with the shortest codeword whose zero-padded value lies in the final interval (`Encoder.code`), so a
decoder that reads zeros past the end of its input decodes it exactly. That codeword is the unique shortest binary
fraction in the interval; EqualInfoAC's windows rely on this.
"""

from __future__ import annotations

import numpy as np

from hat.errors import HatError

DEFAULT_PRECISION = 14
DEFAULT_STATE_BITS = 64


class CoderError(HatError, ValueError):
    """A code stream cannot be decoded (it is corrupt or belongs to other probabilities)."""


def quantize(probs_NxV: np.ndarray, precision: int = DEFAULT_PRECISION, min_freq: int = 1) -> np.ndarray:
    """Integer frequencies (int64, N x V) with every entry >= `min_freq` and every row summing to `2**precision`.

    Deterministic: the same float inputs give the same integers, whatever the batch around a row. Each row is
    normalised by its own sum (a float32 softmax sums to 1 only approximately), floored, and the few units left over
    (or taken away) go to the row's most probable symbol.
    """
    probs_NxV = np.asarray(probs_NxV, np.float64)
    num_symbols = probs_NxV.shape[-1]
    total = 1 << precision
    spare = total - num_symbols * min_freq
    if spare < 0:
        raise ValueError(f"{num_symbols} symbols x min_freq {min_freq} exceed 2**{precision}; raise the precision")
    if not np.all(np.isfinite(probs_NxV)) or np.any(probs_NxV < 0):
        raise ValueError("probabilities must be finite and non-negative")
    row_sums_Nx1 = probs_NxV.sum(-1, keepdims=True)
    if np.any(row_sums_Nx1 <= 0):
        raise ValueError("every probability row needs a positive sum")
    freqs_NxV = np.floor(probs_NxV * (spare / row_sums_Nx1)).astype(np.int64) + min_freq
    leftover_N = total - freqs_NxV.sum(-1)
    rows = np.arange(len(freqs_NxV))
    top_N = np.argmax(probs_NxV, -1)
    freqs_NxV[rows, top_N] += leftover_N
    return freqs_NxV


def cumulative(freqs_NxV: np.ndarray) -> np.ndarray:
    """Start of each symbol's range: int64 N x (V + 1), `cum[:, s] = sum(freqs[:, :s])`, last column the total."""
    cum_NxV1 = np.zeros((freqs_NxV.shape[0], freqs_NxV.shape[1] + 1), np.int64)
    np.cumsum(freqs_NxV, axis=1, out=cum_NxV1[:, 1:])
    return cum_NxV1


def ideal_bits(freqs_NxV: np.ndarray, symbols_N: np.ndarray, precision: int = DEFAULT_PRECISION) -> float:
    """The ideal code length `sum(-log2 q)` of `symbols_N` under the quantised distributions."""
    chosen = freqs_NxV[np.arange(len(symbols_N)), symbols_N].astype(np.float64)
    return float(np.sum(precision - np.log2(chosen)))


class _Interval:
    """The coder state shared by encoder and decoder; both apply the identical integer updates."""

    def __init__(self, precision: int, state_bits: int) -> None:
        if state_bits <= precision:
            raise ValueError(f"state_bits ({state_bits}) must exceed precision ({precision})")
        self.precision, self.state_bits = precision, state_bits
        self.low, self.width, self.scale = 0, 1, 0
        self.num_settled = 0

    def _narrow(self, cum: int, freq: int) -> tuple[int, int]:
        """Narrows to the symbol's sub-interval; returns the newly settled leading bits `(value, count)`."""
        self.low = (self.low << self.precision) + self.width * cum
        self.width *= freq
        self.scale += self.precision
        excess = self.width.bit_length() - self.state_bits
        if excess > 0:
            # Round inward to a coarser grid: both ends stay inside the exact interval.
            new_low = -((-self.low) >> excess)
            self.width = ((self.low + self.width) >> excess) - new_low
            self.low, self.scale = new_low, self.scale - excess
        # Bits above the highest bit where low and the interval's last point differ are settled.
        keep = (self.low ^ (self.low + self.width - 1)).bit_length()
        settled = self.scale - keep
        if settled <= 0:
            return 0, 0
        prefix = self.low >> keep
        self.low &= (1 << keep) - 1
        self.scale = keep
        self.num_settled += settled
        return prefix, settled

    def _tail(self) -> tuple[int, int]:
        """Bits after the settled ones for the shortest codeword: none when the interval starts at the settled
        prefix, else the single bit 1 (after settling, the midpoint `2**(scale - 1)` is always inside)."""
        return (0, 0) if self.low == 0 else (1, 1)


def _strip(value: int, num_bits: int) -> tuple[int, int]:
    """Drops trailing zero bits (zero padding implies them), giving the canonical shortest form."""
    if value == 0:
        return 0, 0
    zeros = (value & -value).bit_length() - 1
    return value >> zeros, num_bits - zeros


class Encoder(_Interval):
    """Exact arithmetic encoder: `encode(cum, freq)` per symbol, then `code()` for the whole stream so far."""

    def __init__(self, precision: int = DEFAULT_PRECISION, state_bits: int = DEFAULT_STATE_BITS) -> None:
        super().__init__(precision, state_bits)
        self.settled = 0

    def encode(self, cum: int, freq: int) -> None:
        """Codes the symbol whose range is `[cum, cum + freq)` out of `2**precision`."""
        prefix, count = self._narrow(cum, freq)
        self.settled = (self.settled << count) | prefix

    def code(self) -> tuple[int, int]:
        """The shortest codeword `(value, num_bits)` (no trailing zeros) whose zero-padded value lies in the
        interval: all a decoder needs to recover the symbols coded so far."""
        tail, tail_bits = self._tail()
        return _strip((self.settled << tail_bits) | tail, self.num_settled + tail_bits)


class Decoder(_Interval):
    """Exact arithmetic decoder over a codeword `(value, num_bits)`; bits past its end read as zeros."""

    def __init__(
        self, value: int, num_bits: int, precision: int = DEFAULT_PRECISION, state_bits: int = DEFAULT_STATE_BITS
    ) -> None:
        super().__init__(precision, state_bits)
        if value < 0 or value.bit_length() > num_bits:
            raise ValueError(f"codeword value {value} does not fit {num_bits} bits")
        self.value, self.num_bits = value, num_bits

    def _read(self, start: int, count: int) -> int:
        """Stream bits [start, start + count) as an integer, zero-padded past the end."""
        end = start + count
        if end <= self.num_bits:
            return (self.value >> (self.num_bits - end)) & ((1 << count) - 1)
        available = max(self.num_bits - start, 0)
        head = self.value & ((1 << available) - 1)
        return head << (end - max(start, self.num_bits))

    def decode(self, cum_V1: np.ndarray | list[int]) -> int:
        """Decodes one symbol given the cumulative frequencies `cum_V1` (length V + 1, last entry 2**precision)."""
        offset = self._read(self.num_settled, self.scale + self.precision) - (self.low << self.precision)
        target = offset // self.width
        if not 0 <= target < (1 << self.precision):
            raise CoderError("code value left the coder interval")
        symbol = int(np.searchsorted(cum_V1, target, side="right")) - 1
        self._narrow(int(cum_V1[symbol]), int(cum_V1[symbol + 1]) - int(cum_V1[symbol]))
        return symbol

    def code(self) -> tuple[int, int]:
        """The shortest codeword of the symbols decoded so far (as `Encoder.code` gives for them)."""
        tail, tail_bits = self._tail()
        return _strip((self._read(0, self.num_settled) << tail_bits) | tail, self.num_settled + tail_bits)


def encode(symbols_N: np.ndarray, freqs_NxV: np.ndarray, precision: int = DEFAULT_PRECISION,
           state_bits: int = DEFAULT_STATE_BITS) -> tuple[int, int]:
    """Codes `symbols_N` (symbol i under distribution `freqs_NxV[i]`); returns the codeword `(value, num_bits)`."""
    cum_NxV1 = cumulative(freqs_NxV)
    n = len(symbols_N)
    cums = cum_NxV1[np.arange(n), symbols_N].tolist()
    freqs = freqs_NxV[np.arange(n), symbols_N].tolist()
    encoder = Encoder(precision, state_bits)
    for cum, freq in zip(cums, freqs):
        encoder.encode(cum, freq)
    return encoder.code()


def decode(value: int, num_bits: int, freqs_NxV: np.ndarray, precision: int = DEFAULT_PRECISION,
           state_bits: int = DEFAULT_STATE_BITS) -> np.ndarray:
    """Inverse of `encode`: the `len(freqs_NxV)` symbols of the codeword."""
    cum_NxV1 = cumulative(freqs_NxV)
    decoder = Decoder(value, num_bits, precision, state_bits)
    return np.asarray([decoder.decode(row) for row in cum_NxV1], np.int64)


def to_bytes(value: int, num_bits: int) -> bytes:
    """The codeword's bits, MSB first, zero-padded to whole bytes."""
    num_bytes = (num_bits + 7) // 8
    return (value << (8 * num_bytes - num_bits)).to_bytes(num_bytes, "big")
