"""Fault injection: each fault a run meets in the wild (a checkpoint that does not read back, a second writer, an
unwritable workdir, a metrics file cut mid-line, a full disk) is one line for the user, and what was good survives."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO, TINY_HAT, cli

TINY = [
    *TINY_HAT,
    "data.seq_bytes=256", "data.max_words=96", "data.eval_fraction=0.3", "train.batch_size=4",
    "train.log_every=2", "train.eval_every=100", "train.checkpoint_every=2", "train.eval_sequences=0",
    "train.warmup_steps=2",
]  # fmt: skip

# Every fault is injected into a tiny trained run.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    for i, path in enumerate(sorted(Path(json.__file__).parent.glob("*.py"))):
        (root / f"f{i}.py").write_bytes(path.read_bytes())
    return root


def train_args(workdir: Path, corpus: Path, steps: int, *extra: str) -> list[str]:
    return [f"workdir={workdir}", f"data.corpus=['{corpus}']", f"train.steps={steps}", *TINY, *extra]


@pytest.fixture(scope="module")
def finished_run(corpus: Path, tmp_path_factory) -> Path:
    """A run trained 4 steps, with checkpoints 2 and 4; tests damage copies of it."""
    workdir = tmp_path_factory.mktemp("finished") / "run"
    assert cli("train")(train_args(workdir, corpus, 4)) == 0
    return workdir


@pytest.fixture
def run_copy(finished_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


def data_files(step_dir: Path) -> list[Path]:
    """The array data files of a checkpoint step (tensorstore's OCDBT chunks)."""
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files
    return files


def damage(step_dir: Path, how: str) -> None:
    """Flips bytes in, cuts in half, or deletes every data file of a checkpoint, as a bad disk or a careless hand."""
    for path in data_files(step_dir):
        data = bytearray(path.read_bytes())
        if how == "flip":
            data[::7] = bytes(b ^ 0xFF for b in data[::7])
            path.write_bytes(bytes(data))
        elif how == "truncate":
            path.write_bytes(bytes(data[: len(data) // 2]))
        else:
            path.unlink()


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and err.count("\n") == 1, err
    return lines[0]


def test_training_resumes_from_the_newest_checkpoint_that_restores(run_copy: Path, corpus: Path, capsys):
    damage(run_copy / "checkpoints" / "4", "flip")
    with (run_copy / "metrics.jsonl").open("a") as metrics:
        metrics.write('{"step": 5, "train/lo')  # the run was killed mid-line
    capsys.readouterr()
    assert cli("train")(train_args(run_copy, corpus, 6)) == 0
    out = capsys.readouterr()
    skipped = [line for line in (out.out + out.err).splitlines() if "does not restore" in line]
    assert len(skipped) == 1, out
    assert skipped[0].startswith("checkpoint 4 does not restore (data corrupt: ")
    assert skipped[0].endswith(f"moved it to {run_copy / 'checkpoints.bad' / '4'}, resuming from 2")
    assert f"resumed from {run_copy / 'checkpoints' / '2'} at step 2" in out.out + out.err
    assert sorted(p.name for p in (run_copy / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "4", "6"]
    assert (run_copy / "checkpoints.bad" / "4" / "state").is_dir()  # kept for inspection
    rows = [json.loads(line) for line in (run_copy / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if "train/loss" in row] == [2, 4, 6]


def test_a_metrics_file_cut_mid_line_loses_only_that_line(tmp_path: Path):
    from hat.train.metrics import MetricWriter, read_metrics

    cut = '{"step": 0, "params/total": 1}\n{"step": 2, "train/loss": 5.0}\n{"step": 4, "train/loss": 4.'
    for resume_step, kept in [(2, [0, 2]), (0, [])]:
        (tmp_path / "metrics.jsonl").write_text(cut)
        writer = MetricWriter(tmp_path, resume_step=resume_step)
        writer.write(resume_step + 1, {"train/loss": 3.0})
        writer.close()
        assert [row["step"] for row in read_metrics(tmp_path)] == [*kept, resume_step + 1]


@pytest.mark.parametrize("how", ["flip", "truncate", "delete"])
def test_evaluating_a_bad_checkpoint_names_it_and_an_older_one(run_copy: Path, how: str, capsys):
    damage(run_copy / "checkpoints" / "4", how)
    assert cli("evaluate")([str(run_copy), __file__]) == 2
    line = one_line(capsys.readouterr().err)
    bad, older = run_copy / "checkpoints" / "4", run_copy / "checkpoints" / "2"
    assert line.startswith(f"error: checkpoint {bad} does not restore (")
    assert line.endswith(f"point at an older step, e.g. {older}")


def test_generate_and_export_of_a_bad_checkpoint_are_one_line(run_copy: Path, tmp_path: Path, capsys):
    damage(run_copy / "checkpoints" / "4", "truncate")
    assert cli("generate")([str(run_copy), "--prompt", "def ", "--max-new-bytes", "2"]) == 2
    assert "does not restore" in one_line(capsys.readouterr().err)
    assert cli("export")([str(run_copy / "checkpoints" / "4"), str(tmp_path / "out")]) == 2
    assert "does not restore" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_corrupt_metadata_is_one_line(run_copy: Path, capsys):
    (run_copy / "checkpoints" / "4" / "meta" / "metadata").write_text('{"step": 4, "conf')
    assert cli("evaluate")([str(run_copy), __file__]) == 2
    assert "does not restore (metadata corrupt: " in one_line(capsys.readouterr().err)


def test_init_from_a_bad_checkpoint_is_one_line(run_copy: Path, corpus: Path, tmp_path: Path, capsys):
    damage(run_copy / "checkpoints" / "2", "delete")
    bad = run_copy / "checkpoints" / "2"
    assert cli("train")(train_args(tmp_path / "new", corpus, 2, f"train.init_from={bad}")) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"error: train.init_from: checkpoint {bad} does not restore (")
    assert line.endswith(f"no older one in {run_copy / 'checkpoints'}: train again, or restore it from a backup")


def test_training_on_only_bad_checkpoints_is_one_line_and_moves_nothing(run_copy: Path, corpus: Path, capsys):
    for step in ("2", "4"):
        damage(run_copy / "checkpoints" / step, "truncate")
    assert cli("train")(train_args(run_copy, corpus, 6)) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"error: no checkpoint in {run_copy / 'checkpoints'} restores (newest, 4: data corrupt")
    assert f"delete {run_copy / 'checkpoints'} to train from scratch" in line
    assert not (run_copy / "checkpoints.bad").exists()


def hold_in_subprocess(workdir: Path) -> subprocess.Popen:
    """Another process holding `workdir` as a training run does, until killed."""
    code = (
        "import sys, time; from pathlib import Path; from hat.train.workdir import hold_workdir\n"
        "with hold_workdir(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(600)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    holder = subprocess.Popen([sys.executable, "-c", code, str(workdir)], stdout=subprocess.PIPE, text=True, env=env)
    assert holder.stdout.readline() == "held\n"
    return holder


def test_a_second_writer_is_refused_and_a_killed_one_leaves_no_lock(corpus: Path, tmp_path: Path, capsys):
    workdir = tmp_path / "run"
    workdir.mkdir()
    holder = hold_in_subprocess(workdir)
    try:
        assert cli("train")(train_args(workdir, corpus, 2)) == 2
        line = one_line(capsys.readouterr().err)
        assert line == (
            f"error: workdir {workdir} is in use by another training process (pid {holder.pid}); wait for it to "
            "finish or stop it, or give this run another workdir"
        )
        assert not (workdir / "config.yaml").exists()  # the refused run wrote nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (workdir / ".lock").exists()  # left behind by the killed holder, and no obstacle
    assert cli("train")(train_args(workdir, corpus, 2)) == 0
    assert (workdir / "checkpoints" / "2").is_dir()


def test_a_workdir_that_cannot_be_created_or_written_is_one_line(corpus: Path, tmp_path: Path, capsys):
    (tmp_path / "file").write_text("")
    assert cli("train")(train_args(tmp_path / "file" / "run", corpus, 2)) == 2
    assert one_line(capsys.readouterr().err).startswith(f"error: cannot create workdir {tmp_path / 'file' / 'run'}: ")
    (tmp_path / "run" / "config.yaml").mkdir(parents=True)  # a path that cannot be written as a file
    assert cli("train")(train_args(tmp_path / "run", corpus, 2)) == 2
    assert one_line(capsys.readouterr().err).startswith(f"error: cannot write {tmp_path / 'run' / 'config.yaml'}: ")

