"""End-to-end: train.py on real bytes writes metrics and checkpoints, resumes, and the scripts read them.

The runs and corpora (`hat_run`, `byte_run`, `awkward_corpus`) are the session fixtures of conftest.py.
"""

import json
import shutil
from pathlib import Path

import pytest
from support import HAT_RUN, cli, golden


@pytest.mark.slow
def test_training_writes_metrics_and_checkpoints(hat_run: Path):
    rows = [json.loads(line) for line in (hat_run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "train/bits_per_byte" in r]
    eval_rows = [r for r in rows if "eval/bits_per_byte" in r]
    assert [r["step"] for r in train_rows] == [2, 4, 6, 8]
    assert all(r["perf/bytes_per_sec"] > 0 for r in train_rows)
    assert [r["step"] for r in eval_rows] == [4, 8]
    assert all(0 < r["eval/bits_per_byte"] < 9 for r in eval_rows)
    # Training lowers the held-out loss. Known values: what this run computed (CPU, float32) when the test was
    # written, see test_golden.py; they move with the shared run's settings (support.HAT_RUN) and data.
    assert eval_rows[1]["eval/bits_per_byte"] < eval_rows[0]["eval/bits_per_byte"]
    assert [r["eval/bits_per_byte"] for r in eval_rows] == [golden(8.008946959842483), golden(7.924884904617166)]
    assert sorted(p.name for p in (hat_run / "checkpoints").iterdir() if p.name.isdigit()) == ["4", "8"]
    assert list((hat_run / "tensorboard").iterdir())


@pytest.mark.slow
def test_resume_continues_from_latest_checkpoint(hat_run: Path, awkward_corpus: Path, tmp_path: Path, capsys):
    run = shutil.copytree(hat_run, tmp_path / "run")  # the shared run stays as it was
    args = [f"workdir={run}", f"data.corpus=['{awkward_corpus}']", "train.steps=10", *HAT_RUN]
    code = cli("train")(args)
    assert code == 0
    captured = capsys.readouterr()
    assert "resumed from" in captured.out + captured.err
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == [2, 4, 6, 8, 10]


@pytest.mark.slow
def test_evaluate_script_scores_bad_files(hat_run: Path, awkward_corpus: Path, capsys):
    evaluate = cli("evaluate")
    files = [awkward_corpus / n for n in ("empty.txt", "binary.bin", "invalid.txt", "src0.py")]
    assert evaluate([str(hat_run), *map(str, files), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    expected = sum(f.stat().st_size for f in files)
    assert result["bytes"] == expected and 0 < result["bits_per_byte"] < 9
    assert result["bits_per_byte"] == golden(7.957853088717016)  # a known value (see test_training_writes_...)
    assert evaluate([str(hat_run), str(awkward_corpus / "empty.txt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bits_per_byte"] is None


@pytest.mark.slow
def test_generate_script_writes_a_continuation(hat_run: Path, capsysbinary):
    generate = cli("generate")
    assert generate([str(hat_run), "--prompt", "def ", "--max-new-bytes", "5", "--temperature", "0"]) == 0
    out = capsysbinary.readouterr().out.decode("utf-8")  # invalid bytes are shown as U+FFFD, never raw
    assert out.startswith("def ") and 4 <= len(out) <= 4 + 5 + 1
    assert generate([str(hat_run), "--prompt", "def ", "--max-new-bytes", "5", "--temperature", "0", "--no-cache"]) == 0
    assert capsysbinary.readouterr().out.decode("utf-8") == out
    assert (
        generate(
            [
                str(hat_run),
                "--prompt",
                "def ",
                "--prompt",
                "",
                "--temperature",
                "0",
                "--max-new-bytes",
                "5",
                "--stop",
                out[4:6] or "x",
            ]
        )
        == 0
    )
    first, second = capsysbinary.readouterr().out.decode("utf-8").split("\n--- 1\n")
    assert first.startswith("--- 0\ndef ") and out[4:6] not in first[len("--- 0\ndef ") :] and second.endswith("\n")
    for bad in (["--max-new-bytes", "0"], ["--top-p", "1.5"], ["--stop", ""]):
        with pytest.raises(SystemExit) as info:
            generate([str(hat_run), *bad])
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


@pytest.mark.slow
def test_checkpoint_loads_in_either_layer_layout(hat_run: Path):
    import jax
    import numpy as np
    from flax import nnx

    from hat.checkpoint import load_model
    from hat.text import split_words

    listed, scanned = load_model(hat_run), load_model(hat_run, scan_layers=True)
    assert not listed.config.model.scan_layers and scanned.config.model.scan_layers
    words = split_words(b"def main():\n    return 0\n")
    inputs = np.array([[192, *b"".join(words)]], np.int32)
    word_ids = np.array([[0] + [i + 1 for i, w in enumerate(words) for _ in w]], np.int32)
    num_words = listed.config.data.max_words

    def logits(loaded) -> np.ndarray:
        # Jitted: the same numbers as the eager call, in seconds rather than half a minute of op-by-op dispatch.
        graphdef, params = nnx.split(loaded.model, nnx.Param)
        forward = jax.jit(lambda params: nnx.merge(graphdef, params)(inputs, word_ids, num_words=num_words))
        return np.asarray(forward(params))

    np.testing.assert_allclose(logits(scanned), logits(listed), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
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


@pytest.mark.slow
def test_evaluation_suite_compares_kinds_in_one_table(
    hat_run: Path, byte_run: Path, awkward_corpus: Path, tmp_path: Path, capsys
):
    files = [awkward_corpus / "src0.py", awkward_corpus / "invalid.txt"]
    out = tmp_path / "suite" / "result.json"
    args = [str(hat_run), *map(str, files), "--compare", str(byte_run), "--out", str(out)]
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

    single = evaluate_files(load_model(hat_run), files)
    assert hat_entry["bits_per_byte"] == pytest.approx(single["bits_per_byte"], rel=1e-6)
    for entry in result["models"]:
        for kind in result["perturbations"]:
            assert entry[f"{kind}_increase"] == pytest.approx(entry[f"{kind}_bits_per_byte"] - entry["bits_per_byte"])
        assert entry["params"] > 0 and entry["flops_per_byte"] > 0 and entry["eval_bytes_per_s"] > 0
    assert (out.parent / "result_bits_per_byte.png").stat().st_size > 0
    assert (out.parent / "result_robustness.png").stat().st_size > 0
