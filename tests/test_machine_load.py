"""`hat.machine_load.OtherCPU`: the benchmarks' measure of how much of the machine other processes took."""

import subprocess
import sys
import time

import pytest

from hat import machine_load
from hat.machine_load import OtherCPU, machine_busy_s

BURN = "import time\nend = time.process_time() + 3.0\nwhile time.process_time() < end: pass"


@pytest.mark.skipif(machine_busy_s() is None, reason="needs /proc/stat")
def test_a_process_we_have_not_waited_for_counts_as_another():
    child = subprocess.Popen([sys.executable, "-c", BURN])
    try:
        time.sleep(0.3)  # past its start-up
        with OtherCPU() as others:
            time.sleep(1.0)
    finally:
        child.kill()
        child.wait()
    assert others.cores > 0.5 and others.busy  # it burns one core (other work can only add to it)


def test_our_own_and_our_waited_for_childrens_time_is_subtracted(monkeypatch):
    busy, own, wall = iter([100.0, 103.0]), iter([10.0, 11.0]), iter([50.0, 52.0])
    monkeypatch.setattr(machine_load, "machine_busy_s", lambda: next(busy))
    monkeypatch.setattr(machine_load, "own_cpu_s", lambda: next(own))
    monkeypatch.setattr(machine_load, "wall_s", lambda: next(wall))
    with OtherCPU() as others:
        pass
    assert others.cores == pytest.approx((3.0 - 1.0) / 2.0) and others.busy
