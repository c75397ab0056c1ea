"""Test-session settings, and the tiny corpora and trained runs that several test files share.

Tests run tiny models, where XLA's backend optimisations cost more compile time than they save at run time.

Each shared corpus or run is a session fixture: built once, the first time a test asks for it, by the fixture itself
(never by another test), so tests pass alone and in any order. Tests treat them as read-only; a test that writes
into a run (resuming it, deleting a file) works on its own copy.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from support import AWKWARD_FILES, BYTE, FLAT, HAT_RUN, REPO, TEXT_FILES, TOKEN, cli  # noqa: E402


def _write_files(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


def _train(workdir: Path, *args: str) -> Path:
    assert cli("train")([*args, f"workdir={workdir}"]) == 0
    return workdir


@pytest.fixture(scope="session")
def text_corpus(tmp_path_factory) -> Path:
    """Five synthetic source files (28 kB), CJK text and broken UTF-8: the same bytes on every machine."""
    return _write_files(tmp_path_factory.mktemp("text_corpus"), TEXT_FILES)


@pytest.fixture(scope="session")
def awkward_corpus(tmp_path_factory) -> Path:
    """The text corpus plus an empty file, binary bytes and one line of 1 MB."""
    return _write_files(tmp_path_factory.mktemp("awkward_corpus"), TEXT_FILES | AWKWARD_FILES)


@pytest.fixture(scope="session")
def hat_run(awkward_corpus: Path, tmp_path_factory) -> Path:
    """A tiny HAT trained 8 steps on the awkward corpus: metrics every 2 steps, evaluation and checkpoints at 4 and
    8."""
    return _train(tmp_path_factory.mktemp("hat_run"), f"data.corpus=['{awkward_corpus}']", "train.steps=8", *HAT_RUN)


@pytest.fixture(scope="session")
def byte_run(text_corpus: Path, tmp_path_factory) -> Path:
    """A flat byte LM (configs/byte_tiny.yaml, shrunk) trained 4 steps, evaluated on its whole held-out split."""
    args = [str(REPO / "configs/byte_tiny.yaml"), f"data.corpus=['{text_corpus}']", *FLAT, *BYTE,
            "data.eval_fraction=0.5", "train.eval_sequences=0"]  # fmt: skip
    return _train(tmp_path_factory.mktemp("byte_run"), *args)


@pytest.fixture(scope="session")
def bpe_run(text_corpus: Path, tmp_path_factory) -> Path:
    """A flat token LM over a 400-id byte-level BPE (configs/bpe_tiny.yaml, shrunk) trained 4 steps."""
    args = [str(REPO / "configs/bpe_tiny.yaml"), f"data.corpus=['{text_corpus}']", *FLAT, *TOKEN]
    return _train(tmp_path_factory.mktemp("bpe_run"), *args)
