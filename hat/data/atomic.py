"""Writing a directory so that it appears complete or not at all.

The directory is written under a hidden sibling name and renamed into place when complete (a rename within one
directory is atomic), so a reader never finds a half-written one under the final name: a prepared corpus or token
store, a parameter store, an export.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hat.errors import HatError


class DirectoryExistsError(HatError, FileExistsError):
    """The directory to write is already there; the message names it."""


def partial_path(final: str | Path, resumable: bool = False) -> Path:
    """The hidden sibling `final` is written in: `.NAME.partial-PID` (this process's own), or `.NAME.partial` for a
    resumable write, whose partial directory a later process continues."""
    final = Path(final)
    suffix = "" if resumable else f"-{os.getpid()}"
    return final.parent / f".{final.name}.partial{suffix}"


@contextmanager
def atomic_directory(final: str | Path, exists_ok: bool = False, resumable: bool = False) -> Iterator[Path]:
    """Yields a partial directory (`partial_path`) to write into; renames it to `final` when the block completes.

    An existing `final` is refused before anything is written, and again at the rename (`DirectoryExistsError`).
    With `exists_ok` (caches that several processes may fill at once), writing goes ahead and the rename gives way
    to a `final` that appeared meanwhile: the first process to finish wins and the others' copies are deleted.
    An error inside the block deletes the partial directory, unless `resumable`: then it is kept (its contents must
    record how far they are valid) for the next attempt to continue.
    """
    final = Path(final)
    if not exists_ok and final.exists():
        raise DirectoryExistsError(f"output directory already exists: {final} (choose a new path or delete it)")
    partial = partial_path(final, resumable)
    if not resumable:
        # Left by an earlier process with this pid that died.
        shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True, exist_ok=resumable)
    try:
        yield partial
    except BaseException:
        if not resumable:
            shutil.rmtree(partial, ignore_errors=True)
        raise
    _publish(partial, final, exists_ok)


def _publish(partial: Path, final: Path, exists_ok: bool) -> None:
    # os.rename replaces an empty directory without complaint, so an existing `final` is checked for first.
    if final.exists() and not exists_ok:
        shutil.rmtree(partial, ignore_errors=True)
        raise DirectoryExistsError(f"output directory appeared while writing: {final}")
    try:
        os.rename(partial, final)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
        if not (exists_ok and final.exists()):
            raise


def replace_file(path: Path, text: str) -> None:
    """Writes `text` to `path` through a temporary sibling, so `path` holds the old text or the new, never a part."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
