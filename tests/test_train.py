"""End-to-end: train.py on real bytes writes metrics and checkpoints, resumes, and the scripts read them."""

import json
from pathlib import Path

import pytest
from support import TINY_HAT, cli

TINY = [
    *TINY_HAT,
    "data.seq_bytes=256", "data.max_words=96", "data.eval_fraction=0.3", "train.batch_size=4",
    "train.log_every=2", "train.eval_every=4", "train.checkpoint_every=4", "train.eval_sequences=8",
    "train.warmup_steps=2",
]  # fmt: skip


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    """Real text plus the awkward inputs users throw at a trainer."""
    root = tmp_path_factory.mktemp("corpus")
    stdlib = Path(json.__file__).parent
    for i, path in enumerate(sorted(stdlib.glob("*.py"))):
        (root / f"src{i}.py").write_bytes(path.read_bytes())
    (root / "empty.txt").write_bytes(b"")
    (root / "binary.bin").write_bytes(bytes(range(256)) * 8)
    (root / "invalid.txt").write_bytes(b"caf\xc3 \xff\xfe ok \xe6\x97 \x80\x80 end\n" * 20)
    (root / "longline.txt").write_bytes(b"y" * 1_000_000)
    return root


@pytest.fixture(scope="module")
def trained_run(corpus_dir: Path, tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("run")
    code = cli("train")([f"workdir={workdir}", f"data.corpus=['{corpus_dir}']", "train.steps=8", *TINY])
    assert code == 0
    return workdir


def test_training_writes_metrics_and_checkpoints(trained_run: Path):
    rows = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "train/bits_per_byte" in r]
    eval_rows = [r for r in rows if "eval/bits_per_byte" in r]
    assert [r["step"] for r in train_rows] == [2, 4, 6, 8]
    assert all(r["perf/bytes_per_sec"] > 0 for r in train_rows)
    assert [r["step"] for r in eval_rows] == [4, 8]
    assert all(0 < r["eval/bits_per_byte"] < 9 for r in eval_rows)
    assert sorted(p.name for p in (trained_run / "checkpoints").iterdir() if p.name.isdigit()) == ["4", "8"]
    assert list((trained_run / "tensorboard").iterdir())


def test_resume_continues_from_latest_checkpoint(trained_run: Path, corpus_dir: Path, capsys):
    args = [f"workdir={trained_run}", f"data.corpus=['{corpus_dir}']", "train.steps=10", *TINY]
    code = cli("train")(args)
    assert code == 0
    captured = capsys.readouterr()
    assert "resumed from" in captured.out + captured.err
    rows = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == [2, 4, 6, 8, 10]


def test_evaluate_script_scores_bad_files(trained_run: Path, corpus_dir: Path, capsys):
    evaluate = cli("evaluate")
    files = [corpus_dir / n for n in ("empty.txt", "binary.bin", "invalid.txt", "src0.py")]
    assert evaluate([str(trained_run), *map(str, files), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    expected = sum(f.stat().st_size for f in files)
    assert result["bytes"] == expected and 0 < result["bits_per_byte"] < 9
    assert evaluate([str(trained_run), str(corpus_dir / "empty.txt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bits_per_byte"] is None


def test_generate_script_writes_a_continuation(trained_run: Path, capsysbinary):
    generate = cli("generate")
    assert generate([str(trained_run), "--prompt", "def ", "--max-new-bytes", "5", "--temperature", "0"]) == 0
    out = capsysbinary.readouterr().out.decode("utf-8")  # invalid bytes are shown as U+FFFD, never raw
    assert out.startswith("def ") and 4 <= len(out) <= 4 + 5 + 1
    assert generate([str(trained_run), "--prompt", "def ", "--max-new-bytes", "5", "--temperature", "0",
                          "--no-cache"]) == 0
    assert capsysbinary.readouterr().out.decode("utf-8") == out
    assert generate([str(trained_run), "--prompt", "def ", "--prompt", "", "--temperature", "0",
                          "--max-new-bytes", "5", "--stop", out[4:6] or "x"]) == 0
    first, second = capsysbinary.readouterr().out.decode("utf-8").split("\n--- 1\n")
    assert first.startswith("--- 0\ndef ") and out[4:6] not in first[len("--- 0\ndef ") :] and second.endswith("\n")
    for bad in (["--max-new-bytes", "0"], ["--top-p", "1.5"], ["--stop", ""]):
        with pytest.raises(SystemExit) as info:
            generate([str(trained_run), *bad])
        assert info.value.code == 2


def test_missing_checkpoint_is_one_line(tmp_path: Path, capsys):
    assert cli("evaluate")([str(tmp_path / "nope"), __file__]) == 2
    err = capsys.readouterr().err
    assert "checkpoint not found" in err and "nope" in err and err.count("\n") == 1


def test_missing_corpus_is_one_line(tmp_path: Path, capsys):
    code = cli("train")([f"workdir={tmp_path}", f"data.corpus=['{tmp_path / 'missing'}']"])
    assert code == 2
    err = capsys.readouterr().err
    assert "corpus path not found" in err and "missing" in err and err.count("\n") == 1


def test_unknown_override_is_one_line(tmp_path: Path, capsys):
    assert cli("train")([f"workdir={tmp_path}", "train.setps=3"]) == 2
    assert "did you mean train.steps" in capsys.readouterr().err


def test_checkpoint_loads_in_either_layer_layout(trained_run: Path):
    import numpy as np

    from hat.checkpoint import load_model
    from hat.text import split_words

    listed, scanned = load_model(trained_run), load_model(trained_run, scan_layers=True)
    assert not listed.config.model.scan_layers and scanned.config.model.scan_layers
    words = split_words(b"def main():\n    return 0\n")
    inputs = np.array([[192, *b"".join(words)]], np.int32)
    word_ids = np.array([[0] + [i + 1 for i, w in enumerate(words) for _ in w]], np.int32)
    num_words = listed.config.data.max_words
    np.testing.assert_allclose(
        scanned.model(inputs, word_ids, num_words=num_words), listed.model(inputs, word_ids, num_words=num_words),
        atol=1e-5, rtol=1e-5,
    )  # fmt: skip


@pytest.fixture(scope="module")
def byte_run(tmp_path_factory) -> Path:
    """A flat byte model trained two steps on a few stdlib files, evaluated on its whole held-out split."""
    corpus = tmp_path_factory.mktemp("small_corpus")
    for i, path in enumerate(sorted(Path(json.__file__).parent.glob("*.py"))):
        (corpus / f"f{i}.py").write_bytes(path.read_bytes())
    workdir = tmp_path_factory.mktemp("byte_run")
    args = [f"workdir={workdir}", f"data.corpus=['{corpus}']", "train.steps=2", *TINY, "model.kind=byte_lm",
            "data.eval_fraction=0.5", "train.eval_sequences=0"]  # fmt: skip
    assert cli("train")(args) == 0
    return workdir


def test_evaluation_equals_the_training_loops_heldout_number(byte_run: Path):
    from hat import data as hat_data
    from hat.checkpoint import load_model
    from hat.evaluate import evaluate_files

    loaded = load_model(byte_run)
    data_cfg = loaded.config.data
    heldout = hat_data.split_documents(hat_data.resolve_documents(data_cfg.corpus), data_cfg.eval_fraction, 0)[1]
    assert heldout
    summary = json.loads((byte_run / "summary.json").read_text())
    result = evaluate_files(loaded, [doc.path for doc in heldout], batch_size=3)
    assert result["bytes"] == summary["eval/bytes"] == sum(doc.path.stat().st_size for doc in heldout)
    assert result["bits_per_byte"] == pytest.approx(summary["eval/bits_per_byte"], rel=1e-5)


def test_evaluation_suite_compares_kinds_in_one_table(trained_run: Path, byte_run: Path, corpus_dir: Path,
                                                      tmp_path: Path, capsys):
    files = [corpus_dir / "src0.py", corpus_dir / "invalid.txt"]
    out = tmp_path / "suite" / "result.json"
    args = [str(trained_run), *map(str, files), "--compare", str(byte_run), "--out", str(out)]
    assert cli("evaluate")(args) == 0
    table = capsys.readouterr().out
    assert "+all_caps" in table and "zlib -9" in table
    result = json.loads(out.read_text())
    hat_entry, byte_entry = result["models"]
    assert (hat_entry["model_kind"], byte_entry["model_kind"]) == ("hat", "byte_lm")
    assert result["bytes"] == hat_entry["bytes"] == byte_entry["bytes"] == sum(f.stat().st_size for f in files)
    assert byte_entry["unit"] == "byte" and byte_entry["bytes_per_unit"] == 1.0
    assert 0 < byte_entry["capacity_utilisation"] <= 1 and 0 < hat_entry["capacity_utilisation"] <= 1
    assert hat_entry["unit"] == "word" and hat_entry["bytes_per_unit"] > 2
    from hat.checkpoint import load_model
    from hat.evaluate import evaluate_files

    single = evaluate_files(load_model(trained_run), files)
    assert hat_entry["bits_per_byte"] == pytest.approx(single["bits_per_byte"], rel=1e-6)
    for entry in result["models"]:
        for kind in result["perturbations"]:
            assert entry[f"{kind}_increase"] == pytest.approx(entry[f"{kind}_bits_per_byte"] - entry["bits_per_byte"])
        assert entry["params"] > 0 and entry["flops_per_byte"] > 0 and entry["eval_bytes_per_s"] > 0
    assert (out.parent / "result_bits_per_byte.png").stat().st_size > 0
    assert (out.parent / "result_robustness.png").stat().st_size > 0
