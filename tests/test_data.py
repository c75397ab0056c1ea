"""Corpus preparation, held-out split, word packing and the step-addressable grain pipeline."""

from pathlib import Path

import numpy as np
import pytest

from hat.config import EOT_BYTE
from hat.data import (
    CorpusError,
    PackedSequences,
    iterate_from,
    prepare_corpus,
    prepare_in_memory,
    resolve_documents,
    split_documents,
    train_dataset,
)
from hat.data.atomic import DirectoryExistsError, atomic_directory, partial_path
from hat.text import split_words


@pytest.fixture
def text_dir(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "a.py").write_text("def f(x):\n    return x + 1  # add one\n" * 20)
    (root / "b.md").write_text("Héllo, wörld! 日本語のテキスト 🙂 camelCaseWords and snake_case_words.\n" * 15)
    (root / "empty.txt").write_bytes(b"")
    (root / "binary.bin").write_bytes(bytes(range(256)) * 4 + b"\xff\xfe\x00\xc3")
    (root / "longline.txt").write_bytes(b"x" * 5000)
    return root


def test_stdlib_default_corpus_is_available_offline():
    docs = resolve_documents("stdlib")
    assert len(docs) > 100
    assert all(d.path.suffix == ".py" and "site-packages" not in d.path.parts for d in docs)


def test_missing_corpus_path_is_named(tmp_path: Path):
    with pytest.raises(CorpusError, match=r"corpus path not found: .*nowhere"):
        resolve_documents([str(tmp_path / "nowhere")])


def test_glob_and_directory_sources(text_dir: Path):
    assert {d.path.name for d in resolve_documents(str(text_dir))} == {
        "a.py",
        "b.md",
        "empty.txt",
        "binary.bin",
        "longline.txt",
    }
    assert [d.path.name for d in resolve_documents(str(text_dir / "*.py"))] == ["a.py"]


def test_heldout_split_is_deterministic_and_disjoint():
    docs = resolve_documents("stdlib")
    train1, held1 = split_documents(docs, 0.02)
    train2, held2 = split_documents(list(reversed(docs)), 0.02)
    assert {d.key for d in held1} == {d.key for d in held2}
    assert not {d.key for d in train1} & {d.key for d in held1}
    assert len(train1) + len(held1) == len(docs)
    assert 0.01 < len(held1) / len(docs) < 0.03


def _corpus_bytes(corpus) -> bytes:
    return corpus.read_bytes(0, corpus.num_bytes).tobytes()


def test_prepared_corpus_is_lossless_and_word_aligned(text_dir: Path, tmp_path: Path):
    docs = resolve_documents(str(text_dir))
    corpus = prepare_corpus(docs, tmp_path / "cache", max_word_bytes=100)
    expected_bytes, expected_words = b"", []
    for doc in docs:
        data = doc.path.read_bytes()
        if data:
            expected_bytes += data + bytes([EOT_BYTE])
            expected_words += split_words(data, 100) + [bytes([EOT_BYTE])]
    assert _corpus_bytes(corpus) == expected_bytes
    starts = corpus.read_word_starts(0, corpus.num_words + 1)
    words = [expected_bytes[a:b] for a, b in zip(starts[:-1], starts[1:])]
    assert words == expected_words
    assert corpus.num_text_bytes == sum(d.path.stat().st_size for d in docs)
    # A second preparation reuses the cached arrays.
    again = prepare_corpus(docs, tmp_path / "cache", max_word_bytes=100)
    assert len(list((tmp_path / "cache").iterdir())) == 1 and again.num_bytes == corpus.num_bytes


def _reassemble(source: PackedSequences) -> tuple[bytes, float]:
    """The target bytes of all sequences in order, and the number of text bytes they score."""
    out, text = bytearray(), 0.0
    for i in range(len(source)):
        ex = source[i]
        n = int(ex["loss_mask"].sum())
        out += bytes(ex["targets"][:n].astype(np.uint8))
        text += ex["text_mask"].sum()
        assert ex["inputs"][0] == EOT_BYTE and ex["word_ids"][0] == 0
        ids = ex["word_ids"][:n]
        assert np.all(np.diff(ids) >= 0) and ids.max() < source.max_words
        assert np.all(ex["word_ids"][n:] == source.max_words)
        assert np.all(ex["loss_mask"][n:] == 0)
        # Inputs are the targets shifted by one.
        np.testing.assert_array_equal(ex["inputs"][1:n], ex["targets"][: n - 1])
    return bytes(out), text


@pytest.mark.parametrize("seq_bytes,max_words", [(128, 64), (256, 16), (512, 400)])
def test_packing_scores_every_byte_exactly_once(text_dir: Path, seq_bytes: int, max_words: int):
    docs = resolve_documents(str(text_dir))
    corpus = prepare_in_memory(docs, max_word_bytes=100)
    source = PackedSequences.build(corpus, seq_bytes, max_words)
    data, text_bytes = _reassemble(source)
    assert data == _corpus_bytes(corpus)
    assert text_bytes == corpus.num_text_bytes


def test_word_ids_follow_the_splitter():
    text = "Hello, world! howAreYou 日本語\n\tdone"
    corpus = prepare_in_memory([text.encode()], max_word_bytes=100)
    ex = PackedSequences.build(corpus, 128, 64)[0]
    n = int(ex["loss_mask"].sum())
    inputs = bytes(ex["inputs"][1:n].astype(np.uint8))
    ids = ex["word_ids"][1:n]
    regrouped = [bytes(inputs[i] for i in np.flatnonzero(ids == w)) for w in np.unique(ids)]
    assert regrouped == split_words(text.encode(), 100)[: len(regrouped)]


def test_batches_are_step_addressable(text_dir: Path):
    corpus = prepare_in_memory(resolve_documents(str(text_dir)), max_word_bytes=100)
    source = PackedSequences.build(corpus, 128, 64)
    dataset = train_dataset(source, batch_size=4, seed=3)
    resumed = next(iterate_from(dataset, 11))
    for key, value in dataset[11].items():
        np.testing.assert_array_equal(value, resumed[key])
    rebuilt = train_dataset(PackedSequences.build(corpus, 128, 64), batch_size=4, seed=3)
    np.testing.assert_array_equal(rebuilt[11]["inputs"], dataset[11]["inputs"])
    assert not np.array_equal(train_dataset(source, 4, seed=4)[11]["inputs"], dataset[11]["inputs"])


def test_atomic_directory_publishes_complete_or_nothing(tmp_path: Path):
    final = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_directory(final) as partial:
        (partial / "half").write_text("x")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with atomic_directory(final) as partial:
        (partial / "done").write_text("x")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    with pytest.raises(DirectoryExistsError, match="already exists"), atomic_directory(final):
        pass
    # A cache filled by another process meanwhile wins; this copy is dropped.
    with atomic_directory(final, exists_ok=True) as partial:
        (partial / "second").write_text("x")
    assert [p.name for p in final.iterdir()] == ["done"] and [p.name for p in tmp_path.iterdir()] == ["out"]
    # A resumable write keeps its partial directory through an error, for the next attempt.
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "r", resumable=True) as partial:
        (partial / "chunk0").write_text("x")
        raise RuntimeError("interrupted")
    with atomic_directory(tmp_path / "r", resumable=True) as partial:
        assert (partial / "chunk0").is_file()
    assert (tmp_path / "r" / "chunk0").is_file() and not partial_path(tmp_path / "r", resumable=True).exists()


def test_script_primer_joins_the_training_split_only_and_is_written_once(text_dir: Path, tmp_path: Path):
    from hat.config import load_config
    from hat.data.primer import SCRIPT_BLOCKS, script_primer
    from hat.data.run import split_run_documents

    primer = script_primer(20_000, seed=3)
    assert primer == script_primer(20_000, seed=3) != script_primer(20_000, seed=4)
    text = primer.decode("utf-8")  # whole characters only
    assert len(primer) >= 20_000 and primer.endswith(b"\n")
    # Most scripts appear, each paragraph keeping to one script's block (and the spaces and punctuation around).
    scripts = {name for name, (first, last) in SCRIPT_BLOCKS.items() if any(first <= ord(c) <= last for c in text)}
    assert len(scripts) >= len(SCRIPT_BLOCKS) - 2

    overrides = [f"data.corpus={text_dir}", f"data.cache_dir={tmp_path}", "data.script_primer_bytes=5000"]
    config = load_config(None, overrides)
    train, heldout = split_run_documents(config)
    plain_train, plain_heldout = split_run_documents(load_config(None, [*overrides[:2], "data.script_primer_bytes=0"]))
    assert train[:-1] == plain_train and heldout == plain_heldout
    assert train[-1].path.read_bytes() == script_primer(5000, seed=0)
    stamp = train[-1].path.stat().st_mtime_ns
    assert split_run_documents(config)[0][-1].path.stat().st_mtime_ns == stamp  # the cache key stays the same


def test_m1_recipe_packs_window_like_sequences(text_dir: Path):
    """configs/m1_tiny.yaml packs the corpus as EqualInfoAC windows read M1: every sequence is EOT and then the
    next `max_window_bytes` bytes of the text, cut at any byte (one-byte words), not only at word starts."""
    from hat.config import load_config

    config = load_config(Path(__file__).resolve().parent.parent / "configs/m1_tiny.yaml")
    window = config.data.eqinfo.max_window_bytes
    assert config.data.seq_bytes == window
    corpus = prepare_in_memory(resolve_documents(str(text_dir)), max_word_bytes=config.model.max_word_bytes)
    source = PackedSequences.build(corpus, config.data.seq_bytes, config.data.max_words)
    data, _ = _reassemble(source)  # asserts each sequence's leading EOT and the one-byte shift
    assert data == _corpus_bytes(corpus)
    lengths = [int(source[i]["loss_mask"].sum()) for i in range(len(source))]
    assert all(n == window for n in lengths[:-1]) and 1 <= lengths[-1] <= window
    # Sequences start mid-word: "def f(x):\n    return ..." repeated puts a sequence start inside "return".
    starts = np.cumsum([0] + lengths[:-1])
    assert any(data[s - 1 : s + 1].isalpha() for s in starts[1:])
