"""Metric sinks: one JSON object per logged step in `<workdir>/metrics.jsonl`, mirrored to TensorBoard."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tensorboardX import SummaryWriter


class MetricWriter:
    """Appends `{"step": N, name: value, ...}` lines to metrics.jsonl and scalars to TensorBoard event files.

    On resume (`resume_step`), lines of later steps (written by a run that died after its last checkpoint) are
    dropped, so metrics.jsonl reads as one uninterrupted run; so is a last line cut short (a killed run, a full
    disk), which would otherwise run into the first new line. A run starting at step 0 keeps no earlier lines.
    Only the primary process writes (`enabled`).
    """

    def __init__(self, workdir: str | Path, enabled: bool = True, resume_step: int | None = None) -> None:
        self.path = Path(workdir) / "metrics.jsonl"
        self.enabled = enabled
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            kept = [row for row in read_metrics(self.path) if resume_step and row["step"] <= resume_step]
            temp = self.path.with_suffix(".jsonl.tmp")
            temp.write_text("".join(json.dumps(row) + "\n" for row in kept))
            temp.replace(self.path)
        self._file = self.path.open("a")
        self._tensorboard = SummaryWriter(str(Path(workdir) / "tensorboard"))

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        """Records `metrics` at `step`; non-finite floats are written as null in JSON (JSON has no NaN)."""
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
        self._file.write(json.dumps({"step": step, **clean}) + "\n")
        self._file.flush()
        for name, value in metrics.items():
            if isinstance(value, (int, float)):
                self._tensorboard.add_scalar(name, value, step)

    def close(self) -> None:
        """Flushes and closes both sinks."""
        if not self.enabled:
            return
        self._file.close()
        self._tensorboard.close()


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
