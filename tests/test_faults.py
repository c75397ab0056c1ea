"""Fault injection: each fault a run meets in the wild (a checkpoint that does not read back, a second writer, an
unwritable workdir, a metrics file cut mid-line, a full disk, corpus files that change between runs, a conversion
or corpus compression killed mid-write) is one line for the user, and what was good survives.

A full disk is a small tmpfs (mounting one needs root; the tests are skipped with the reason elsewhere), made
larger to "free space" for the rerun."""

import gc
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import OPT_OUT, REPO, TINY_HAT, cli

TINY = [
    *TINY_HAT,
    "data.seq_bytes=256", "data.max_words=96", "data.eval_fraction=0.3", "train.batch_size=4",
    "train.log_every=2", "train.eval_every=100", "train.checkpoint_every=2", "train.eval_sequences=0",
    "train.warmup_steps=2", "train.peak_flops_per_device=1e9",
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


def test_training_resumes_from_the_newest_checkpoint_that_restores(run_copy: Path, corpus: Path, capsys, caplog):
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
    # The reads orbax abandoned when the first one failed are reported by asyncio when collected, at any later
    # moment of the run (a traceback each; when is up to the garbage collector, see the test below): none of them
    # reaches the log.
    gc.collect()
    assert not [record for record in caplog.records if record.levelname == "ERROR"]


def test_asyncio_reports_of_abandoned_checkpoint_reads_and_writes_are_dropped_and_others_kept(tmp_path: Path, caplog):
    from hat.checkpoint.run import Checkpointer

    Checkpointer(tmp_path / "run")  # installs the filters, as every training, evaluation or export does
    corrupt = ValueError('DATA_LOSS: Error reading "params.x/.zarray" in OCDBT database at local file "/r/": bad')
    full = ValueError("RESOURCE_EXHAUSTED: Failed to write 9 bytes: No space left on device [os_error_code='28']")
    bug = ValueError("a bug in a task of our own")
    for error in [corrupt, full, bug]:
        try:
            raise error
        except Exception as raised:  # the record carries a real traceback, as asyncio's does
            for kind in ["Task", "Future"]:
                logging.getLogger("asyncio").error(f"{kind} exception was never retrieved", exc_info=raised)
    assert [record.exc_info[1] for record in caplog.records] == [bug, bug]


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


def test_training_on_only_bad_checkpoints_is_one_line_and_moves_nothing(run_copy: Path, corpus: Path):
    for step in ("2", "4"):
        damage(run_copy / "checkpoints" / step, "truncate")
    # In a process of its own, so that everything it prints counts: orbax's reads abandoned after the first failure
    # still complete into its closed event loop, and once printed hundreds of lines of tracebacks after the error.
    done = subprocess.run(
        [sys.executable, "-m", "hat.cli.train", *train_args(run_copy, corpus, 6)], env=subprocess_env(),
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2
    line = one_line(done.stderr)
    assert line.startswith(f"error: no checkpoint in {run_copy / 'checkpoints'} restores (newest, 4: data corrupt")
    assert f"delete {run_copy / 'checkpoints'} to train from scratch" in line
    assert not (run_copy / "checkpoints.bad").exists()


def subprocess_env() -> dict[str, str]:
    """The environment of a command run in a process of its own, importing hat from this checkout."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def hold_in_subprocess(workdir: Path) -> subprocess.Popen:
    """Another process holding `workdir` as a training run does, until killed."""
    code = (
        "import sys, time; from pathlib import Path; from hat.train.workdir import hold_workdir\n"
        "with hold_workdir(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(600)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(workdir)], stdout=subprocess.PIPE, text=True, env=subprocess_env()
    )
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


# --- a full disk -----------------------------------------------------------------------------------------------------


class SmallDisk:
    """A tmpfs mounted at `path`; `resize` frees space (or takes it away) for the next attempt."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def resize(self, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True)

    def fill(self) -> None:
        """Takes every free block (a file written until ENOSPC, in ever smaller pieces)."""
        with (self.path / "filler").open("ab", buffering=0) as filler:
            for piece in (65536, 4096, 1):
                try:
                    while True:
                        filler.write(b"\0" * piece)
                except OSError:
                    pass

    def entries(self, under: str = "") -> list[str]:
        return sorted(p.name for p in (self.path / under).iterdir())


# Room for the tiny run's prepared corpus (train and held-out, 9.25 MB each: 1M-element chunks), its small files and
# one checkpoint (1.65 MB), not for a second checkpoint beside it.
CHECKPOINT_DISK = "20900k"


@pytest.fixture
def small_disk(tmp_path: Path):
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip() or done.returncode}")
    yield SmallDisk(mount)
    subprocess.run(["umount", "-l", str(mount)], check=False)


def last_line(err: str) -> str:
    """The one `error:` line of a command that got as far as drawing progress bars (tqdm redraws with carriage
    returns, and a bar cut short by the error stays on the error's line): it ends the output, and nothing else was
    printed, no traceback, no error record of a log."""
    assert err.count("error:") == 1 and err.endswith("\n") and "Traceback" not in err and "ERROR" not in err, err
    last = err.replace("\r", "\n").splitlines()[-1]
    return last[last.index("error:") :]


def full_disk_line(err: str, what: str) -> str:
    line = last_line(err)
    assert line.startswith(f"error: cannot write {what}") and "no space left on the device" in line, line
    assert line.endswith("free space and rerun"), line
    return line


def test_a_full_disk_while_preparing_the_corpus_or_saving_a_checkpoint_is_one_line_and_the_rerun_resumes(
    small_disk: SmallDisk, corpus: Path, capsys, caplog
):
    workdir, cache = small_disk.path / "run", small_disk.path / "cache"
    args = train_args(workdir, corpus, 4, f"data.cache_dir={cache}")
    # 64 KB: not even the prepared corpus fits (its arrays are 1M-element chunks).
    assert cli("train")(args) == 2
    full_disk_line(capsys.readouterr().err, f"the prepared train corpus {cache}/train-")
    assert small_disk.entries("cache") == []  # the partial directory was deleted
    # Room for the corpus and one checkpoint, not for a second one beside it.
    small_disk.resize(CHECKPOINT_DISK)
    assert cli("train")(args) == 2
    line = full_disk_line(capsys.readouterr().err, f"a checkpoint in {workdir / 'checkpoints'}: ")
    assert "checkpoint 2 is the latest complete one, and the rerun resumes from it" in line
    # Orbax's own reports of its failed save threads (tracebacks through absl's logger) are not shown beside it.
    assert not [record for record in caplog.records if record.levelname == "ERROR"]
    # The unfinished save stays under orbax's temporary name: no step directory but 2 looks complete.
    assert [p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()] == ["2"]
    small_disk.resize("64m")
    assert cli("train")(args) == 0
    out = capsys.readouterr()
    assert f"resumed from {workdir / 'checkpoints' / '2'} at step 2" in out.out + out.err
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [2, 4]
    from hat.train.metrics import read_metrics

    assert [row["step"] for row in read_metrics(workdir) if "train/loss" in row] == [2, 4]


def test_a_full_disk_while_building_a_token_corpus_is_one_line_and_the_rerun_builds_it(
    small_disk: SmallDisk, corpus: Path, tmp_path: Path, capsys
):
    from hat.config import load_config
    from hat.data.tokens import prepare_bpe_data

    cache = small_disk.path / "cache"
    args = [
        str(REPO / "configs/bpe_tiny.yaml"), f"workdir={tmp_path / 'run'}", f"data.corpus=['{corpus}']",
        f"data.cache_dir={cache}", "model.vocab_size=300", "data.bpe.vocab_size=300", "train.steps=2", *OPT_OUT,
    ]  # fmt: skip
    small_disk.resize("1m")  # the tokenizer fits, the token arrays do not
    assert cli("train")(args) == 2
    full_disk_line(capsys.readouterr().err, f"the train token corpus {cache}/train-bpe-")
    assert [name for name in small_disk.entries("cache") if not name.startswith("tokenizer-")] == []
    small_disk.resize("64m")
    data = prepare_bpe_data(load_config(args[0], args[1:]))
    assert data.train.store.num_text_bytes > 0 and (data.train.store.path / "manifest.json").is_file()


def test_a_full_disk_during_export_or_conversion_is_one_line_and_the_rerun_writes_it(
    small_disk: SmallDisk, finished_run: Path, tmp_path: Path, capsys
):
    out = small_disk.path / "export"
    assert cli("export")([str(finished_run), str(out)]) == 2
    full_disk_line(capsys.readouterr().err, f"the export {out}: ")
    assert small_disk.entries() == []
    hf_dir = llama_dir(tmp_path / "llama")
    store = small_disk.path / "store"
    assert cli("convert")([str(hf_dir), str(store)]) == 2
    full_disk_line(capsys.readouterr().err, f"the parameter store {store}: ")
    assert small_disk.entries() == []
    # The conversion stores each vocabulary table in one chunk of 2^24 elements (64 MiB, stored whole), however
    # small the table.
    small_disk.resize("320m")
    assert cli("export")([str(finished_run), str(out)]) == 0
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert cli("convert")([str(hf_dir), str(store)]) == 0
    assert (store / "hat_params.json").is_file()


def test_a_full_disk_under_the_metrics_is_one_line_and_keeps_the_lines_before(small_disk: SmallDisk):
    from hat.errors import StorageError
    from hat.train.metrics import MetricWriter, read_metrics

    small_disk.resize("1m")
    writer = MetricWriter(small_disk.path)
    writer.write(0, {"train/loss": 5.0})
    small_disk.fill()
    # tensorboardX's own writer thread would die here, and the next scalars would block forever on its queue.
    with pytest.raises(StorageError, match=r"cannot write the metrics .*metrics.jsonl: no space left on the device"):
        writer.write(2, {"train/loss": 4.0, "note": "x" * 100_000})
    (small_disk.path / "filler").unlink()
    writer.close()
    assert [row["step"] for row in read_metrics(small_disk.path)][:1] == [0]


def test_a_full_disk_under_a_tokenizer_file_keeps_the_previous_one(small_disk: SmallDisk):
    from hat.errors import StorageError
    from hat.text.bpe import train_tokenizer

    small_disk.resize("1m")
    path = small_disk.path / "tokenizer.json"
    train_tokenizer([b"def f(x):\n    return x\n" * 50], 260).save(path)
    before = path.read_bytes()
    small_disk.fill()
    with pytest.raises(StorageError, match=f"cannot write the tokenizer {path}: no space left on the device; the prev"):
        train_tokenizer([b"class A:\n    pass\n" * 50], 270).save(path)
    assert path.read_bytes() == before and small_disk.entries() == ["filler", "tokenizer.json"]


def llama_dir(path: Path) -> Path:
    """A tiny Hugging Face Llama directory (config.json, model.safetensors with random weights), written with
    numpy: what `convert_llama.py` reads, without torch."""
    from safetensors.numpy import save_file

    hidden, layers, inner, vocab = 32, 2, 64, 300
    config = {
        "model_type": "llama", "hidden_size": hidden, "num_attention_heads": 2, "num_key_value_heads": 2,
        "num_hidden_layers": layers, "intermediate_size": inner, "vocab_size": vocab, "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
    }  # fmt: skip
    rng = np.random.default_rng(0)
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "lm_head.weight": (vocab, hidden)}
    shapes["model.norm.weight"] = (hidden,)
    for i in range(layers):
        for name, shape in [
            ("self_attn.q_proj", (hidden, hidden)), ("self_attn.k_proj", (hidden, hidden)),
            ("self_attn.v_proj", (hidden, hidden)), ("self_attn.o_proj", (hidden, hidden)),
            ("mlp.gate_proj", (inner, hidden)), ("mlp.up_proj", (inner, hidden)), ("mlp.down_proj", (hidden, inner)),
            ("input_layernorm", (hidden,)), ("post_attention_layernorm", (hidden,)),
        ]:  # fmt: skip
            shapes[f"model.layers.{i}.{name}.weight"] = shape
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    save_file({name: rng.normal(0, 0.02, shape).astype(np.float32) for name, shape in shapes.items()},
              path / "model.safetensors", metadata={"format": "pt"})  # fmt: skip
    return path


# --- killed mid-write ------------------------------------------------------------------------------------------------

# Runs a command in a fresh process that kills itself (SIGKILL: no cleanup, no finally) when `owner.attr` is called
# for the `n`-th time, i.e. in the middle of writing its output.
_KILL_ON_CALL = """
import importlib, os, signal, sys
owner, attr, n, command = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
module, _, cls = owner.partition(":")
target = getattr(importlib.import_module(module), cls) if cls else importlib.import_module(module)
original, calls = getattr(target, attr), [0]
def killing(*args, **kwargs):
    calls[0] += 1
    if calls[0] == n:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)
setattr(target, attr, killing)
importlib.import_module(f"hat.cli.{command}").main(sys.argv[5:])
"""


def killed_mid_write(owner: str, attr: str, n: int, command: str, *args: str) -> None:
    argv = [sys.executable, "-c", _KILL_ON_CALL, owner, attr, str(n), command, *args]
    done = subprocess.run(argv, env=subprocess_env(), capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr


def test_a_conversion_killed_mid_write_leaves_nothing_that_looks_complete_and_the_rerun_converts(tmp_path: Path):
    hf_dir, store = llama_dir(tmp_path / "llama"), tmp_path / "store"
    killed_mid_write("hat.checkpoint.store:ParamStoreWriter", "write", 3, "convert", str(hf_dir), str(store))
    assert not store.exists()
    (abandoned,) = [p for p in tmp_path.iterdir() if p.name.startswith(".store.partial-")]
    assert (abandoned / "params").is_dir() and not (abandoned / "hat_params.json").exists()
    assert cli("convert")([str(hf_dir), str(store)]) == 0
    assert (store / "hat_params.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llama", "store"]  # the dead process's copy is removed


def test_corpus_compression_killed_mid_write_resumes_to_the_same_tokens(byte_run: Path, tmp_path: Path):
    from hat.compress.data import load_token_corpus

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(4):
        (corpus / f"doc{i}.txt").write_bytes(f"def f{i}(x):\n    return x + {i}  # note\n".encode() * 4)
    # Chunks of 4 segments per lane (128 bytes): one document each, each recorded as progress.
    args = ["--m1-batch-size", "2", "--segment-bytes", "16"]
    resumed, fresh = tmp_path / "resumed", tmp_path / "fresh"
    # Killed before the second progress record: the arrays hold a chunk more than the record says.
    killed_mid_write("hat.data.token_store", "replace_file", 2, "compress", "corpus", str(byte_run), str(resumed),
                     str(corpus), *args)  # fmt: skip
    (partial,) = resumed.iterdir()
    assert partial.name.startswith(".corpus-eqinfo-") and not (partial / "manifest.json").exists()
    assert cli("compress")(["corpus", str(byte_run), str(resumed), str(corpus), *args]) == 0
    assert cli("compress")(["corpus", str(byte_run), str(fresh), str(corpus), *args]) == 0
    (done,), (reference,) = resumed.iterdir(), fresh.iterdir()
    assert done.name == reference.name
    tokens, expected = load_token_corpus(done), load_token_corpus(reference)
    assert np.array_equal(tokens.tokens.read().result(), expected.tokens.read().result())
    assert tokens.num_bytes == expected.num_bytes == sum(p.stat().st_size for p in corpus.iterdir())


# --- corpus files that change between runs ---------------------------------------------------------------------------


def test_corpus_files_that_change_vanish_or_become_unreadable_are_rebuilt_or_named(tmp_path: Path):
    from hat.data import Document, prepare_corpus, resolve_documents
    from hat.data.corpus import CorpusError

    root, cache = tmp_path / "corpus", tmp_path / "cache"
    root.mkdir()
    (root / "a.txt").write_bytes(b"alpha beta\n")
    (root / "b.txt").write_bytes(b"gamma delta\n")

    def prepared() -> bytes:
        corpus = prepare_corpus(resolve_documents([str(root)]), cache, 64)
        return corpus.read_bytes(0, corpus.num_bytes).tobytes()

    assert prepared() == b"alpha beta\n\xc0gamma delta\n\xc0"
    # Rewritten with the same size and its old modification time put back (cp -p, touch -d, a restore): rebuilt.
    before = (root / "a.txt").stat()
    (root / "a.txt").write_bytes(b"ALPHA BETA\n")
    os.utime(root / "a.txt", ns=(before.st_atime_ns, before.st_mtime_ns))
    assert prepared() == b"ALPHA BETA\n\xc0gamma delta\n\xc0"
    (root / "b.txt").unlink()  # vanished: the corpus is what is there now
    assert prepared() == b"ALPHA BETA\n\xc0"
    assert len(list(cache.iterdir())) == 3
    # A file whose reads fail (chmod cannot stop root from reading; /proc/self/mem fails at offset 0 for anyone).
    (root / "c.txt").symlink_to("/proc/self/mem")
    with pytest.raises(CorpusError, match=f"^cannot read corpus file {root / 'c.txt'}: Input/output error$"):
        prepared()
    with pytest.raises(CorpusError, match=f"cannot read corpus file {root / 'gone.txt'}: No such file"):
        prepare_corpus([Document(root / "gone.txt", "gone.txt")], cache, 64)  # vanished after it was listed
    assert len(list(cache.iterdir())) == 3  # nothing partial left behind
