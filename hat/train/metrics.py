"""Metric sinks: one JSON object per logged step in `<workdir>/metrics.jsonl`, mirrored to TensorBoard."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto.event_pb2 import Event
from tensorboardX.proto.summary_pb2 import Summary

from hat.data.atomic import replace_file
from hat.errors import writing

# What survives when a metrics write fails: the file is only appended to, and a resumed run drops a cut last line.
_KEPT = "the lines written before are kept, and a cut last line is dropped when the run resumes"


class MetricWriter:
    """Appends `{"step": N, name: value, ...}` lines to metrics.jsonl and scalars to TensorBoard event files.

    On resume (`resume_step`), lines of later steps (written by a run that died after its last checkpoint) are
    dropped, so metrics.jsonl reads as one uninterrupted run; so is a last line cut short (a killed run, a full
    disk), which would otherwise run into the first new line. A run starting at step 0 keeps no earlier lines.
    Only the primary process writes (`enabled`).

    Event files are written in this thread (tensorboardX's `EventsWriter`), not by `SummaryWriter`'s worker
    thread: that thread dies on a full disk, and the next scalars then block forever on its full queue. Here a
    full disk is one `hat.errors.StorageError` from `write` or `close`.
    """

    def __init__(self, workdir: str | Path, enabled: bool = True, resume_step: int | None = None) -> None:
        self.path = Path(workdir) / "metrics.jsonl"
        self.enabled = enabled
        if not enabled:
            return
        with writing(f"the metrics {self.path}", _KEPT):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if resume_step is not None and self.path.exists():
                kept = [row for row in read_metrics(self.path) if resume_step and row["step"] <= resume_step]
                replace_file(self.path, "".join(json.dumps(row) + "\n" for row in kept))
            self._file = self.path.open("a")
        self.events_dir = Path(workdir) / "tensorboard"
        with writing(f"the TensorBoard events in {self.events_dir}", _KEPT):
            self.events_dir.mkdir(exist_ok=True)
            self._events = EventsWriter(str(self.events_dir / "events"))

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        """Records `metrics` at `step`; non-finite floats are written as null in JSON (JSON has no NaN)."""
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
        with writing(f"the metrics {self.path}", _KEPT):
            self._file.write(json.dumps({"step": step, **clean}) + "\n")
            self._file.flush()
        scalars = [Summary.Value(tag=k, simple_value=v) for k, v in metrics.items() if isinstance(v, (int, float))]
        with writing(f"the TensorBoard events in {self.events_dir}", _KEPT):
            self._events.write_event(Event(wall_time=time.time(), step=step, summary=Summary(value=scalars)))
            self._events.flush()

    def close(self) -> None:
        """Flushes and closes both sinks; both are closed even when the first fails."""
        if not self.enabled:
            return
        try:
            with writing(f"the metrics {self.path}", _KEPT):
                self._file.close()
        finally:
            with writing(f"the TensorBoard events in {self.events_dir}", _KEPT):
                self._events.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Reads a metrics.jsonl file (a run's workdir or the file itself) into a list of dicts."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short when the process was killed mid-write
    return rows
