"""Exact integer arithmetic coding of EqualInfoAC windows, vectorised over a batch of lanes.

Probabilities are quantised to integer frequencies that sum to `T = 2**precision` with at least `min_freq` per
symbol (`quantize`, for numpy or jax arrays). `WindowCoder` holds one coder interval per lane: `[low, low + width)`
on a fixed grid of `2**-grid` with `grid = window_bits + precision + GUARD_BITS` (numpy uint64 when the grid has at
most 63 bits, which covers b <= 33, Python integers in object arrays above). A window starts at `[0, 2**grid)`.

Coding symbol s (range `[cum, cum + freq)` of T) narrows the interval to `[low + f(cum), low + f(cum + freq))` with
`f(c) = floor(width * c / T)`. Exactness: `f` is non-decreasing with `f(0) = 0` and `f(T) = width`, so the symbols'
sub-intervals partition the interval with no gap and no overlap, and while `width >= T` each one is non-empty
(`f(c + freq) - f(c) >= floor(width * freq / T) >= 1`). A decoder holding a point of the interval therefore finds
the one symbol whose sub-interval holds it (`decode`) and applies the identical integer update: encoder and decoder
states stay equal, symbol by symbol. The truncation costs at most `log2(1 + T / (width * freq))` bits per symbol,
below 2**-GUARD_BITS / ln 2 bits while a window can still grow (see below).

A window's b-bit code points are the multiples of `2**(grid - b)` (`points`). Its codeword is the interval's point
with the most trailing zeros (`codeword`: the unique shortest binary fraction inside it); the window fits while that
point is a b-bit point, and its b-bit value is the point shifted down (`window_value`). Sub-intervals nest, so the
codeword of a longer prefix is never shorter. Once the interval holds a single b-bit point (always once it is
narrower than `2**(grid - b) = 2**(precision + GUARD_BITS)` grid units, so `width >= T` whenever a byte is coded
inside a window), no further symbol can give a different fitting codeword: the window is complete
(`equal_info` uses this to end windows without computing M1 for the byte after them).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hat.errors import HatError

DEFAULT_PRECISION = 14
# Grid bits below a window's last bit: they bound the truncation loss of every coded symbol.
GUARD_BITS = 16
# The widest grid whose integers (and `width * 2**-precision * cum`) fit numpy's uint64.
MAX_UINT64_GRID = 63


class CoderError(HatError, ValueError):
    """A code stream cannot be decoded (it is corrupt or belongs to other probabilities)."""


def quantize(probs_NxV, precision: int = DEFAULT_PRECISION, min_freq: int = 1):
    """Integer frequencies (N x V, int32 for jax input, int64 for numpy) with every entry >= `min_freq` and every
    row summing to `2**precision`; `probs_NxV` may be unnormalised (non-negative, positive row sums).

    Each row is normalised by its own sum, floored, and the few units left over go to the row's most probable
    symbol. The arithmetic is that of the input's dtype and array library; it is a deterministic function of the
    row, so inside one jitted M1 function encoder and decoder get the same integers.
    """
    xp = jnp if isinstance(probs_NxV, jax.Array) else np
    num_symbols = probs_NxV.shape[-1]
    total = 1 << precision
    spare = total - num_symbols * min_freq
    if spare < 0:
        raise ValueError(f"{num_symbols} symbols x min_freq {min_freq} exceed 2**{precision}; raise the precision")
    int_dtype = xp.int32 if xp is jnp else np.int64
    row_sums_Nx1 = probs_NxV.sum(-1, keepdims=True)
    freqs_NxV = xp.floor(probs_NxV * (spare / row_sums_Nx1)).astype(int_dtype) + min_freq
    leftover_Nx1 = total - freqs_NxV.sum(-1, keepdims=True)
    top_Nx1 = xp.argmax(probs_NxV, -1)[..., None]
    return freqs_NxV + xp.where(xp.arange(num_symbols) == top_Nx1, leftover_Nx1, 0).astype(int_dtype)


def cumulative(freqs_NxV):
    """Start of each symbol's range: N x (V + 1), `cum[:, s] = sum(freqs[:, :s])`, last column the total."""
    xp = jnp if isinstance(freqs_NxV, jax.Array) else np
    zeros_Nx1 = xp.zeros((*freqs_NxV.shape[:-1], 1), freqs_NxV.dtype)
    return xp.concatenate([zeros_Nx1, xp.cumsum(freqs_NxV, axis=-1)], axis=-1)


def ideal_bits(freqs_NxV: np.ndarray, symbols_N: np.ndarray, precision: int = DEFAULT_PRECISION) -> float:
    """The ideal code length `sum(-log2 q)` of `symbols_N` under the quantised distributions."""
    chosen = freqs_NxV[np.arange(len(symbols_N)), symbols_N].astype(np.float64)
    return float(np.sum(precision - np.log2(chosen)))


def grid_bits(window_bits: int, precision: int = DEFAULT_PRECISION) -> int:
    """Bits of the coder's grid for b-bit windows."""
    return window_bits + precision + GUARD_BITS


class WindowCoder:
    """One window coder interval per lane (`low_B`, `width_B`), all updated together; see the module docstring."""

    def __init__(self, num_lanes: int, window_bits: int, precision: int = DEFAULT_PRECISION) -> None:
        self.window_bits, self.precision = window_bits, precision
        self.grid = grid_bits(window_bits, precision)
        self.shift = self.grid - window_bits  # a b-bit point is a multiple of 2**shift
        self.dtype = np.uint64 if self.grid <= MAX_UINT64_GRID else object
        self.low_B = np.zeros(num_lanes, self.dtype)
        self.width_B = np.full(num_lanes, 1 << self.grid, self.dtype)

    def _as_ints(self, values) -> np.ndarray:
        values = np.asarray(values)
        return values.astype(np.uint64) if self.dtype is np.uint64 else values.astype(np.int64).astype(object)

    def reset(self, lanes: np.ndarray) -> None:
        """Starts a fresh window in `lanes` (indices or a boolean mask)."""
        self.low_B[lanes] = 0
        self.width_B[lanes] = 1 << self.grid

    def _scaled(self, width, cum):
        """`floor(width * cum / T)` without overflow: `width = a * T + r` gives `a * cum + floor(r * cum / T)`."""
        mask = (1 << self.precision) - 1
        return (width >> self.precision) * cum + (((width & mask) * cum) >> self.precision)

    def narrow(self, lanes: np.ndarray, cum_L: np.ndarray, freq_L: np.ndarray) -> None:
        """Codes in each of `lanes` the symbol with range `[cum, cum + freq)`."""
        cum_L, freq_L = self._as_ints(cum_L), self._as_ints(freq_L)
        width_L = self.width_B[lanes]
        start_L = self._scaled(width_L, cum_L)
        self.low_B[lanes] = self.low_B[lanes] + start_L
        self.width_B[lanes] = self._scaled(width_L, cum_L + freq_L) - start_L

    def points_of(self, windows: np.ndarray) -> np.ndarray:
        """Grid points of b-bit window values."""
        if self.dtype is np.uint64:
            return np.asarray(windows, np.uint64) << np.uint64(self.shift)
        return np.asarray([int(w) << self.shift for w in windows], object)

    def decode(self, lanes: np.ndarray, cum_LxV1: np.ndarray, point_L: np.ndarray) -> np.ndarray:
        """The symbol of each lane whose sub-interval holds the lane's window point (`points_of`), coded as
        `narrow` does."""
        low_L, width_L = self.low_B[lanes], self.width_B[lanes]
        if np.any(point_L < low_L) or np.any(point_L - low_L >= width_L):
            raise CoderError("code value left the coder interval")
        ends_LxV = self._scaled(width_L[:, None], self._as_ints(cum_LxV1[:, 1:]))
        symbols_L = np.sum(ends_LxV <= (point_L - low_L)[:, None], axis=1)
        rows = np.arange(len(symbols_L))
        self.narrow(lanes, cum_LxV1[rows, symbols_L], cum_LxV1[rows, symbols_L + 1] - cum_LxV1[rows, symbols_L])
        return symbols_L

    def points(self, lanes: np.ndarray) -> np.ndarray:
        """How many b-bit points each lane's interval holds (0: the window no longer fits)."""
        low_L, last_L = self.low_B[lanes], self.low_B[lanes] + self.width_B[lanes] - 1
        step = 1 << self.shift
        return (last_L >> self.shift) + 1 - ((low_L + (step - 1)) >> self.shift)

    def codeword(self, lanes: np.ndarray) -> np.ndarray:
        """Each lane's point with the most trailing zeros (grid units): the highest bit where `low - 1` and the
        interval's last point differ is the lowest bit the shortest codeword needs. A lane with `low == 0` gets 0."""
        low_L = self.low_B[lanes]
        last_L = low_L + self.width_B[lanes] - 1
        starts_at_zero = low_L == 0
        smear_L = (low_L - self._as_ints(~starts_at_zero)) ^ last_L
        shift = 1
        while shift < self.grid:
            smear_L = smear_L | (smear_L >> shift)
            shift *= 2
        # smear = 2**(t + 1) - 1 for the highest differing bit t; clear the bits below t.
        point_L = last_L & ~(smear_L >> 1)
        return np.where(starts_at_zero, self._as_ints(np.zeros(len(low_L))), point_L)

    def window_value(self, point_L: np.ndarray) -> np.ndarray:
        """b-bit window values of fitting codewords (grid units)."""
        return point_L >> self.shift
