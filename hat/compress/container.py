"""The EqualInfoAC file format: a JSON header, a segment table, then the windows' bits (MSB first, big endian).

    b"HATEQAC1" | header length (uint32) | header (JSON) | per segment: windows, CRC-32 (2 x uint32) | windows

The header records the spec (b, v, M1's window and batch shape, precision), the segment length, the byte count,
M1's identity and the kind of device M1 ran on, so a file is only ever decoded with the M1, the computation shape
and the device kind it was made with (anything else is refused with a one-line error: floats would differ).
Segment i runs in M1 lane `i % m1_batch_size`, in the encoder and in the decoder. Text is
coded in independent segments of `segment_bytes`; the segment table (8 bytes per segment: 0.016 bits per byte at
4096-byte segments) lets decoding check every segment's length and CRC-32, and name the windows of a corrupt one.
Windows are dense codes (most bit strings decode to some text), so without this check a flipped bit would
silently change the text.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable
from typing import Any

from hat.compress.equal_info import (
    M1,
    ComputationShapeError,
    CorruptStreamError,
    WindowSpec,
    bytes_to_windows,
    encode_segments,
    split_segments,
    windows_to_bytes,
)
from hat.compress.workers import Coders

MAGIC = b"HATEQAC1"
# 2: the vectorised window coder (arithmetic.WindowCoder) and the lane-cached M1; the device kind in the header.
# 3: M1's window start computed once (one lane), steps from position 1, a decoding step's cache written first.
FORMAT_VERSION = 3
DEFAULT_SEGMENT_BYTES = 4096


def encode_file(
    m1: M1,
    data: bytes,
    spec: WindowSpec,
    segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    progress: Callable[[int], None] | None = None,
    workers: int = 1,
) -> bytes:
    """Compresses `data` (any bytes) into the container format, its segments split between `workers` processes
    (`hat.compress.workers`; 0: one per CPU core on a CPU; the same file whatever their number)."""
    segments = split_segments(data, segment_bytes)
    with Coders(m1, workers) as coders:
        windows = coders.encode(segments, spec, progress)
    header = {
        "format_version": FORMAT_VERSION,
        "window_bits": spec.window_bits,
        "token_bits": spec.token_bits,
        "max_window_bytes": spec.max_window_bytes,
        "precision": spec.precision,
        "m1_batch_size": m1.batch_size,
        "segment_bytes": segment_bytes,
        "num_segments": len(segments),
        "num_bytes": len(data),
        "num_windows": len(windows.values),
        "m1": m1.identity,
        "m1_device": m1.device,
    }
    blob = json.dumps(header, sort_keys=True).encode()
    table = b"".join(
        struct.pack(">II", int(count), zlib.crc32(segment)) for count, segment in zip(windows.counts, segments)
    )
    return MAGIC + struct.pack(">I", len(blob)) + blob + table + windows_to_bytes(windows.values, spec.window_bits)


def read_header(blob: bytes) -> tuple[dict[str, Any], bytes]:
    """Splits a container into its header dict and the rest (segment table, windows); a foreign or damaged
    header is an error."""
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 4:
        raise CorruptStreamError("not an EqualInfoAC file (bad magic bytes)")
    (length,) = struct.unpack(">I", blob[len(MAGIC) : len(MAGIC) + 4])
    start = len(MAGIC) + 4
    try:
        header = json.loads(blob[start : start + length])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CorruptStreamError("the file header is damaged (not valid JSON)") from None
    version = header.get("format_version") if isinstance(header, dict) else None
    if isinstance(version, int) and 0 < version < FORMAT_VERSION:
        # M1's floats are computed differently since: the windows would not decode.
        raise CorruptStreamError(
            f"this file is EqualInfoAC format version {version}; this hat reads version {FORMAT_VERSION} only: "
            f"decode it with the hat version that wrote it"
        )
    if version != FORMAT_VERSION:
        raise CorruptStreamError("the file header is damaged or of an unsupported version")
    return header, blob[start + length :]


def spec_of(header: dict[str, Any]) -> WindowSpec:
    """The window spec a container was written with."""
    return WindowSpec(header["window_bits"], header["token_bits"], header["max_window_bytes"], header["precision"])


def decode_file(m1: M1, blob: bytes, progress: Callable[[int], None] | None = None, workers: int = 1) -> bytes:
    """Decompresses a container written by `encode_file` (with any number of `workers`, here too); raises
    `CorruptStreamError` naming the window(s)."""
    header, rest = read_header(blob)
    if header["m1"] != m1.identity:
        raise CorruptStreamError(
            f"this file was made with M1 {header['m1']}, but the given M1 is {m1.identity}; use the same checkpoint"
        )
    spec = spec_of(header)
    if m1.batch_size != header["m1_batch_size"] or m1.max_window_bytes != spec.max_window_bytes:
        raise ComputationShapeError(
            f"this file was made with M1 batch size {header['m1_batch_size']} and {spec.max_window_bytes}-byte "
            f"windows, not {m1.batch_size} and {m1.max_window_bytes}: load M1 with the header's shape"
        )
    if m1.device != header["m1_device"]:
        raise ComputationShapeError(
            f"this file was made with M1 on {header['m1_device']}, not {m1.device}: its float results would differ"
        )
    table_bytes = 8 * header["num_segments"]
    table = [struct.unpack(">II", rest[i : i + 8]) for i in range(0, min(table_bytes, len(rest)) - 7, 8)]
    payload = rest[table_bytes:]
    size = spec.window_bits // 8
    expected = header["num_windows"]
    if len(table) != header["num_segments"] or sum(count for count, _ in table) != expected:
        raise CorruptStreamError("the segment table is truncated or damaged (window 0 onwards cannot be placed)")
    if len(payload) != expected * size:
        have = len(payload) // size
        raise CorruptStreamError(
            f"token stream is truncated or padded: {len(payload)} bytes for {expected} windows of {size} bytes "
            f"(window {min(have, expected)} is {'incomplete' if have < expected else 'extra'})"
        )
    windows = bytes_to_windows(payload, spec.window_bits)
    counts = [count for count, _ in table]
    with Coders(m1, workers) as coders:
        texts = coders.decode(windows, counts, spec, progress)
    first = 0
    out = []
    for index, (count, crc) in enumerate(table):
        last = first + count
        text = b"".join(texts[first:last])
        want = min(header["segment_bytes"], header["num_bytes"] - index * header["segment_bytes"])
        if len(text) != want or zlib.crc32(text) != crc:
            recoded = encode_segments(m1, [text], spec, segment_ids=[index]).values.tolist()
            bad = next(
                (first + k for k, (a, b) in enumerate(zip(recoded, windows[first:last].tolist())) if a != b), None
            )
            where = f"; window {bad} does not re-encode from its text" if bad is not None else ""
            raise CorruptStreamError(
                f"windows {first}-{last - 1} (segment {index}) are corrupt: their text fails the "
                f"{'length' if len(text) != want else 'CRC-32'} check{where}"
            )
        out.append(text)
        first = last
    return b"".join(out)
