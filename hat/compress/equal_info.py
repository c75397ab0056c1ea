"""EqualInfoAC[b, v] (Lester et al. 2024): text -> windows that each arithmetic-code to exactly b bits -> tokens.

A window starts with a fresh coder interval and a fresh M1 context (`[EOT] + the window's bytes`). Bytes are added
greedily while the window's shortest codeword (`arithmetic.Encoder.code`) still fits b bits; the codeword is
zero-padded to b bits and cut MSB first into tokens of `token_bits` bits (v = 2**token_bits).

Every window decodes on its own and unambiguously, with no end symbol and no per-window length. Decoding reads the
zero-padded window and yields bytes y_0, y_1, ...; the window holds the first n of them where n is the smallest
m >= 1 whose prefix y_<m has the window's codeword. The codewords of growing prefixes form runs of equal values
(a byte whose sub-interval still contains the codeword "codes to all-zero bits" and leaves it unchanged), so the
encoder ends a window only at the first byte of a run: it takes the longest prefix that fits b bits and whose last
byte changed the codeword. The bytes it leaves out start the next window. A single byte always fits (its
quantised probability is at least 2**-precision and the first symbol's interval starts on a multiple of that, so it
codes in at most `precision` <= b bits), so every input, any bytes at all, round-trips.

A window holds at most `max_window_bytes` bytes: M1 always runs on `[batch_size, max_window_bytes]` inputs, so the
encoder (which sees the whole window) and the decoder (which sees a growing prefix, zero-padded) run the same
compiled computation, and causal masking makes each row's probabilities independent of its padding and of the
other rows. Both quantise the same float32 probabilities with `arithmetic.quantize`.
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
from hat.compress.arithmetic import DEFAULT_PRECISION, Decoder, Encoder, quantize
from hat.config import BYTE_VOCAB_SIZE, EOT_BYTE, to_dict
from hat.errors import HatError
from hat.models import FlatLM


class CorruptStreamError(HatError, ValueError):
    """A token stream does not decode (corrupt, truncated, or made with another M1); the message names the window."""


class WindowSpecError(HatError, ValueError):
    """A window spec cannot be used (`--window-bits`, `data.eqinfo.*`); the message names the field and the bound."""


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


class M1:
    """A byte LM prepared for compression: probabilities of every window position from one fixed-shape call.

    `probs(rows)` lays each row out as `[EOT] + row[:-1]`, padded with zeros to `max_window_bytes`, runs the model
    on `[batch_size, max_window_bytes]` blocks, and returns float32 next-byte probabilities (position j is the
    distribution of `row[j]`). `identity` is a hash of the model config and parameters.
    """

    def __init__(self, model: nnx.Module, model_config: dict, batch_size: int, max_window_bytes: int) -> None:
        self.batch_size, self.max_window_bytes = batch_size, max_window_bytes
        graphdef, self.params = nnx.split(model, nnx.Param)
        self.identity = model_identity(model_config, self.params)

        @jax.jit
        def probs_fn(params: nnx.State, inputs_BxW: jax.Array) -> jax.Array:
            logits_BxWxV = nnx.merge(graphdef, params)(inputs_BxW)
            return jax.nn.softmax(logits_BxWxV.astype(jnp.float32), axis=-1)

        self._probs_fn = probs_fn

    @classmethod
    def from_checkpoint(cls, path: str, batch_size: int, max_window_bytes: int) -> M1:
        """Loads a flat byte LM (`model.kind: byte_lm`) trained by train.py."""
        loaded = load_model(path)
        # M1 reads windows as a flat causal LM over the 256 byte values.
        if not isinstance(loaded.model, FlatLM) or loaded.config.model.vocab_size != BYTE_VOCAB_SIZE:
            raise CheckpointError(
                f"data.eqinfo.m1_checkpoint {path} is a {loaded.config.model.kind} model; M1 must be a byte_lm over "
                f"{BYTE_VOCAB_SIZE} bytes (train one with configs/m1_tiny.yaml)"
            )
        return cls(loaded.model, to_dict(loaded.config.model), batch_size, max_window_bytes)

    def layout(self, rows: Sequence[bytes]) -> np.ndarray:
        """int32 inputs `[batch_size, max_window_bytes]`: `[EOT] + row` per row, zero-padded (rows and positions)."""
        inputs_BxW = np.zeros((self.batch_size, self.max_window_bytes), np.int32)
        inputs_BxW[: len(rows), 0] = EOT_BYTE
        for i, row in enumerate(rows):
            body = np.frombuffer(bytes(row[: self.max_window_bytes - 1]), np.uint8)
            inputs_BxW[i, 1 : 1 + len(body)] = body
        return inputs_BxW

    def probs(self, rows: Sequence[bytes]) -> np.ndarray:
        """float32 `[len(rows), max_window_bytes, 256]` next-byte probabilities of each row's positions."""
        out = []
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            out.append(np.asarray(self._probs_fn(self.params, self.layout(chunk)))[: len(chunk)])
        if not out:
            return np.zeros((0, self.max_window_bytes, BYTE_VOCAB_SIZE), np.float32)
        return np.concatenate(out)


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


def fit_window(row: bytes, freqs_WxV: np.ndarray, spec: WindowSpec) -> tuple[int, int]:
    """The window that starts at `row`: `(number of bytes, window bits as a window_bits-bit integer)`.

    Takes the longest prefix whose codeword fits `window_bits` and whose last byte changed the codeword (see the
    module docstring); `freqs_WxV` are the quantised distributions of the row's positions.
    """
    symbols = np.frombuffer(bytes(row[: spec.max_window_bytes]), np.uint8).astype(np.int64)
    positions = np.arange(len(symbols))
    chosen = freqs_WxV[positions, symbols]
    below = np.cumsum(freqs_WxV[: len(symbols)], axis=1)[positions, symbols] - chosen
    encoder = Encoder(spec.precision)
    best: tuple[int, tuple[int, int]] | None = None
    previous = (0, 0)
    for m, (cum, freq) in enumerate(zip(below.tolist(), chosen.tolist())):
        encoder.encode(cum, freq)
        code = encoder.code()
        if code[1] > spec.window_bits:
            break  # codewords of longer prefixes are never shorter
        if m == 0 or code != previous:
            best = (m + 1, code)
        previous = code
    if best is None:
        raise AssertionError("a single byte always fits a window of at least `precision` bits")
    num_bytes, (value, num_bits) = best
    return num_bytes, value << (spec.window_bits - num_bits)


def encode_segments(
    m1: M1, segments: Sequence[bytes], spec: WindowSpec, progress: Callable[[int], None] | None = None
) -> list[tuple[list[int], list[int]]]:
    """Windows of each segment: `(window bit strings as ints, bytes per window)` per segment.

    Segments are independent chains of windows (a window never crosses a segment boundary), so up to
    `m1.batch_size` of them advance together, one window per M1 call. `progress(bytes)` is called as bytes are coded.
    """
    if m1.max_window_bytes != spec.max_window_bytes:
        raise ValueError("M1's window and the spec's max_window_bytes differ")
    cursors = [0] * len(segments)
    results: list[tuple[list[int], list[int]]] = [([], []) for _ in segments]
    active = [i for i, segment in enumerate(segments) if segment]
    while active:
        batch = active[: m1.batch_size]
        rows = [segments[i][cursors[i] : cursors[i] + spec.max_window_bytes] for i in batch]
        probs_BxWxV = m1.probs(rows)
        freqs_BxWxV = quantize(probs_BxWxV.reshape(-1, BYTE_VOCAB_SIZE), spec.precision).reshape(probs_BxWxV.shape)
        coded = 0
        for k, i in enumerate(batch):
            num_bytes, window = fit_window(rows[k], freqs_BxWxV[k], spec)
            results[i][0].append(window)
            results[i][1].append(num_bytes)
            cursors[i] += num_bytes
            coded += num_bytes
        if progress is not None:
            progress(coded)
        active = [i for i in active if cursors[i] < len(segments[i])]
    return results


def split_segments(data: bytes, segment_bytes: int) -> list[bytes]:
    """Cuts `data` into independent segments of `segment_bytes` (the last one shorter)."""
    return [data[i : i + segment_bytes] for i in range(0, len(data), segment_bytes)]


def decode_windows(
    m1: M1, windows: Sequence[int], spec: WindowSpec, first_index: int = 0,
    progress: Callable[[int], None] | None = None,
) -> list[bytes]:
    """The bytes of each window (batches of `m1.batch_size` windows decode together, one byte per M1 call).

    Raises `CorruptStreamError` naming the window (counted from `first_index`) that matches no byte prefix.
    """
    if m1.max_window_bytes != spec.max_window_bytes:
        raise ValueError("M1's window and the spec's max_window_bytes differ")
    out: list[bytes] = []
    for start in range(0, len(windows), m1.batch_size):
        chunk = list(windows[start : start + m1.batch_size])
        decoders = [Decoder(window, spec.window_bits, spec.precision) for window in chunk]
        rows = [bytearray() for _ in chunk]
        pending = list(range(len(chunk)))
        for position in range(spec.max_window_bytes):
            if not pending:
                break
            probs_BxWxV = m1.probs(rows)
            freqs_PxV = quantize(probs_BxWxV[pending, position], spec.precision)
            cum_PxV1 = np.zeros((len(pending), BYTE_VOCAB_SIZE + 1), np.int64)
            np.cumsum(freqs_PxV, axis=1, out=cum_PxV1[:, 1:])
            still = []
            for k, i in enumerate(pending):
                rows[i].append(decoders[i].decode(cum_PxV1[k]))
                value, num_bits = decoders[i].code()
                if num_bits > spec.window_bits:
                    raise CorruptStreamError(f"window {first_index + start + i} is corrupt: no byte prefix codes to it")
                if value << (spec.window_bits - num_bits) != chunk[i]:
                    still.append(i)
            pending = still
        if pending:
            raise CorruptStreamError(
                f"window {first_index + start + pending[0]} is corrupt: it decodes to more than "
                f"{spec.max_window_bytes} bytes (max_window_bytes)"
            )
        out += [bytes(row) for row in rows]
        if progress is not None:
            progress(sum(len(row) for row in rows))
    return out


def windows_to_tokens(windows: Sequence[int], spec: WindowSpec) -> np.ndarray:
    """Cuts each window MSB first into `tokens_per_window` tokens (uint16 or uint8 array, windows x tokens flat)."""
    data = b"".join(window.to_bytes(spec.window_bits // 8, "big") for window in windows)
    if spec.token_bits == 8:
        return np.frombuffer(data, np.uint8).copy()
    return np.frombuffer(data, ">u2").astype(np.uint16)


def tokens_to_windows(tokens: np.ndarray, spec: WindowSpec) -> list[int]:
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
    data = tokens.astype(np.uint8 if spec.token_bits == 8 else ">u2").tobytes()
    size = spec.window_bits // 8
    return [int.from_bytes(data[i : i + size], "big") for i in range(0, len(data), size)]
