"""Orbax checkpoints of a run: parameters, optimizer state and step, plus the config and data position as JSON.

Orbax writes each step into a temporary directory and renames it when complete, so a run killed mid-save leaves
the previous checkpoint as the latest restorable one. A complete checkpoint can still fail to restore (bytes flipped
on disk, a file cut short or deleted): every restore here turns exactly those read failures into a `CheckpointError`
naming the step directory and the fix, and training falls back to the newest checkpoint that restores.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import orbax.checkpoint as ocp

from hat.config import Config, config_from_dict, to_dict
from hat.errors import HatError, error_causes, storage_failure, writing


class CheckpointError(HatError, FileNotFoundError):
    """No usable checkpoint at the given path; the message names the path."""


class CorruptCheckpointError(CheckpointError):
    """A complete checkpoint whose files do not read back; `reason` says why in a few words."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


# Tensorstore reports a failed read of a file as ValueError('CODE: Error reading "<key>" in OCDBT database at local
# file "<dir>": <detail>; at byte N [tensorstore_spec=...]'), possibly nested in 'Error opening "<driver>" driver: '.
_TENSORSTORE_FILE_ERROR = re.compile(r'^[A-Z_]+: .*(?:in OCDBT database|local file ")', re.S)
_TENSORSTORE_KEY = re.compile(r'Error reading "([^"]*)"')


def _tensorstore_detail(message: str) -> str:
    message = message.split(" [tensorstore_spec", 1)[0].split("; at byte", 1)[0]
    detail = message.rsplit('": ', 1)[-1].strip()
    key = _TENSORSTORE_KEY.search(message)
    return f"{detail} in {key[1]}" if key else detail


def read_failure(error: BaseException) -> str | None:
    """Why a checkpoint's files did not read back, in a few words, if `error` (or what caused it) is such a failure:
    corrupt or cut-short array data, unreadable JSON metadata, a missing item or file. None for anything else, which
    is a bug and must keep its traceback.

    Orbax wraps tensorstore's ValueError in a bare `Exception`, so the causes are searched, not the outer type.
    """
    for cause in error_causes(error):
        if isinstance(cause, json.JSONDecodeError):
            return f"metadata corrupt: {cause}"
        if isinstance(cause, ValueError) and _TENSORSTORE_FILE_ERROR.match(str(cause)):
            return f"data corrupt: {_tensorstore_detail(str(cause))}"
        if isinstance(cause, KeyError) and "was not found in the checkpoint" in str(cause):
            return f"incomplete: {str(cause).strip(chr(39))}"
        if isinstance(cause, OSError) and not isinstance(cause, CheckpointError):
            return f"unreadable: {cause}"
    return None


class _DropOrbaxStorageReports(logging.Filter):
    """Drops orbax's own reports (error records through absl's logger, each with a traceback of dozens of lines) of
    a save that failed because the disk is full or unwritable: the save's caller raises that failure as one
    `StorageError` line. Orbax reports one failure several times from several threads, and not every report
    carries the cause, so once one report names a storage failure, orbax's later error records are dropped too
    (the run is then stopping with that one line). Orbax's errors before any storage failure are kept."""

    def __init__(self) -> None:
        super().__init__()
        self.storage_failed = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or f"{os.sep}orbax{os.sep}" not in record.pathname:
            return True
        error = record.exc_info[1] if record.exc_info else None
        if storage_failure(Exception(record.getMessage())) or (error is not None and storage_failure(error)):
            self.storage_failed = True
        return not self.storage_failed


class _DropAbandonedOrbaxTasks(logging.Filter):
    """Drops asyncio's "Task/Future exception was never retrieved" records (each with a traceback) for orbax's
    reads and writes left behind by a restore or save that already failed as one line: when the first read of a
    corrupt checkpoint (or write to a full disk) fails, orbax stops awaiting the others, and asyncio reports each of
    their failures when it garbage-collects them, at any later moment of the run. Only failures that are
    themselves checkpoint read failures or storage failures are dropped; any other unretrieved exception is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or not record.getMessage().startswith(
            ("Task exception was never retrieved", "Future exception was never retrieved")
        ):
            return True
        error = record.exc_info[1] if record.exc_info else None
        return error is None or (read_failure(error) is None and storage_failure(error) is None)


def _install_log_filters() -> None:
    """Orbax's failure reports are filtered once per process, before the first read or write, whichever comes
    first: a read abandoned after the first failure may complete before that failure reaches any handler."""
    _drop_abandoned_callbacks()
    # The same abandoned reads, when the garbage collector finds the coroutines orbax created for them and never
    # awaited, each warn "coroutine '...' was never awaited", at whatever line of the run is running then. hat
    # itself has no coroutines, so no such warning in a hat process is one its user can act on.
    warnings.filterwarnings("ignore", message=r"coroutine '.*' was never awaited", category=RuntimeWarning)
    for name, kind in (("absl", _DropOrbaxStorageReports), ("asyncio", _DropAbandonedOrbaxTasks)):
        logger = logging.getLogger(name)
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())


def _is_closed_loop_callback(value: BaseException, tb: TracebackType | None) -> bool:
    frames = traceback.extract_tb(tb)
    return (
        isinstance(value, RuntimeError)
        and str(value) == "Event loop is closed"
        and bool(frames)
        and frames[-1].name == "_check_closed"
        and Path(frames[-1].filename).parts[-2:] == ("asyncio", "base_events.py")
    )


def _drop_abandoned_callbacks() -> None:
    """After a failed restore or save, orbax has closed the event loop its other reads and writes report to, but
    tensorstore still completes them: each completion's call into the closed loop raises RuntimeError('Event loop
    is closed'), which tensorstore hands to `sys.unraisablehook` from its own threads (hundreds of lines of
    tracebacks after the one-line error). Exactly those are dropped; everything else still reaches the previous
    hook."""
    previous = sys.unraisablehook
    if getattr(previous, "drops_abandoned_callbacks", False):
        return

    def hook(unraisable: Any) -> None:
        if not _is_closed_loop_callback(unraisable.exc_value, unraisable.exc_traceback):
            previous(unraisable)

    hook.drops_abandoned_callbacks = True
    sys.unraisablehook = hook


def _older_steps_hint(step_dir: Path) -> str:
    older = [s for s in _complete_steps(step_dir.parent) if s < int(step_dir.name)]
    if older:
        return f"point at an older step, e.g. {step_dir.parent / str(older[-1])}"
    return f"there is no older one in {step_dir.parent}: train again, or restore it from a backup"


def _reading(step_dir: Path, read: Callable[[], Any]) -> Any:
    """`read()`, with a failure to read the checkpoint at `step_dir` turned into a `CorruptCheckpointError`."""
    _install_log_filters()
    try:
        return read()
    except Exception as error:  # orbax raises bare Exceptions; read_failure narrows, everything else is re-raised
        reason = read_failure(error)
        if reason is None:
            raise
        raise CorruptCheckpointError(
            f"checkpoint {step_dir} does not restore ({reason}); {_older_steps_hint(step_dir)}", reason
        ) from None


class Checkpointer:
    """Saves and restores `{"params", "opt_state"}` pytrees with their metadata under `<workdir>/checkpoints`."""

    def __init__(self, workdir: str | Path, keep: int = 3, async_save: bool = True) -> None:
        self.directory = Path(workdir).resolve() / "checkpoints"
        _install_log_filters()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self.manager.latest_step()

    def save(self, step: int, state: dict[str, Any], config: Config, extra: dict[str, Any] | None = None) -> None:
        """Starts an (async) save of `state` at `step`; metadata records the config and the next data step.

        A full disk (here, or in the previous async save, which this waits for) is a `StorageError`; the
        unfinished save stays under orbax's temporary name, so the last complete checkpoint is still the latest."""
        meta = {"step": step, "data_step": step, "config": to_dict(config), **(extra or {})}
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        self._writing(lambda: self.manager.save(step, args=args))

    def _writing(self, write: Callable[[], Any]) -> Any:
        """`write()`, with a full (or unwritable) disk turned into a `StorageError` naming the last complete
        checkpoint. Orbax re-raises its save threads' errors as they were, tensorstore's inside bare Exceptions."""
        with writing(f"a checkpoint in {self.directory}", self._latest_complete):
            return write()

    def _latest_complete(self) -> str:
        steps = _complete_steps(self.directory) if self.directory.is_dir() else []
        if not steps:
            return "no checkpoint was completed"
        return f"checkpoint {steps[-1]} is the latest complete one, and the rerun resumes from it"

    def restore(self, step: int, abstract_state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Restores `(state, meta)` at `step` into the shapes, dtypes and shardings of `abstract_state`; files that do
        not read back are a `CorruptCheckpointError`."""
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore())
        restored = _reading(self.directory / str(step), lambda: self.manager.restore(step, args=args))
        return restored["state"], restored["meta"]

    def restore_latest(
        self, abstract_state: dict[str, Any], log: Callable[[str], None] = print
    ) -> tuple[int, dict[str, Any], dict[str, Any]] | None:
        """Restores the newest checkpoint that reads back, as `(step, state, meta)`; None when there is none.

        The restore itself is the verification: the newest step is restored and only on a read failure is the next
        older one tried, so a healthy run reads its checkpoint once per start, never a second time to check it.
        Newer checkpoints that failed are moved to `<workdir>/checkpoints.bad/` (kept for inspection, and out of
        the way of the steps this run saves again) and each is reported by `log` in one line. When none restores,
        nothing is moved and the `CheckpointError` says what to do.
        """
        steps = sorted(self.manager.all_steps(), reverse=True)
        failed: list[tuple[int, str]] = []
        for step in steps:
            try:
                state, meta = self.restore(step, abstract_state)
            except CorruptCheckpointError as error:
                failed.append((step, error.reason))
                continue
            for bad, reason in failed:
                moved = self._set_aside(bad)
                log(f"checkpoint {bad} does not restore ({reason}); moved it to {moved}, resuming from {step}")
            if failed:
                self.manager.reload()
            return step, state, meta
        if failed:
            newest, reason = failed[0]
            raise CheckpointError(
                f"no checkpoint in {self.directory} restores (newest, {newest}: {reason}; all {len(failed)} fail); "
                f"delete {self.directory} to train from scratch, or restore it from a backup"
            )
        return None

    def _set_aside(self, step: int) -> Path:
        bad_dir = self.directory.parent / "checkpoints.bad"
        bad_dir.mkdir(exist_ok=True)
        target, copy = bad_dir / str(step), 1
        while target.exists():  # the same step went bad in an earlier run too
            target, copy = bad_dir / f"{step}.{copy}", copy + 1
        (self.directory / str(step)).rename(target)
        return target

    def wait(self) -> None:
        """Blocks until pending async saves are on disk (a full disk is a `StorageError`)."""
        self._writing(self.manager.wait_until_finished)

    def close(self) -> None:
        """Waits for pending saves and releases the manager (a full disk is a `StorageError`)."""
        try:
            self.wait()
        finally:
            self._writing(self.manager.close)


def locate_checkpoint(path: str | Path) -> tuple[Path, int]:
    """Resolves a run's workdir, its `checkpoints` directory, or one step directory to (checkpoints dir, step)."""
    path = Path(path).resolve()
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path} (give a run's workdir or a checkpoint step directory)")
    if (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    if path.name.isdigit() and (path / "meta").exists():
        return path.parent, int(path.name)
    steps = _complete_steps(path)
    if not steps:
        raise CheckpointError(f"no complete checkpoint in {path} (train first, or point at a run's workdir)")
    return path, steps[-1]


def _complete_steps(directory: Path) -> list[int]:
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and (p / "meta").exists())


def load_config_from_checkpoint(path: str | Path) -> tuple[Config, Path, int]:
    """The run config stored with a checkpoint, and where that checkpoint is (unreadable metadata is a
    `CorruptCheckpointError`)."""
    directory, step = locate_checkpoint(path)
    manager = ocp.CheckpointManager(directory)
    args = ocp.args.Composite(meta=ocp.args.JsonRestore())
    try:
        meta = _reading(directory / str(step), lambda: manager.restore(step, args=args))["meta"]
    finally:
        manager.close()
    return config_from_dict(meta["config"]), directory, step


def restore_params(path: str | Path, abstract_params: Any) -> Any:
    """Restores only the parameters of a checkpoint (no optimizer state), e.g. for evaluation or generation; files
    that do not read back are a `CorruptCheckpointError` naming the step and an older one to use instead."""
    directory, step = locate_checkpoint(path)
    manager = ocp.CheckpointManager(directory)
    args = ocp.args.Composite(
        state=ocp.args.PyTreeRestore(
            item={"params": abstract_params},
            # Restore each array with the sharding of its target (one device unless the caller says otherwise).
            restore_args=ocp.checkpoint_utils.construct_restore_args({"params": abstract_params}),
            partial_restore=True,
        )
    )
    try:
        restored = _reading(directory / str(step), lambda: manager.restore(step, args=args))
    finally:
        manager.close()
    return restored["state"]["params"]
