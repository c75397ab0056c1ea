"""EqualInfoAC over worker processes (`hat.compress.workers`): the same bits whatever the number of workers."""

from pathlib import Path

import numpy as np
import pytest
from flax import nnx
from support import REPO

from hat.checkpoint import Checkpointer
from hat.compress.container import decode_file, encode_file
from hat.compress.data import prepare_token_corpus
from hat.compress.equal_info import M1, WindowSpec, encode_segments, split_segments
from hat.compress.workers import Coders, WorkerError, split_ranges
from hat.config import ConfigError, load_config
from hat.data import Document
from hat.models import build_model

BATCH, WINDOW = 4, 16
SPEC = WindowSpec(16, 8, WINDOW)
TINY = ["model.backbone.num_layers=1", "model.backbone.hidden_size=32", "model.backbone.num_heads=2",
        "model.backbone.num_kv_heads=2", "model.backbone.mlp_hidden_size=64"]  # fmt: skip


def _text(size: int) -> bytes:
    """Mixed text: source code, German, Japanese and a few binary bytes."""
    parts = [(REPO / "hat/compress/workers.py").read_bytes(), "Größenänderung der Fenster. ".encode() * 20,
             "日本語のテキストです。".encode() * 20, bytes(range(256))]  # fmt: skip
    return (b"".join(parts) * (size // sum(map(len, parts)) + 1))[:size]


@pytest.fixture(scope="module")
def m1(tmp_path_factory) -> M1:
    """An M1 loaded from a checkpoint as train.py writes it (random weights: coding is exact for any M1)."""
    directory = tmp_path_factory.mktemp("m1")
    config = load_config(REPO / "configs/m1_tiny.yaml", [f"workdir={directory}", *TINY])
    _, params = nnx.split(build_model(config.model, rngs=nnx.Rngs(3)), nnx.Param)
    checkpointer = Checkpointer(directory)
    checkpointer.save(1, {"params": params, "opt_state": {}}, config)
    checkpointer.close()
    return M1.from_checkpoint(str(directory), BATCH, WINDOW)


@pytest.fixture(scope="module")
def coders(m1: M1):
    """Two worker processes, started once for the module."""
    with Coders(m1, workers=2) as pool:
        yield pool


def test_split_ranges_cover_every_index_once():
    for num in range(0, 30):
        for parts in range(1, 6):
            ranges = split_ranges(num, parts)
            assert [i for r in ranges for i in r] == list(range(num))
            assert len(ranges) == min(num, parts) and all(len(r) for r in ranges)
            assert max(map(len, ranges), default=0) - min(map(len, ranges), default=0) <= 1


@pytest.mark.slow
def test_workers_give_the_same_windows_and_decode_across_worker_counts(m1: M1, coders: Coders):
    data = _text(3000)
    # 47 segments of 64 bytes: both workers fill their 4 lanes, unevenly (23 and 24 segments).
    segments = split_segments(data, 64)
    alone = encode_segments(m1, segments, SPEC)
    shared = coders.encode(segments, SPEC)
    assert coders.started
    for name in ("values", "lengths", "counts"):
        assert np.array_equal(getattr(shared, name), getattr(alone, name)), name
    decoded = coders.decode(alone.values, alone.counts, SPEC)
    assert b"".join(decoded) == data

    blob_one = encode_file(m1, data, SPEC, segment_bytes=64, workers=1)
    seen: list[int] = []
    blob_two = encode_file(m1, data, SPEC, segment_bytes=64, workers=2, progress=seen.append)
    assert blob_two == blob_one and sum(seen) == len(data)
    decoded_bytes: list[int] = []
    assert decode_file(m1, blob_one, workers=2, progress=decoded_bytes.append) == data
    assert sum(decoded_bytes) == len(data)
    assert decode_file(m1, blob_two, workers=1) == data


@pytest.mark.slow
def test_corpus_chunks_in_workers_give_the_same_tokens(m1: M1, tmp_path: Path, monkeypatch):
    docs = []
    for i in range(6):
        path = tmp_path / f"doc{i}.txt"
        path.write_bytes(_text(700 + 350 * i))
        docs.append(Document(path, path.name))
    # 64-byte segments: chunks of 4 x 4 x 64 bytes, so these 11.5 kB are 12 chunks in flight two at a time.
    one = prepare_token_corpus(docs, m1, SPEC, 64, tmp_path / "one", "train", workers=1)
    started = []
    monkeypatch.setattr(Coders, "_start", lambda self, start=Coders._start: started.append(1) or start(self))
    two = prepare_token_corpus(docs, m1, SPEC, 64, tmp_path / "two", "train", workers=2)
    assert started
    assert np.array_equal(two.tokens.read().result(), one.tokens.read().result())
    assert np.array_equal(two.window_offsets.read().result(), one.window_offsets.read().result())
    assert two.num_bytes == sum(d.path.stat().st_size for d in docs)


def test_a_negative_worker_count_is_a_config_error():
    with pytest.raises(ConfigError, match="data.eqinfo.workers"):
        load_config(REPO / "configs/eqinfo_tiny.yaml", ["data.eqinfo.workers=-1"])


@pytest.mark.slow
def test_a_worker_that_cannot_load_m1_is_a_one_line_error(m1: M1, tmp_path: Path):
    # The parent's M1 stays loaded; its checkpoint is gone by the time the workers start.
    moved = tmp_path / "moved"
    Path(m1.checkpoint).rename(moved)
    try:
        with Coders(m1, workers=2) as pool, pytest.raises(WorkerError, match="--workers 1"):
            pool.encode(split_segments(_text(3000), 64), SPEC)
    finally:
        moved.rename(m1.checkpoint)
