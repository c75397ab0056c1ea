"""Caches of prepared data: one directory per list of files and settings, named by a fingerprint of both, written
once and complete (it holds `manifest.json`) or not there at all."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hat.data.atomic import DirectoryExistsError, atomic_directory

if TYPE_CHECKING:
    from hat.data.corpus import Document

MANIFEST = "manifest.json"


def cache_key(docs: Sequence[Document], format_version: int, *settings: object) -> str:
    """The key of data prepared from `docs` in layout `format_version` with `settings` (compared as strings): it
    changes when any file's path, size, modification time or status-change time, the layout or a setting changes.

    The status-change time (ctime) is set by the kernel on every write, rename or permission change and cannot be
    set back, so a file rewritten with its old size and a restored modification time (`cp -p`, `touch -d`) still
    gets a new key: cached arrays are rebuilt, never silently stale. A file that vanished is a `CorpusError`.
    """
    h = hashlib.sha256(json.dumps([format_version, *map(str, settings)]).encode())
    for doc in docs:
        stat = doc.stat()
        h.update(f"{doc.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ctime_ns}\n".encode())
    return h.hexdigest()[:16]


def build_once(
    final: Path, write: Callable[[Path], None], resumable: bool = False, what: str = "the prepared data"
) -> Path:
    """Returns `final`, first building it unless it is complete: `write(directory)` fills a partial directory
    (writing `manifest.json` last), which is then renamed to `final` (`hat.data.atomic.atomic_directory`).

    Several processes of one run may build the same directory at once; the first to finish wins. `resumable`: the
    partial directory of an interrupted build is kept and handed to the next `write`, which continues it. A full
    disk is a one-line `hat.errors.StorageError` naming `what` and `final`.
    """
    if not (final / MANIFEST).is_file():
        if not final.exists():
            with atomic_directory(final, exists_ok=True, resumable=resumable, what=what) as partial:
                write(partial)
        if not (final / MANIFEST).is_file():
            raise DirectoryExistsError(f"{final} exists but is incomplete; delete it and rerun")
    return final
