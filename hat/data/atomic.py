"""Writing a directory so that it appears complete or not at all.

The directory is written under a hidden sibling name and renamed into place when complete (a rename within one
directory is atomic), so a reader never finds a half-written one under the final name: a prepared corpus or token
store, a parameter store, an export. A full disk (or a read-only or unwritable one) while writing is one
`hat.errors.StorageError`, after the partial directory is deleted (or, for a resumable write, kept to continue).
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hat.errors import HatError, writing


class DirectoryExistsError(HatError, FileExistsError):
    """The directory to write is already there; the message names it."""


class OutputPathError(HatError, OSError):
    """The directory to write cannot be created where asked (its parent is a file, not writable); the message
    names it."""


def _owner() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def partial_path(final: str | Path, resumable: bool = False) -> Path:
    """The hidden sibling `final` is written in: `.NAME.partial-HOST-PID` (this process's own), or `.NAME.partial`
    for a resumable write, whose partial directory a later process continues."""
    final = Path(final)
    suffix = "" if resumable else f"-{_owner()}"
    return final.parent / f".{final.name}.partial{suffix}"


def _remove_abandoned(final: Path) -> None:
    """Deletes partial directories of `final` left by processes of this host that died (SIGKILL, power loss): an
    interrupted conversion would otherwise leave a model-sized copy behind on every attempt. Another host's, or a
    live process's, are left alone."""
    prefix = f".{final.name}.partial-{socket.gethostname()}-"
    for path in final.parent.glob(f"{prefix}*"):
        pid = path.name[len(prefix) :]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's


@contextmanager
def atomic_directory(
    final: str | Path, exists_ok: bool = False, resumable: bool = False, what: str = "the directory"
) -> Iterator[Path]:
    """Yields a partial directory (`partial_path`) to write into; renames it to `final` when the block completes.

    An existing `final` is refused before anything is written, and again at the rename (`DirectoryExistsError`).
    With `exists_ok` (caches that several processes may fill at once), writing goes ahead and the rename gives way
    to a `final` that appeared meanwhile: the first process to finish wins and the others' copies are deleted.
    An error inside the block deletes the partial directory, unless `resumable`: then it is kept (its contents must
    record how far they are valid) for the next attempt to continue. A full, read-only or unwritable disk is a
    `StorageError` naming `what` and `final` (e.g. "the export"); a parent that is not a directory an
    `OutputPathError`.
    """
    final = Path(final)
    if not exists_ok and final.exists():
        raise DirectoryExistsError(f"output directory already exists: {final} (choose a new path or delete it)")
    partial = partial_path(final, resumable)
    kept = "nothing was kept"
    if resumable:
        kept = f"the part written so far is kept in {partial} and the rerun continues it"
    with writing(f"{what} {final}", kept):
        _create(final, partial, resumable)
        try:
            yield partial
        except BaseException:
            if not resumable:
                shutil.rmtree(partial, ignore_errors=True)
            raise
        _publish(partial, final, exists_ok)


def _create(final: Path, partial: Path, resumable: bool) -> None:
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        if not resumable:
            _remove_abandoned(final)
            shutil.rmtree(partial, ignore_errors=True)  # left by an earlier process with this pid that died
        partial.mkdir(exist_ok=resumable)
    except OSError as error:
        if error.errno not in (errno.ENOTDIR, errno.EEXIST, errno.ENOENT):
            raise  # a full or unwritable disk: `writing` words it
        raise OutputPathError(
            f"cannot create {final}: {error.strerror} ({error.filename}); choose a path in a writable directory"
        ) from None


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


def replace_file(path: Path, text: str | bytes) -> None:
    """Writes `text` to `path` through a temporary sibling, so `path` holds the old text or the new, never a part;
    the temporary file is removed when writing it fails (a full disk)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if isinstance(text, bytes):
            tmp.write_bytes(text)
        else:
            tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
