"""EqualInfoAC coding over several worker processes, each with its own M1: a way to use every CPU core.

On a CPU, M1's cached step is small (about 1 MFLOP per lane for the default M1), and XLA runs it on about one core
whatever the machine has. Segments are independent (segment `i` always runs in lane `i % batch_size`, and a lane's
result depends only on its own inputs: `equal_info` module docstring), so they can be split between processes
without changing a single bit of the output: each worker loads the same M1 checkpoint with the same computation
shape, codes its share of the segments under their own ids, and the results are put back in segment order.
`workers=1` (or an M1 not loaded from a checkpoint) codes in this process.

Two ways to split the work:

- `encode` / `decode`: one file's segments, cut into contiguous id ranges, one per worker (the container format);
- `encode_jobs`: independent lists of segments (the corpus preparation's chunks, each numbered from 0), one whole
  list per worker at a time, results yielded in job order, so a resumable writer appends them as before.

Workers start with the `spawn` method (jax is not fork-safe) and report coded bytes through a queue for the
progress bar. Each worker checks that it loaded the M1 the parent loaded (identity, device kind).
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import queue as queue_module
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from hat.compress.equal_info import M1, Windows, WindowSpec, decode_segments, encode_segments
from hat.errors import HatError

Progress = Callable[[int], None] | None
T = TypeVar("T")
# A worker batches its progress reports: one queue message per this many seconds.
REPORT_EVERY_S = 0.5


class WorkerError(HatError, RuntimeError):
    """A worker process loaded another M1 than the parent, or could not start."""


@dataclass(frozen=True)
class M1Recipe:
    """How a worker loads the parent's M1: its checkpoint and computation shape."""

    checkpoint: str
    batch_size: int
    max_window_bytes: int
    precision: int
    identity: str
    device: str


def default_workers(m1: M1) -> int:
    """One worker per CPU core this process may use when M1 runs on a CPU; 1 on an accelerator (one device is
    shared better by one process's larger batches than by several processes)."""
    if not m1.device.startswith("cpu"):
        return 1
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not Linux
        return max(os.cpu_count() or 1, 1)


# Per worker process: its M1 and the queue its progress goes to.
_worker_m1: M1 | None = None
_worker_queue = None


def _exit_with_parent(parent: int) -> None:
    """A worker outlives a parent that was killed (its queues stay open): it watches for that and exits."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _start_worker(recipe: M1Recipe, progress_queue) -> None:
    global _worker_m1, _worker_queue
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    m1 = M1.from_checkpoint(recipe.checkpoint, recipe.batch_size, recipe.max_window_bytes, recipe.precision)
    if (m1.identity, m1.device) != (recipe.identity, recipe.device):
        raise WorkerError(
            f"a worker loaded M1 {m1.identity} on {m1.device} from {recipe.checkpoint}, the parent {recipe.identity} "
            f"on {recipe.device} (was the checkpoint replaced while coding?)"
        )
    _worker_m1, _worker_queue = m1, progress_queue


class _Reporter:
    """A progress callback that sends the bytes coded to the parent at most every `REPORT_EVERY_S`."""

    def __init__(self) -> None:
        self.pending, self.last = 0, time.monotonic()

    def __call__(self, count: int) -> None:
        self.pending += count
        if time.monotonic() - self.last > REPORT_EVERY_S:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            _worker_queue.put(self.pending)
        self.pending, self.last = 0, time.monotonic()


# A task returns its result with the bytes it has not reported yet: a last queue message could arrive after the
# result, and the progress bar would end short.
def _encode_task(segments: list[bytes], spec: WindowSpec, segment_ids: list[int]) -> tuple[Windows, int]:
    report = _Reporter()
    windows = encode_segments(_worker_m1, segments, spec, report, segment_ids)
    return windows, report.pending


def _decode_task(
    windows: np.ndarray, counts: list[int], spec: WindowSpec, segment_ids: list[int], first_window: int
) -> tuple[list[bytes], int]:
    report = _Reporter()
    texts = decode_segments(_worker_m1, windows, counts, spec, segment_ids, first_window, report)
    return texts, report.pending


def concatenate(parts: Sequence[Windows]) -> Windows:
    """The windows of consecutive runs of segments as one run."""
    return Windows(*(np.concatenate([getattr(p, name) for p in parts]) for name in ("values", "lengths", "counts")))


def split_ranges(num: int, parts: int) -> list[range]:
    """`range(num)` cut into at most `parts` contiguous, non-empty ranges of nearly equal size."""
    bounds = np.linspace(0, num, min(parts, num) + 1).round().astype(int)
    return [range(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _result(future: Future, progress: Progress):
    """A job's result (its unreported bytes go to `progress`); an exception raised in the worker is raised here
    (with its traceback), a worker that died or could not start is a `WorkerError`."""
    try:
        result, unreported = future.result()
    except BrokenProcessPool as error:
        raise WorkerError(
            "a compression worker process died or could not start (its error, if any, is printed above); rerun "
            "with --workers 1 (data.eqinfo.workers=1) to code in this process"
        ) from error
    if progress is not None and unreported:
        progress(unreported)
    return result


class Coders:
    """EqualInfoAC coding with `m1` in this process (`workers=1`) or in `workers` processes that load the same M1
    (0: `default_workers(m1)`; only for an M1 loaded by `M1.from_checkpoint`). Use as a context manager: the
    workers start on first use and stop at exit. A file is split into at most as many shares as it has segments
    per lane (`m1.batch_size` segments fill one round of lanes), so small files are coded in this process."""

    def __init__(self, m1: M1, workers: int = 1) -> None:
        if workers < 0:
            raise ValueError(f"workers must be 0 (one per CPU core, `default_workers`) or positive, got {workers}")
        self.m1 = m1
        self.workers = (workers or default_workers(m1)) if m1.checkpoint is not None else 1
        self._pool: ProcessPoolExecutor | None = None
        self._queue = None

    @property
    def started(self) -> bool:
        """Whether worker processes were started (the work was large enough to split)."""
        return self._pool is not None

    def __enter__(self) -> Coders:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def _start(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("spawn")
            self._queue = context.Queue()
            m1 = self.m1
            recipe = M1Recipe(m1.checkpoint, m1.batch_size, m1.max_window_bytes, m1.precision, m1.identity, m1.device)
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=context, initializer=_start_worker, initargs=(recipe, self._queue)
            )
        return self._pool

    def _await(self, future: Future, progress: Progress):
        """The job's result once it is done, feeding `progress` from the workers' reports meanwhile."""
        while not future.done():
            self._drain(progress, timeout=0.2)
        self._drain(progress, timeout=0)
        return _result(future, progress)

    def _drain(self, progress: Progress, timeout: float) -> None:
        try:
            while True:
                count = self._queue.get(timeout=timeout) if timeout else self._queue.get_nowait()
                if progress is not None:
                    progress(count)
                timeout = 0
        except queue_module.Empty:
            pass

    def _shares(self, num_segments: int) -> list[range]:
        # Every step runs all lanes, so a worker with a partly filled batch costs as much per step as a full one:
        # splitting pays only where one process would run more than one segment per lane.
        return split_ranges(num_segments, min(self.workers, -(-num_segments // self.m1.batch_size)))

    def encode(self, segments: Sequence[bytes], spec: WindowSpec, progress: Progress = None) -> Windows:
        """`encode_segments(m1, segments, spec, progress)`, the same windows, over the workers."""
        shares = self._shares(len(segments))
        if len(shares) <= 1:
            return encode_segments(self.m1, segments, spec, progress)
        pool = self._start()
        futures = [pool.submit(_encode_task, list(segments[r.start : r.stop]), spec, list(r)) for r in shares]
        return concatenate([self._await(f, progress) for f in futures])

    def decode(
        self, windows: np.ndarray, counts: Sequence[int], spec: WindowSpec, progress: Progress = None
    ) -> list[bytes]:
        """`decode_segments(m1, windows, counts, spec, progress=progress)`, the same bytes, over the workers."""
        counts = [int(c) for c in counts]
        shares = self._shares(len(counts))
        if len(shares) <= 1:
            return decode_segments(self.m1, windows, counts, spec, progress=progress)
        pool = self._start()
        firsts = np.concatenate([[0], np.cumsum(counts)]).astype(int)
        futures = [
            pool.submit(
                _decode_task,
                windows[firsts[r.start] : firsts[r.stop]],
                counts[r.start : r.stop],
                spec,
                list(r),
                int(firsts[r.start]),
            )
            for r in shares
        ]
        return [text for f in futures for text in self._await(f, progress)]

    def encode_jobs(
        self, jobs: Iterable[tuple[T, Sequence[bytes]]], spec: WindowSpec, progress: Progress = None
    ) -> Iterator[tuple[T, Windows]]:
        """`(tag, windows)` of each `(tag, segments)` job (segments numbered from 0, as `encode_segments` numbers
        them), in job order; up to `workers` jobs run at once, each in one worker."""
        jobs = iter(jobs)
        first = next(jobs, None)
        second = next(jobs, None) if self.workers > 1 else None
        if second is None:  # one worker, or one job (split by segment ranges where it has more than one round)
            for tag, segments in itertools.chain([first] if first else [], jobs):
                yield tag, self.encode(segments, spec, progress)
            return
        pool = self._start()
        pending: list[tuple[T, Future]] = []
        for tag, segments in itertools.chain([first, second], jobs):
            pending.append((tag, pool.submit(_encode_task, list(segments), spec, list(range(len(segments))))))
            while len(pending) >= self.workers:
                yield from self._ready_in_order(pending, progress)
        while pending:
            yield from self._ready_in_order(pending, progress)

    def _ready_in_order(self, pending: list[tuple[T, Future]], progress: Progress) -> Iterator[tuple[T, Windows]]:
        """Waits until the oldest job is done (reporting progress), then yields every finished job at the front."""
        tag, future = pending.pop(0)
        yield tag, self._await(future, progress)
        while pending and pending[0][1].done():
            tag, future = pending.pop(0)
            yield tag, _result(future, progress)
