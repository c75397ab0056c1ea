"""Real processes: two JAX processes on 127.0.0.1 train like one, and a run killed with SIGKILL (between saves and
in the middle of an async save) resumes to exactly the losses of a run that was never interrupted."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import REPO, TINY_HAT

from hat.train.metrics import read_metrics

pytestmark = pytest.mark.slow  # separate processes
TINY = [
    *TINY_HAT,
    "data.seq_bytes=128", "data.max_words=48", "data.eval_fraction=0", "train.batch_size=4",
    "train.warmup_steps=1", "train.log_every=1", "train.peak_flops_per_device=1e9",
    "data.corpus=['" + str(Path(json.__file__).parent) + "']",
]  # fmt: skip


def train_command(workdir: Path, cache: Path, *overrides: str, fake_devices: int = 0) -> list[str]:
    extra = ["--fake-devices", str(fake_devices)] if fake_devices else []
    return [sys.executable, str(REPO / "train.py"), *extra, f"workdir={workdir}", f"data.cache_dir={cache}", *TINY,
            *overrides]  # fmt: skip


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    return env | {"PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}


def losses(workdir: Path) -> dict[int, float]:
    return {row["step"]: row["train/loss"] for row in read_metrics(workdir) if "train/loss" in row}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_train_like_one(tmp_path: Path):
    cache = tmp_path / "data"
    steps = ["train.steps=3", "train.checkpoint_every=3"]
    single = subprocess.run(
        train_command(tmp_path / "one", cache, *steps, fake_devices=2), env=environment(), capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]
    address = f"127.0.0.1:{free_port()}"
    workers = [
        subprocess.Popen(
            train_command(
                tmp_path / "two",
                cache,
                *steps,
                f"distributed.coordinator_address={address}",
                "distributed.num_processes=2",
                f"distributed.process_id={rank}",
            ),
            env=environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for rank in range(2)
    ]
    outputs = [worker.communicate(timeout=600) for worker in workers]
    for worker, (_, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    assert "over 2 process(es)" in outputs[0][1] + outputs[0][0]
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert sorted(one) == sorted(two) == [1, 2, 3]
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-5)
    assert (tmp_path / "two" / "checkpoints" / "3").is_dir()


def _checkpoint_in_flight(checkpoints: Path) -> bool:
    try:
        return any("tmp" in name for name in os.listdir(checkpoints))
    except FileNotFoundError:
        return False


def _kill_when(proc: subprocess.Popen, condition, timeout: float = 600) -> bool:
    """Polls `condition` every millisecond; SIGKILLs `proc` as soon as it holds. False if the run ended first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        if condition():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.001)
    proc.kill()
    raise AssertionError("training did not reach the kill point in time")


def test_sigkill_then_resume_gives_identical_losses(tmp_path: Path):
    cache = tmp_path / "data"
    run = ["train.steps=12", "train.checkpoint_every=2", "train.keep_checkpoints=2"]
    straight = subprocess.run(
        train_command(tmp_path / "straight", cache, *run), env=environment(), capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert straight.returncode == 0, straight.stderr[-3000:]
    reference = losses(tmp_path / "straight")
    assert sorted(reference) == list(range(1, 13))

    killed = tmp_path / "killed"
    # Between saves: once step 5 is logged (checkpoint 4 done, 6 not started).
    proc = subprocess.Popen(train_command(killed, cache, *run), env=environment(), stderr=subprocess.DEVNULL)
    assert _kill_when(proc, lambda: 5 in losses(killed) if (killed / "metrics.jsonl").exists() else False)
    # During an async save: the moment orbax's temporary checkpoint directory appears.
    proc = subprocess.Popen(train_command(killed, cache, *run), env=environment(), stderr=subprocess.DEVNULL)
    assert _kill_when(proc, lambda: _checkpoint_in_flight(killed / "checkpoints")), "no save was caught in flight"
    assert _checkpoint_in_flight(killed / "checkpoints")  # the half-written checkpoint is still there

    resumed = subprocess.run(
        train_command(killed, cache, *run), env=environment(), capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr + resumed.stdout
    assert losses(killed) == reference  # bit-identical on CPU
