"""EqualInfoAC[b, v] (Lester et al. 2024): text -> windows that each arithmetic-code to exactly b bits -> tokens.

A window starts with a fresh coder interval and a fresh M1 context (`[EOT] + the window's bytes`). Bytes are added
greedily while the window's shortest codeword (`arithmetic.WindowCoder.codeword`) still fits b bits; the codeword
is zero-padded to b bits and cut MSB first into tokens of `token_bits` bits (v = 2**token_bits).

Every window decodes on its own and unambiguously, with no end symbol and no per-window length. Decoding reads the
zero-padded window and yields bytes y_0, y_1, ...; the window holds the first n of them where n is the smallest
m >= 1 whose prefix y_<m has the window's codeword. The codewords of growing prefixes form runs of equal values
(a byte whose sub-interval still contains the codeword "codes to all-zero bits" and leaves it unchanged; a run
never comes back, since each codeword is the unique shortest fraction of nested intervals), so the encoder ends a
window only at the first byte of a run: it takes the longest prefix that fits b bits and whose last byte changed
the codeword. The bytes it leaves out start the next window. A single byte always fits (its quantised probability
is at least 2**-precision and the first symbol's interval starts on a multiple of that, so it codes in at most
`precision` <= b bits), so every input, any bytes at all, round-trips.

Speed: text is cut into independent segments (chains of windows), and M1 runs as a KV-cached byte LM over
`batch_size` lanes at once (`M1.step`: one byte per lane per call, `hat.models.decoding.flat_decode`); each lane
codes its segments' windows one after another with a vectorised exact coder (`arithmetic.WindowCoder`). Position 0
of every window is EOT with a fresh context, so M1's output there is a constant (`M1.first_freqs_V`, and the keys
and values every lane's cache keeps in slot 0): each window's first byte is coded without an M1 step, the steps run
at positions 1 and on. The decoder computes each of a window's positions but the first once; the encoder also
computes the byte after a window when it needs it to see that the window is full (not when the interval already
holds a single b-bit point). On CPU M1's step is almost all of the time (the coder and the lane bookkeeping are a
few percent), so there is nothing to gain from moving the coder onto the device.

Determinism: encoder and decoder must quantise bit-identical M1 outputs. The window start is one computation of
fixed shape (one lane), made when M1 is loaded. Every later position runs the same jitted step on the same
`[batch_size]` shape, and segment `i` always runs in lane `i % batch_size`, so a window's byte at position p is
computed by the same code on the same inputs (slot 0's constant and the window's positions 1 .. p - 1 in that lane's
cache; entries the window has not reached are masked to exact zeros), whatever the other lanes hold and whenever it
runs. The batch size is therefore part of a stream's format, and so is the kind of device (float results differ
between platforms).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hat.checkpoint import CheckpointError, load_model
from hat.compress.arithmetic import DEFAULT_PRECISION, WindowCoder, cumulative, quantize
from hat.config import BYTE_VOCAB_SIZE, EOT_BYTE, to_dict
from hat.errors import HatError
from hat.models import FlatLM
from hat.models.decoding import FlatState, flat_decode
from hat.models.ngrams import PAD_UNIT, history_length


class CorruptStreamError(HatError, ValueError):
    """A token stream does not decode (corrupt, truncated, or made with another M1); the message names the window."""


class WindowSpecError(HatError, ValueError):
    """A window spec cannot be used (`--window-bits`, `data.eqinfo.*`); the message names the field and the bound."""


class ComputationShapeError(HatError, ValueError):
    """M1's computation shape or device differs from the one a stream was made with (its floats would differ)."""


@dataclass(frozen=True)
class WindowSpec:
    """EqualInfoAC[window_bits, 2**token_bits] with M1's fixed window of `max_window_bytes` bytes."""

    window_bits: int = 16
    token_bits: int = 8
    max_window_bytes: int = 32
    precision: int = DEFAULT_PRECISION

    def __post_init__(self) -> None:
        if self.token_bits not in (8, 16):
            raise WindowSpecError(f"token_bits must be 8 or 16 (v = 256 or 65536), got {self.token_bits}")
        if self.window_bits % self.token_bits:
            raise WindowSpecError(
                f"window_bits ({self.window_bits}) must be a multiple of token_bits ({self.token_bits})"
            )
        if self.window_bits < self.precision:
            # Below this a single improbable byte might not fit any window.
            raise WindowSpecError(f"window_bits ({self.window_bits}) must be at least the precision ({self.precision})")
        if self.max_window_bytes < 1:
            raise WindowSpecError("max_window_bytes must be positive")

    @property
    def tokens_per_window(self) -> int:
        return self.window_bits // self.token_bits


# The version of the window code (coder and M1 computation): token stores made by another version are not reused.
# 3: the window start computed once, a decoding step's cache written before it is read.
WINDOW_CODE_VERSION = 3


def device_name() -> str:
    """The platform and kind of the device M1 runs on (jax's default device), e.g. `cpu/cpu`."""
    device = jax.devices()[0]
    return f"{device.platform}/{device.device_kind}"


class M1:
    """A byte LM prepared for compression: a KV-cached step over `batch_size` lanes, each reading one window.

    Position 0 of every window holds EOT and a fresh context, so what M1 computes there is one constant: it is
    computed once (`first_freqs_V`, and the keys and values that every lane's cache keeps in slot 0 for good), and
    the steps run only at positions 1 and on. `step(positions_B, inputs_B)` feeds each lane its window's byte at
    `positions_B >= 1` (a lane at position 1 starts a new window) and returns the quantised next-byte
    distributions, int32 `[batch_size, 256]`, each row summing to `2**precision`. `identity` is a hash of the
    model config and parameters; `checkpoint` the path it was loaded from (`from_checkpoint`; None otherwise), which
    lets worker processes load the same M1 (`hat.compress.workers`).
    """

    def __init__(
        self,
        model: nnx.Module,
        model_config: dict,
        batch_size: int,
        max_window_bytes: int,
        precision: int = DEFAULT_PRECISION,
        checkpoint: str | None = None,
    ) -> None:
        if not isinstance(model, FlatLM):
            raise CheckpointError(f"M1 must be a flat byte LM, got {type(model).__name__}")
        self.batch_size, self.max_window_bytes, self.precision = batch_size, max_window_bytes, precision
        self.device = device_name()
        self.checkpoint = checkpoint
        graphdef, params = nnx.split(model, nnx.Param)
        self.identity = model_identity(model_config, params)
        # Plain arrays: flattening nnx variables on every call costs more than a small step's compute.
        self._param_leaves, param_tree = jax.tree.flatten(params)
        sizes = model.ngram_embedding.sizes if model.ngram_embedding is not None else ()

        def quantised(logits_BxV: jax.Array) -> jax.Array:
            return quantize(jnp.exp(logits_BxV - jnp.max(logits_BxV, axis=-1, keepdims=True)), precision)

        def window_start(param_leaves: list[jax.Array]) -> tuple[FlatState, jax.Array]:
            # One lane, whatever the batch size: the constant is one computation for every stream format.
            # A window's positions 0 .. max_window_bytes - 1 (EOT, then its bytes but the last) each get a slot.
            model = nnx.merge(graphdef, jax.tree.unflatten(param_tree, param_leaves))
            caches = tuple(layer.init_cache(1, max_window_bytes) for layer in model.backbone.layers)
            # Hashed n-gram embeddings (if M1 has them) read the window's latest bytes; a window starts with none.
            fresh_history_1xH = jnp.full((1, history_length(sizes)), PAD_UNIT, jnp.int32)
            state = FlatState(caches, jnp.zeros(1, jnp.int32), fresh_history_1xH)
            state, logits_1xV = flat_decode(model, state, jnp.full(1, EOT_BYTE, jnp.int32))
            return state, quantised(logits_1xV)[0]

        start, first_freqs_V = jax.jit(window_start)(self._param_leaves)
        self.first_freqs_V = np.asarray(first_freqs_V).astype(np.int64)
        self._check(self.first_freqs_V[None])
        # Every lane's slot 0 holds the window start; positions 1 .. max_window_bytes - 1 overwrite their own slots
        # before they are read, and the ones a window has not reached yet are hidden (`attend_cached`). Separate
        # buffers per lane and per array: the state is donated.
        self._state = jax.tree.map(lambda x: jnp.array(jnp.repeat(x, batch_size, axis=0)), start)
        after_eot_1xH = start.history_BxH

        def step(param_leaves: list[jax.Array], state: FlatState, positions_B: jax.Array, inputs_B: jax.Array):
            # A lane at position 1 starts a window: the history after EOT; its cache needs nothing reset.
            history_BxH = jnp.where((positions_B == 1)[:, None], after_eot_1xH, state.history_BxH)
            state = FlatState(state.layers, positions_B, history_BxH)
            model = nnx.merge(graphdef, jax.tree.unflatten(param_tree, param_leaves))
            state, logits_BxV = flat_decode(model, state, inputs_B)
            return state, quantised(logits_BxV)

        self._step = jax.jit(step, donate_argnums=1)

    @classmethod
    def from_checkpoint(
        cls, path: str, batch_size: int, max_window_bytes: int, precision: int = DEFAULT_PRECISION
    ) -> M1:
        """Loads a flat byte LM (`model.kind: byte_lm`) trained by train.py."""
        # The cache steps one layer at a time: a scanned (stacked) backbone is unstacked.
        loaded = load_model(path, scan_layers=False)
        # M1 reads windows as a flat causal LM over the 256 byte values.
        if not isinstance(loaded.model, FlatLM) or loaded.config.model.vocab_size != BYTE_VOCAB_SIZE:
            raise CheckpointError(
                f"data.eqinfo.m1_checkpoint {path} is a {loaded.config.model.kind} model; M1 must be a byte_lm over "
                f"{BYTE_VOCAB_SIZE} bytes (train one with configs/m1_tiny.yaml)"
            )
        return cls(loaded.model, to_dict(loaded.config.model), batch_size, max_window_bytes, precision, str(path))

    def _check(self, freqs_BxV: np.ndarray) -> None:
        if np.any(freqs_BxV.sum(axis=1) != 1 << self.precision) or freqs_BxV.min() < 1:
            raise FloatingPointError("M1's probabilities are not finite (a damaged checkpoint?)")

    def step(self, positions_B: np.ndarray, inputs_B: np.ndarray) -> np.ndarray:
        """One byte per lane at its window position (>= 1); int32 `[batch_size, 256]` quantised frequencies of
        each lane's next byte."""
        if positions_B.min() < 1 or positions_B.max() >= self.max_window_bytes:
            # Slot 0 holds the window start for good (see the class docstring).
            raise ValueError(f"M1 steps run at window positions 1 .. {self.max_window_bytes - 1}")
        self._state, freqs_BxV = self._step(
            self._param_leaves, self._state, positions_B.astype(np.int32), inputs_B.astype(np.int32)
        )
        freqs_BxV = np.asarray(freqs_BxV)
        self._check(freqs_BxV)
        return freqs_BxV

    def freqs(self, rows: Sequence[bytes]) -> np.ndarray:
        """Quantised frequencies `[len(rows), max_window_bytes, 256]` (int64) of each row's positions read as one
        window in lane `i % batch_size` (positions past a row's end see zero bytes)."""
        out = np.zeros((len(rows), self.max_window_bytes, BYTE_VOCAB_SIZE), np.int64)
        out[:, 0] = self.first_freqs_V
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            inputs_BxW = np.zeros((self.batch_size, self.max_window_bytes), np.int32)
            for i, row in enumerate(chunk):
                body = np.frombuffer(bytes(row[: self.max_window_bytes - 1]), np.uint8)
                inputs_BxW[i, 1 : 1 + len(body)] = body
            for position in range(1, self.max_window_bytes):
                freqs_BxV = self.step(np.full(self.batch_size, position), inputs_BxW[:, position])
                out[start : start + len(chunk), position] = freqs_BxV[: len(chunk)]
        return out


def model_identity(model_config: dict, params: nnx.State) -> str:
    """sha256 (hex, 16 chars) of a model's config and the bytes of its parameters, in a fixed order."""
    digest = hashlib.sha256(json.dumps(model_config, sort_keys=True).encode())
    for path, leaf in sorted(
        ((tuple(str(k) for k in p), v) for p, v in nnx.to_flat_state(params)), key=lambda item: item[0]
    ):
        array = np.asarray(leaf[...])
        digest.update("/".join(path).encode() + str(array.dtype).encode() + str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def check_m1(m1: M1, spec: WindowSpec) -> None:
    """Refuses an M1 whose window or precision differs from the spec's."""
    if m1.max_window_bytes != spec.max_window_bytes or m1.precision != spec.precision:
        raise ComputationShapeError(
            f"M1 was loaded for {m1.max_window_bytes}-byte windows at precision {m1.precision}; the spec needs "
            f"{spec.max_window_bytes} and {spec.precision}"
        )


class _Lanes:
    """Which segment each lane codes and its part of the segments' concatenation (bytes when encoding, windows when
    decoding): `segment_B` (-1: the lane is idle), `cursor_B` and `stop_B`. Segment `ids[k]` goes to lane
    `ids[k] % num_lanes`, each lane takes its segments in order, and segments of size 0 are skipped."""

    def __init__(self, ids_N: np.ndarray, sizes_N: np.ndarray, num_lanes: int) -> None:
        keep = np.flatnonzero(sizes_N > 0)
        lanes = ids_N[keep] % num_lanes
        self._queue = keep[np.lexsort((keep, lanes))]
        counts = np.bincount(lanes, minlength=num_lanes)
        self._next = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self._stop = self._next + counts
        self._first_N = np.concatenate([[0], np.cumsum(sizes_N)[:-1]]).astype(np.int64)
        self._sizes_N = sizes_N
        self.segment_B = np.full(num_lanes, -1, np.int64)
        self.cursor_B = np.zeros(num_lanes, np.int64)
        self.stop_B = np.zeros(num_lanes, np.int64)
        self._take_next(np.arange(num_lanes))

    def advance(self, lanes: np.ndarray, by: np.ndarray | int) -> None:
        """Moves the cursors of `lanes` on by `by`; a lane whose segment is used up takes its next one."""
        self.cursor_B[lanes] += by
        self._take_next(lanes[self.cursor_B[lanes] == self.stop_B[lanes]])

    def _take_next(self, lanes: np.ndarray) -> None:
        has = self._next[lanes] < self._stop[lanes]
        self.segment_B[lanes] = -1
        self.segment_B[lanes[has]] = self._queue[self._next[lanes[has]]]
        self._next[lanes[has]] += 1
        busy = lanes[has]
        self.cursor_B[busy] = self._first_N[self.segment_B[busy]]
        self.stop_B[busy] = self.cursor_B[busy] + self._sizes_N[self.segment_B[busy]]


@dataclass(frozen=True)
class Windows:
    """The windows of a run of segments: `values` (b-bit window values, uint64, or Python ints above 64 bits),
    `lengths` (bytes per window) and `counts` (windows per segment), segment after segment."""

    values: np.ndarray
    lengths: np.ndarray
    counts: np.ndarray

    def of_segment(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """`(values, lengths)` of one segment's windows."""
        start = int(self.counts[:index].sum())
        stop = start + int(self.counts[index])
        return self.values[start:stop], self.lengths[start:stop]


def _window_dtype(spec: WindowSpec):
    return np.uint64 if spec.window_bits <= 64 else object


def _run_lanes(
    m1: M1,
    segment_B: np.ndarray,
    position_B: np.ndarray,
    inputs_B: Callable[[], np.ndarray],
    code: Callable[[np.ndarray, np.ndarray], None],
) -> None:
    """Drives every lane through its windows until no lane has a segment (`code(lanes, freqs_LxV)` codes or
    decodes those lanes' bytes at their positions and advances `segment_B` / `position_B` in place). A window's
    first byte is coded with the window start's distribution, without an M1 step, and such a window may end at once
    and the next one start; every later byte takes one M1 step over all lanes, fed `inputs_B()` (each active lane's
    byte before its position; idle lanes compute a throwaway one)."""
    while True:
        while len(starting := np.flatnonzero((segment_B >= 0) & (position_B == 0))):
            code(starting, np.broadcast_to(m1.first_freqs_V, (len(starting), BYTE_VOCAB_SIZE)))
        active = np.flatnonzero(segment_B >= 0)
        if not len(active):
            return
        freqs_BxV = m1.step(np.maximum(position_B, 1), inputs_B())
        code(active, freqs_BxV[active])


def encode_segments(
    m1: M1,
    segments: Sequence[bytes],
    spec: WindowSpec,
    progress: Callable[[int], None] | None = None,
    segment_ids: Sequence[int] | None = None,
) -> Windows:
    """The windows of each segment (a window never crosses a segment boundary). Segment `segment_ids[k]` (by
    default k) runs in lane `segment_ids[k] % m1.batch_size`. `progress(bytes)` is called as bytes are coded."""
    check_m1(m1, spec)
    dtype = _window_dtype(spec)
    if not any(segments):
        empty = np.zeros(0, np.int64)
        return Windows(np.zeros(0, dtype), empty, np.zeros(len(segments), np.int64))
    sizes = np.asarray([len(s) for s in segments], np.int64)
    text = np.frombuffer(b"".join(segments), np.uint8)
    ids_N = np.arange(len(segments)) if segment_ids is None else np.asarray(segment_ids, np.int64)
    # Each lane's cursor is the text offset where its current window starts.
    lanes = _Lanes(ids_N, sizes, m1.batch_size)
    start_B, segment_B = lanes.cursor_B, lanes.segment_B
    coder = WindowCoder(m1.batch_size, spec.window_bits, spec.precision)
    position_B = np.zeros(m1.batch_size, np.int64)
    best_length_B = np.zeros(m1.batch_size, np.int64)
    best_value_B = np.zeros(m1.batch_size, dtype)
    previous_B = np.zeros(m1.batch_size, coder.dtype)
    emitted: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (segment, value, length) per step
    padded = np.concatenate([text, np.zeros(1, np.uint8)])

    def code(active: np.ndarray, freqs_LxV: np.ndarray) -> None:
        """Codes each active lane's byte at its position; ends the windows that are complete."""
        here_L = start_B[active] + position_B[active]
        symbols_L = padded[here_L].astype(np.int64)
        rows_L = np.arange(len(active))
        freq_L = freqs_LxV[rows_L, symbols_L]
        coder.narrow(active, cumulative(freqs_LxV)[rows_L, symbols_L], freq_L)
        points = coder.points(active)
        fits = points > 0
        point = coder.codeword(active)
        position = position_B[active]
        changed = fits & ((position == 0) | (point != previous_B[active]))
        best_length_B[active[changed]] = position[changed] + 1
        best_value_B[active[changed]] = coder.window_value(point[changed]).astype(dtype)
        previous_B[active] = point
        # A single b-bit point left: no later byte can give another fitting codeword (arithmetic module docstring).
        done = (~fits) | (points == 1) | (position + 1 == spec.max_window_bytes) | (here_L + 1 == lanes.stop_B[active])
        ended = active[done]
        emitted.append((segment_B[ended].copy(), best_value_B[ended].copy(), best_length_B[ended].copy()))
        position_B[active[~done]] += 1
        position_B[ended] = 0
        coder.reset(ended)
        lanes.advance(ended, best_length_B[ended])
        if progress is not None and len(ended):
            progress(int(best_length_B[ended].sum()))

    _run_lanes(m1, segment_B, position_B, lambda: padded[np.maximum(start_B + position_B - 1, 0)], code)
    segment_ids = np.concatenate([e[0] for e in emitted])
    # Each lane emits a segment's windows in order, so a stable sort by segment keeps them in order.
    order = np.argsort(segment_ids, kind="stable")
    values = np.concatenate([e[1] for e in emitted])[order]
    lengths = np.concatenate([e[2] for e in emitted])[order]
    return Windows(values, lengths, np.bincount(segment_ids, minlength=len(segments)).astype(np.int64))


def decode_segments(
    m1: M1,
    windows: np.ndarray | Sequence[int],
    counts: Sequence[int],
    spec: WindowSpec,
    segment_ids: Sequence[int] | None = None,
    first_window: int = 0,
    progress: Callable[[int], None] | None = None,
) -> list[bytes]:
    """The bytes of each window. `windows` are the windows of segments with `counts[k]` windows each (their ids
    `segment_ids`, by default 0, 1, ...: segment `i` decodes in lane `i % m1.batch_size`, as it was encoded).

    Raises `CorruptStreamError` naming the window (counted from `first_window`) that matches no byte prefix.
    """
    check_m1(m1, spec)
    dtype = _window_dtype(spec)
    windows = np.asarray(windows, dtype) if len(windows) else np.zeros(0, dtype)
    counts_N = np.asarray(counts, np.int64)
    if counts_N.sum() != len(windows):
        raise ValueError(f"{len(windows)} windows for segments of {counts_N.sum()} windows")
    if not len(windows):
        return []
    ids_N = np.arange(len(counts_N)) if segment_ids is None else np.asarray(segment_ids, np.int64)
    # Each lane's cursor is the (global) index of the window it decodes.
    lanes = _Lanes(ids_N, counts_N, m1.batch_size)
    window_B = lanes.cursor_B
    coder = WindowCoder(m1.batch_size, spec.window_bits, spec.precision)
    position_B = np.zeros(m1.batch_size, np.int64)
    previous_byte_B = np.zeros(m1.batch_size, np.int64)
    decoded: list[tuple[np.ndarray, np.ndarray]] = []  # (window, byte) per step
    points_all = coder.points_of(windows)

    def decode(active: np.ndarray, freqs_LxV: np.ndarray) -> None:
        """Decodes each active lane's byte at its position; ends the windows whose codeword is reached."""
        points = points_all[window_B[active]]
        symbols = coder.decode(active, cumulative(freqs_LxV), points)
        decoded.append((window_B[active].copy(), symbols.astype(np.uint8)))
        previous_byte_B[active] = symbols
        done = coder.codeword(active) == points
        position = position_B[active]
        corrupt = (~done) & (position + 1 == spec.max_window_bytes)
        if np.any(corrupt):
            bad = int(window_B[active[corrupt]].min())
            raise CorruptStreamError(
                f"window {first_window + bad} is corrupt: it decodes to more than {spec.max_window_bytes} bytes "
                f"(max_window_bytes)"
            )
        ended = active[done]
        position_B[active[~done]] += 1
        position_B[ended] = 0
        coder.reset(ended)
        lanes.advance(ended, 1)
        if progress is not None:
            progress(len(active))

    _run_lanes(m1, lanes.segment_B, position_B, lambda: previous_byte_B, decode)
    window_ids = np.concatenate([d[0] for d in decoded])
    order = np.argsort(window_ids, kind="stable")
    data = np.concatenate([d[1] for d in decoded])[order].tobytes()
    bounds = np.concatenate([[0], np.cumsum(np.bincount(window_ids, minlength=len(windows)))])
    return [data[bounds[i] : bounds[i + 1]] for i in range(len(windows))]


def split_segments(data: bytes, segment_bytes: int) -> list[bytes]:
    """Cuts `data` into independent segments of `segment_bytes` (the last one shorter)."""
    return [data[i : i + segment_bytes] for i in range(0, len(data), segment_bytes)]


def windows_to_bytes(windows: np.ndarray | Sequence[int], window_bits: int) -> bytes:
    """The windows' bits, MSB first: `window_bits / 8` big-endian bytes each."""
    size = window_bits // 8
    if window_bits > 64:
        return b"".join(int(window).to_bytes(size, "big") for window in windows)
    values = np.asarray(windows, np.uint64).reshape(-1)
    return values.astype(">u8").view(np.uint8).reshape(-1, 8)[:, 8 - size :].tobytes()


def bytes_to_windows(data: bytes, window_bits: int) -> np.ndarray:
    """Inverse of `windows_to_bytes`: window values as `Windows.values` holds them."""
    size = window_bits // 8
    if window_bits > 64:
        return np.asarray([int.from_bytes(data[i : i + size], "big") for i in range(0, len(data), size)], object)
    padded = np.zeros((len(data) // size, 8), np.uint8)
    padded[:, 8 - size :] = np.frombuffer(data, np.uint8).reshape(-1, size)
    return padded.view(">u8").reshape(-1).astype(np.uint64)


def windows_to_tokens(windows: np.ndarray | Sequence[int], spec: WindowSpec) -> np.ndarray:
    """Cuts each window MSB first into `tokens_per_window` tokens (uint16 or uint8 array, windows x tokens flat)."""
    data = windows_to_bytes(windows, spec.window_bits)
    if spec.token_bits == 8:
        return np.frombuffer(data, np.uint8).copy()
    return np.frombuffer(data, ">u2").astype(np.uint16)


def tokens_to_windows(tokens: np.ndarray, spec: WindowSpec) -> np.ndarray:
    """Inverse of `windows_to_tokens`; a partial trailing window is an error."""
    tokens = np.asarray(tokens)
    per = spec.tokens_per_window
    if len(tokens) % per:
        raise CorruptStreamError(
            f"token stream is truncated: {len(tokens)} tokens is not a whole number of {per}-token windows "
            f"(window {len(tokens) // per} is incomplete)"
        )
    if np.any(tokens >= (1 << spec.token_bits)) or np.any(tokens < 0):
        raise CorruptStreamError(f"token ids must be below {1 << spec.token_bits}")
    return bytes_to_windows(tokens.astype(np.uint8 if spec.token_bits == 8 else ">u2").tobytes(), spec.window_bits)
