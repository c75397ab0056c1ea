"""The one base class of user-facing errors, and the one place where a failing disk becomes one of them.

Every error a user can cause and fix (a bad config key, a missing file, a corrupt checkpoint, a model that does not
fit a request) is a `HatError`; its message is one line that names the problem and the fix. The command-line
wrapper (`hat.cli.run`) turns exactly these into that line and exit code 2; anything else is a bug and keeps its
traceback.

Writing an artifact (a checkpoint, prepared data, a tokenizer, an export, metrics) can fail because of the storage:
the disk is full, a quota is reached, the file system is read-only or not writable. `writing` turns exactly those
failures into a `StorageError` naming the artifact, what survives and the fix.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class HatError(Exception):
    """A user-facing error; the message is one line naming the problem and the fix."""


class StorageError(HatError, OSError):
    """An artifact could not be written because of the storage under it (full, over quota, read-only, not
    writable); the message names the artifact, what was kept and the fix. `errno` is the underlying error's."""


# The storage failures a user fixes (free space, make the path writable), with what to tell them. Any other error
# while writing (a bug, a corrupt input) keeps its traceback.
_STORAGE_FAILURES = {
    errno.ENOSPC: ("no space left on the device", "free space and rerun"),
    errno.EDQUOT: ("disk quota exceeded", "free space and rerun"),
    errno.EROFS: ("the file system is read-only", "choose a writable location and rerun"),
    errno.EACCES: ("permission denied", "make the location writable or choose another, and rerun"),
}
# Libraries that write files themselves report the OS error inside their own exception's text: tensorstore as
# ValueError('RESOURCE_EXHAUSTED: Error writing local file ...: No space left on device [os_error_code='28']'),
# Rust-backed ones (safetensors, tokenizers) as '... No space left on device (os error 28)'.
_LIBRARY_OS_ERROR = re.compile(r"os_error_code='(\d+)'|\(os error (\d+)\)")


def error_causes(error: BaseException | None) -> Iterator[BaseException]:
    """`error`, then what caused it (`__cause__`, else `__context__`), and so on, each once."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def storage_failure(error: BaseException) -> int | None:
    """The errno of a storage failure (ENOSPC, EDQUOT, EROFS, EACCES) that `error` is or was caused by, raised by
    Python or by a library that writes files itself; None for anything else."""
    for cause in error_causes(error):
        if isinstance(cause, OSError) and cause.errno in _STORAGE_FAILURES:
            return cause.errno
        for match in _LIBRARY_OS_ERROR.finditer(str(cause)):
            code = int(match[1] or match[2])
            if code in _STORAGE_FAILURES:
                return code
    return None


@contextmanager
def writing(what: str, kept: str | Callable[[], str] = "") -> Iterator[None]:
    """Runs a block that writes `what` (e.g. "the export runs/x/out"); a storage failure inside it becomes one
    `StorageError`: `cannot write <what>: <reason>; <kept>; <fix>`.

    `kept` says what survives (or a function that says it, asked only on failure). The block must leave nothing
    behind that looks complete; a `HatError` from inside passes unchanged, and every other error keeps its
    traceback. This is the one place where storage failures are recognised and worded.
    """
    try:
        yield
    except HatError:
        raise
    except Exception as error:  # libraries raise bare Exceptions for I/O; storage_failure narrows, the rest re-raise
        code = storage_failure(error)
        if code is None:
            raise
        reason, fix = _STORAGE_FAILURES[code]
        survives = kept() if callable(kept) else kept
        failure = StorageError(f"cannot write {what}: {reason}; {f'{survives}; ' if survives else ''}{fix}")
        failure.errno = code
        raise failure from None
