"""Files named on a command line, as documents."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hat.data.corpus import CorpusError, Document


def read_documents(paths: Sequence[str | Path]) -> list[Document]:
    """Checks that every path is a readable file; a missing one is a `CorpusError` naming it."""
    docs = []
    for path in map(Path, paths):
        if not path.is_file():
            raise CorpusError(f"file not found: {path}")
        docs.append(Document(path, path.name))
    return docs
