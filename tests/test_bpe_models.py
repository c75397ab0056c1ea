"""BPE token LMs end to end: train.py on BPE data, exact byte-level scoring and sampling through the scripts,
ensembles with a byte model. The runs (`bpe_run`, `byte_run`) and `text_corpus` are session fixtures of
conftest.py."""

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from support import REPO, cli, golden, load_script

from hat.byteprob.bytelevel import NativeByteModel, combine, fit_mixture_weights, text_bits
from hat.byteprob.flat import CachedFlatTokenModel, FlatTokenModel
from hat.byteprob.models import log_softmax
from hat.checkpoint import load_model
from hat.config import load_config
from hat.data.tokens import TokenSequences, encode_documents, tokens_in_memory
from hat.evaluate import evaluate_files
from hat.kinds import kind_of, load_byte_model
from hat.text.bpe import EOT_ID, chunk_start, load_tokenizer


@pytest.mark.slow
def test_bpe_config_trains_on_tokens(bpe_run):
    rows = [json.loads(line) for line in (bpe_run / "metrics.jsonl").read_text().splitlines()]
    assert all(0 < r["eval/bits_per_byte"] < 9 for r in rows if "eval/bits_per_byte" in r)
    # A known value: what this run computed (CPU, float32) when the test was written; see test_golden.py.
    assert [r["eval/bits_per_byte"] for r in rows if "eval/bits_per_byte" in r] == [golden(6.337895372360657)]
    tokenizer = load_tokenizer(bpe_run / "tokenizer.json")
    assert tokenizer.vocab_size == 400


@pytest.mark.slow
def test_token_sequences_cover_every_token_once(bpe_run, text_corpus):
    tokenizer = load_tokenizer(bpe_run / "tokenizer.json")
    texts = [p.read_bytes() for p in sorted(text_corpus.iterdir())]
    # HF's own pre-tokenizer (used for valid UTF-8) agrees with hat's byte-level chunking.
    assert encode_documents(tokenizer, texts) == [tokenizer.encode(t) for t in texts]
    source = TokenSequences(tokens_in_memory(tokenizer, texts), 32)
    examples = [source[i] for i in range(len(source))]
    targets = np.concatenate([e["targets"][e["loss_mask"] > 0] for e in examples])
    assert tokenizer.decode(targets.tolist()) == b"".join(texts)
    assert sum(e["target_bytes"].sum() for e in examples) == sum(map(len, texts))
    assert (targets == EOT_ID).sum() == len(texts)
    for e in examples:
        assert (e["text_mask"] == e["loss_mask"] * (e["targets"] != EOT_ID)).all()


@pytest.mark.slow
def test_flat_token_model_matches_a_direct_forward(bpe_run):
    loaded = load_model(bpe_run)
    model = FlatTokenModel(loaded, EOT_ID, batch_size=4)
    prefixes = [(), (5, 9, 300), tuple(range(1, 60))]  # the last is longer than the 32-token context
    rows = model.next_token_logprobs(prefixes)
    for prefix, row in zip(prefixes, rows):
        sequence = ((EOT_ID,) + prefix)[-32:]
        logits = np.asarray(loaded.model(jax.numpy.asarray([sequence])))[0, -1]
        np.testing.assert_allclose(row, log_softmax(logits), atol=1e-5)
    calls = model.num_prefixes
    model.next_token_logprobs(prefixes[:2])
    assert model.num_prefixes == calls == 3  # memoised


@pytest.mark.slow
def test_cached_token_model_equals_the_recompute(bpe_run):
    loaded = load_model(bpe_run)
    cached = CachedFlatTokenModel(loaded, EOT_ID, max_states=8)
    recompute = FlatTokenModel(loaded, EOT_ID, batch_size=4)
    # Shared prefixes branch from cached states; the last is past the 32-token context (recompute fallback).
    prefixes = [(), (5, 9, 300), (5, 9), (5, 9, 301, 7), tuple(range(1, 20)), tuple(range(1, 22)), tuple(range(1, 60))]
    np.testing.assert_allclose(cached.next_token_logprobs(prefixes), recompute.next_token_logprobs(prefixes), atol=2e-5)
    # Each new token is one step from the longest cached prefix: 3, then 0, 2 (after (5, 9)), 19 and 2.
    assert cached.num_steps == 3 + 0 + 2 + 19 + 2


@pytest.mark.slow
def test_evaluate_reports_exact_and_canonical_beside_a_byte_model(bpe_run, byte_run, text_corpus, capsys):
    files = [str(text_corpus / "cjk.txt"), str(text_corpus / "invalid.txt")]
    evaluate = cli("evaluate")
    assert evaluate([str(bpe_run), files[1], "--json", "--exact"]) == 0
    single = json.loads(capsys.readouterr().out)
    assert 0 < single["bits_per_byte"] < 12 and 0 < single["bits_per_byte_canonical"] < 12
    # The exact chain sums over every tokenisation the canonical one is among: never more bits.
    assert single["bits_per_byte"] <= single["bits_per_byte_canonical"]
    # Known values: what these runs computed (CPU, float32) when the test was written; see test_golden.py.
    assert single["bits_per_byte"] == golden(6.140437517797519)
    assert single["model_kind"] == "token_lm"
    # The default is the teacher-forced whole-document number alone.
    assert evaluate([str(bpe_run), files[1], "--json"]) == 0
    default = json.loads(capsys.readouterr().out)
    assert default["bits_per_byte"] == pytest.approx(single["bits_per_byte_canonical"], rel=1e-6)
    assert "bits_per_byte_canonical" not in default
    args = [str(byte_run), *files, "--also", str(bpe_run), "--ensemble", "product", "--json"]
    assert evaluate(args) == 0
    result = json.loads(capsys.readouterr().out)
    byte_row, token_row = result["models"]
    assert "bits_per_byte_canonical" in token_row and "bits_per_byte_canonical" not in byte_row
    assert all(0 < r["bits_per_byte"] < 12 for r in [byte_row, token_row, result["ensemble"]])
    known = [golden(7.895116114999653), golden(6.375095299023411), golden(6.247867460623177)]
    assert [r["bits_per_byte"] for r in [byte_row, token_row, result["ensemble"]]] == known
    # The byte model's byte-level rows give the same bits/byte as the training-layout evaluation (file by file).
    loaded = load_model(byte_run)
    per_file = [(evaluate_files(loaded, [f])["bits_per_byte"], Path(f).stat().st_size) for f in files]
    reference = sum(b * n for b, n in per_file) / sum(n for _, n in per_file)
    assert byte_row["bits_per_byte"] == pytest.approx(reference, rel=1e-5)


@pytest.mark.slow
def test_byte_rows_are_distributions(byte_run):
    model = load_byte_model(byte_run)
    assert isinstance(model, NativeByteModel)
    rows = model.text_logprobs("x = 日本\n".encode())
    assert rows.shape == (len("x = 日本\n".encode()) + 1, 257)
    np.testing.assert_allclose(np.exp(rows).sum(-1), 1.0, atol=1e-5)
    stream = model.stream(b"x = ")
    np.testing.assert_allclose(stream.logprobs(), rows[4], atol=1e-4)


def test_combine_mixture_and_product():
    rng = np.random.default_rng(0)
    a, b = log_softmax(rng.normal(size=(5, 257))), log_softmax(rng.normal(size=(5, 257)))
    for how in ("mixture", "product"):
        np.testing.assert_allclose(combine([a, b], [1.0, 0.0], how), a, atol=1e-12)
        np.testing.assert_allclose(combine([a, a], [0.3, 0.7], how), a, atol=1e-12)
        np.testing.assert_allclose(np.exp(combine([a, b], [0.5, 2.0], how)).sum(-1), 1.0, atol=1e-12)
    mixed = combine([a, b], [1.0, 3.0], "mixture")
    np.testing.assert_allclose(np.exp(mixed), 0.25 * np.exp(a) + 0.75 * np.exp(b), atol=1e-12)
    product = np.exp(combine([a, b], [1.0, 1.0], "product"))
    expected = np.exp(a + b) / np.exp(a + b).sum(-1, keepdims=True)
    np.testing.assert_allclose(product, expected, atol=1e-12)


def test_fitted_mixture_weights_beat_every_fixed_choice():
    rng = np.random.default_rng(1)
    texts = [bytes(rng.integers(0, 256, size=40).astype(np.uint8)) for _ in range(3)]
    members = [[log_softmax(rng.normal(size=(41, 257)) * s) for _ in texts] for s in (0.5, 2.0, 4.0)]
    weights = fit_mixture_weights(members, texts, iterations=300)
    assert abs(sum(weights) - 1) < 1e-9 and all(w >= 0 for w in weights)

    def bits(w):
        return sum(text_bits(combine([m[j] for m in members], w, "mixture"), t) for j, t in enumerate(texts))

    best = bits(weights)
    for w in [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [2, 1, 0.5]]:
        assert best <= bits(w) + 1e-6


@pytest.mark.slow
def test_generate_token_model_and_ensemble(bpe_run, byte_run, capsysbinary):
    generate = cli("generate")
    assert generate([str(bpe_run), "--prompt", "def pri", "--max-new-bytes", "4", "--temperature", "0"]) == 0
    out = capsysbinary.readouterr().out
    assert out.startswith(b"def pri") and len(out) <= len(b"def pri") + 4 + 1
    args = [str(byte_run), "--also", str(bpe_run), "--ensemble", "mixture", "--max-new-bytes", "3"]
    assert generate(args + ["--prompt", "x"]) == 0
    assert capsysbinary.readouterr().out.startswith(b"x")


@pytest.mark.slow
def test_missing_tokenizer_is_one_line(bpe_run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(bpe_run, copy)
    (copy / "tokenizer.json").unlink()
    assert cli("evaluate")([str(copy), __file__]) == 2
    err = capsys.readouterr().err
    assert "tokenizer file not found" in err and err.count("\n") == 1


def test_bpe_config_needs_matching_vocab():
    from hat.config import ConfigError

    with pytest.raises(ConfigError, match="vocab_size"):
        kind_of(load_config(REPO / "configs/bpe_tiny.yaml", ["data.bpe.vocab_size=512"]))


@pytest.mark.slow
def test_benchmark_functions_on_a_tiny_run(bpe_run):
    benchmark = load_script("byteprob", "benchmarks")
    model = load_byte_model(bpe_run)
    cost = benchmark.cost(model.model, model.table, b"def f(x):")
    assert cost["stream_calls_per_byte"] <= 1 + 1 / 9 + 1e-9  # one prefix per byte (+ the empty one)
    assert cost["naive_calls_per_byte"] > cost["stream_calls_per_byte"]
    bias = benchmark.tokenisation_bias(model.model, model.table, [b"print(x)\n", "日本語\n".encode()])
    assert bias["exact/all"]["cuts"] == bias["naive/all"]["cuts"] == 8 + 9
    assert 0 < bias["exact/mid_token"]["cuts"] < bias["exact/all"]["cuts"]
    assert all(0 <= v["accuracy"] <= 1 and v["bits"] > 0 for v in bias.values())
    with pytest.raises(SystemExit) as info:
        benchmark.main(["--help"])
    assert info.value.code == 0


@pytest.mark.slow
def test_the_suite_scores_a_token_lm_by_the_canonical_tokenisation_of_each_file(bpe_run, byte_run, tmp_path):
    """The registry's token scorer (one teacher-forced pass over each file's tokens as a complete document) gives
    the canonical log-probability of the file and its end, as the token model computes it, for a file that fits
    the model's context."""
    from hat.evaluate import evaluate_suite

    path = tmp_path / "short.py"  # fits the model's 32-token context: both score it in one window
    path.write_bytes(b"def f(x):\n    return x + 1  # caf\xc3 \xff ok\n")
    data = path.read_bytes()
    exact = load_byte_model(bpe_run)
    exact.text_logprobs(data)
    ids = tuple(exact.tokenizer.encode(data))
    end = FlatTokenModel(load_model(bpe_run), EOT_ID).next_token_logprobs([ids])[0][EOT_ID]
    canonical = -(exact.last_canonical_log_prob + end) / np.log(2) / len(data)
    result = evaluate_suite(
        [load_model(bpe_run), load_model(byte_run)], [path], perturbations=("delete",), workdir=tmp_path
    )
    token, byte = result["models"]
    assert token["bits_per_byte"] == pytest.approx(canonical, rel=1e-5)
    assert token["unit"] == "token" and token["unit_vocabulary"] == 400 and token["bytes"] == len(data)
    assert byte["unit"] == "byte" and np.isfinite(token["delete_increase"])


class _ValidOnly:
    """A token model that puts no mass on invalid tokenisations: after each canonical prefix, only the tokens that
    extend it validly (and end-of-text) keep their probability, renormalised."""

    def __init__(self, model, table) -> None:
        self.model, self.table = model, table

    def next_token_logprobs(self, prefixes):
        rows = np.asarray(self.model.next_token_logprobs(prefixes), np.float64)
        for row, prefix in zip(rows, prefixes):
            text = self.table.tokenizer.decode(prefix)
            mask = self.table.valid_after(text[chunk_start(text) :]).copy()
            mask[EOT_ID] = True
            row[~mask] = -np.inf
            row -= np.logaddexp.reduce(row[mask])
        return rows


@pytest.mark.slow
def test_whole_document_scoring_agrees_with_the_exact_chain_on_complete_documents(bpe_run, tmp_path):
    """For a complete document followed by end-of-text only the canonical tokenisation is valid: the exact
    next-byte chain (bytes, then end-of-text) equals the canonical probability whenever the model puts its mass on
    valid tokenisations only, and is never below it otherwise; the forward-pass scorer gives that canonical
    probability (document within the context)."""
    from hat.byteprob.bytelevel import TokenByteModel
    from hat.byteprob.exact import EOT_OUTCOME, TokenTable

    loaded = load_model(bpe_run)
    tokenizer = load_tokenizer(bpe_run / "tokenizer.json")
    table = TokenTable(tokenizer)
    data = b"x = total(1) \xe6\x97 +  y\n"
    path = tmp_path / "doc.py"
    path.write_bytes(data)
    ids = tuple(tokenizer.encode(data))
    assert len(ids) + 1 <= loaded.config.data.bpe.seq_tokens

    def chain_and_canonical(model):
        rows = TokenByteModel(model, tokenizer).text_logprobs(data)
        chain = text_bits(rows, data) - rows[len(data), EOT_OUTCOME] / np.log(2)
        steps = model.next_token_logprobs([ids[:k] for k in range(len(ids) + 1)])
        canonical = -sum(row[t] for row, t in zip(steps, (*ids, EOT_ID))) / np.log(2)
        return chain, canonical

    chain, canonical = chain_and_canonical(_ValidOnly(FlatTokenModel(loaded, EOT_ID), table))
    assert chain == pytest.approx(canonical, rel=1e-9)
    raw_chain, raw_canonical = chain_and_canonical(FlatTokenModel(loaded, EOT_ID))
    assert raw_chain <= raw_canonical + 1e-9
    default = evaluate_files(loaded, [path])
    assert default["bits_per_byte"] * len(data) == pytest.approx(raw_canonical, rel=1e-5)
    exact = evaluate_files(loaded, [path], exact=True)
    assert exact["bits_per_byte"] * len(data) == pytest.approx(raw_chain, rel=1e-5)
    assert exact["bits_per_byte_canonical"] == pytest.approx(default["bits_per_byte"], rel=1e-9)


def test_document_windows_score_every_target_once_with_enough_context():
    from hat.data.documents import DocumentWindows

    lengths = np.arange(50) % 4
    docs = [list(range(1, 30)), [5, 6], list(range(10, 48))]
    source = DocumentWindows(docs, lengths, EOT_ID, seq_tokens=8, stride=3)
    scored = {i: [] for i in range(len(docs))}
    for index in range(len(source)):
        doc, start, _, _ = source.index[index]
        example = source[index]
        for position in np.flatnonzero(example["loss_mask"]):
            scored[doc].append(int(example["targets"][position]))
            assert position >= 8 - 3 or start == 0  # at least seq_tokens - stride tokens of context
        assert (example["target_bytes"] == example["loss_mask"] * lengths[example["targets"]]).all()
    for i, doc in enumerate(docs):
        assert scored[i] == [*doc, EOT_ID]  # each target once, in order, the closing end-of-text included
