"""How much of the machine other processes took while a benchmark measured (for `benchmarks/`).

The load average cannot tell: it counts the benchmark's own threads (an arm that just trained leaves a 2-core
machine at ~2 for minutes), so right after a calibration run it reads "busy" on an idle machine. `OtherCPU` takes
the machine's busy time from /proc/stat and subtracts what this process and its waited-for children used over the
same interval; what remains is everyone else's share, in cores.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

# Average cores others may use before a measurement counts as disturbed (a shell, an editor, sshd stay far below).
BUSY_OTHER_CORES = 0.15


def machine_busy_s() -> float | None:
    """CPU seconds all cores have spent busy since boot (None where /proc/stat is missing)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal (guest time is already inside user and nice)
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wall_s() -> float:
    """A monotonic clock, in seconds."""
    return time.perf_counter()


def own_cpu_s() -> float:
    """CPU seconds of this process and of the children it has waited for."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


class OtherCPU:
    """Context manager: `cores` is the average number of cores other processes kept busy while the block ran
    (NaN where /proc/stat is missing). Children must be waited for inside the block to count as ours."""

    cores: float = float("nan")

    def __enter__(self) -> OtherCPU:
        self._start = machine_busy_s(), own_cpu_s(), wall_s()
        return self

    def __exit__(self, *exc: object) -> None:
        busy, own, wall = machine_busy_s(), own_cpu_s(), wall_s()
        if busy is not None and self._start[0] is not None and wall > self._start[2]:
            others = (busy - self._start[0]) - (own - self._start[1])
            self.cores = max(0.0, others / (wall - self._start[2]))

    @property
    def busy(self) -> bool:
        return self.cores > BUSY_OTHER_CORES
