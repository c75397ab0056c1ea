"""A run's working directory: created (or found) writable, and held by one training process at a time."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hat.errors import HatError


class WorkdirError(HatError, OSError):
    """The workdir cannot be created or written, or another training process holds it; the message says which."""


def create_workdir(workdir: Path) -> None:
    """Creates `workdir` and its parents; a parent that is a file, a missing permission or a full disk is a
    `WorkdirError`."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WorkdirError(
            f"cannot create workdir {workdir}: {error.strerror or error} (choose a path in a writable directory)"
        ) from None


def write_workdir_file(path: Path, text: str) -> None:
    """Writes one of the run's small files (config.yaml, summary.json); failing to is a `WorkdirError`."""
    try:
        path.write_text(text)
    except OSError as error:
        raise WorkdirError(
            f"cannot write {path}: {error.strerror or error} (check that the workdir is writable and has free space)"
        ) from None


@contextmanager
def hold_workdir(workdir: Path) -> Iterator[None]:
    """Holds `<workdir>/.lock` for the block, so a second training process on the same workdir is refused.

    The lock is an OS file lock (`flock`), not the file's existence: the kernel drops it when the holder exits in
    any way, a SIGKILL or a crash included, so a dead run never leaves the workdir stuck. The file records the
    holder's pid for the message and is never deleted (deleting it would let two processes lock different files).
    """
    path = workdir / ".lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise WorkdirError(
            f"cannot write {path}: {error.strerror or error} (check that the workdir is writable)"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise WorkdirError(
                f"workdir {workdir} is in use by another training process (pid {holder}); wait for it to finish or "
                "stop it, or give this run another workdir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
