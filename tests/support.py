"""Shared by the end-to-end tests: the repository root, entry-point scripts loaded as modules, a tiny HAT, synthetic
text and the settings of the shared tiny runs (built in conftest.py)."""

import functools
import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path

from hat.cli import run

REPO = Path(__file__).resolve().parent.parent

# Settings of the shipped tiny configs that tests built on them switch off (see TINY_HAT): the hashed n-gram
# embeddings, the script primer and the schedule fitted to a time budget.
# (buckets back to the code's default too: a model without n-grams then has the config an import gives it).
OPT_OUT = [
    "model.ngrams.sizes=[]", "model.ngrams.buckets=4096", "data.script_primer_bytes=0",
    "train.fit_steps_to_budget=false",
]  # fmt: skip
# A HAT that compiles and trains in seconds (widths 32 / 64, two heads everywhere), as train.py overrides.
TINY_HAT = [
    "model.encoder.hidden_size=32", "model.encoder.mlp_hidden_size=64", "model.encoder.num_heads=2",
    "model.encoder.num_kv_heads=2", "model.decoder.hidden_size=32", "model.decoder.mlp_hidden_size=64",
    "model.decoder.num_heads=2", "model.decoder.num_kv_heads=2", "model.backbone.hidden_size=64",
    "model.backbone.mlp_hidden_size=128", "model.backbone.num_layers=2", "model.backbone.num_heads=2",
    "model.backbone.num_kv_heads=2", "model.pooling.num_heads=2", "model.pooling.num_kv_heads=2",
    # The released architecture (exportable), on the test's own data only: the default config's hashed n-gram
    # embeddings and script primer have tests of their own.
    *OPT_OUT,
]  # fmt: skip


def cli(name: str) -> Callable[[list[str]], int]:
    """The command `hat.cli.<name>` as its console script runs it: its exit code, a `HatError` as one stderr line."""
    return functools.partial(run, importlib.import_module(f"hat.cli.{name}").main)


def load_script(name: str, folder: str = "scripts"):
    """`scripts/<name>.py` (or `<folder>/<name>.py`, e.g. a benchmark) as a module, so tests call its functions and
    `main(argv)` in-process."""
    path = REPO / folder / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"hat_script_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- synthetic text: the same bytes on every machine and Python version -------------------------------------------

_NAMES = ["value", "items", "count", "total", "index", "result", "buffer", "offset", "name", "path", "data", "size"]
_WORDS = ["the", "of", "and", "a", "to", "in", "is", "for", "each", "byte", "word", "model", "returns", "café",
          "naïve", "日本語", "über", "line", "text", "bits"]  # fmt: skip
_OPERATORS = ["+", "-", "*", "//", "%"]
_DEFAULTS = ["0", "1", "[]", "{}", "'x'", "None"]


def synthetic_source(seed: int, functions: int) -> bytes:
    """Python-like source text (functions with docstrings, comments, a few non-ASCII words), drawn with a fixed
    64-bit LCG: the same bytes on every machine and Python version, unlike the stdlib's own files."""
    state = seed + 1

    def pick(options: list[str]) -> str:
        nonlocal state
        state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
        return options[(state >> 33) % len(options)]

    lines = []
    for i in range(functions):
        arg, other = pick(_NAMES), pick(_NAMES)
        lines += [
            f"def {pick(_NAMES)}_{i}({arg}, {other}={pick(_DEFAULTS)}):",
            f'    """{pick(_WORDS).capitalize()} {pick(_WORDS)} {pick(_WORDS)} {pick(_WORDS)}."""',
            f"    if {other} is None:",
            f"        {other} = {pick(_DEFAULTS)}",
            f"    {pick(_NAMES)} = {arg} {pick(_OPERATORS)} {i % 7 + 1}  # {pick(_WORDS)} {pick(_WORDS)}",
            f"    return {pick(_NAMES)}",
            "",
        ]
    return "\n".join(lines).encode()


# The files of the shared corpora (conftest.py writes them): five synthetic source files, CJK text and broken UTF-8,
# and for the HAT run also the awkward inputs users throw at a trainer.
TEXT_FILES = {
    **{f"src{i}.py": synthetic_source(i, 12 + 12 * i) for i in range(5)},
    "cjk.txt": "日本語のテキスト 😀 中文 def print_all():\n".encode() * 10,
    "invalid.txt": b"caf\xc3 \xff\xfe ok \xe6\x97 \x80\x80 end\n" * 20,
}
AWKWARD_FILES = {"empty.txt": b"", "binary.bin": bytes(range(256)) * 8, "longline.txt": b"y" * 1_000_000}

# The shared HAT run (conftest.hat_run) trains 8 steps with these settings; a test resuming a copy of it passes them
# again with more steps. A fixed peak FLOP rate skips measuring the machine's (seconds of matmuls per run).
HAT_RUN = [
    *TINY_HAT,
    "data.seq_bytes=256", "data.max_words=96", "data.eval_fraction=0.3", "train.batch_size=4",
    "train.log_every=2", "train.eval_every=4", "train.checkpoint_every=4", "train.eval_sequences=8",
    "train.warmup_steps=2", "train.peak_flops_per_device=1e9",
]  # fmt: skip
# A flat stack for the byte_lm and BPE token_lm runs (configs/byte_tiny.yaml, configs/bpe_tiny.yaml).
FLAT = [
    "model.backbone.hidden_size=32", "model.backbone.mlp_hidden_size=64", "model.backbone.num_layers=2",
    "model.backbone.num_heads=2", "model.backbone.num_kv_heads=2", "data.eval_fraction=0.3", "train.batch_size=4",
    "train.steps=4", "train.log_every=2", "train.eval_every=4", "train.checkpoint_every=4", "train.eval_sequences=4",
    "train.warmup_steps=1", "train.peak_flops_per_device=1e9", *OPT_OUT,
]  # fmt: skip
TOKEN = ["model.vocab_size=400", "data.bpe.vocab_size=400", "data.bpe.seq_tokens=32"]
BYTE = ["data.seq_bytes=128", "data.max_words=64", "model.max_word_bytes=64"]


# --- golden numbers ------------------------------------------------------------------------------------------------


class _AnyNumber:
    def __eq__(self, other) -> bool:
        return True

    def __repr__(self) -> str:
        return "<any number: the golden value is a CPU one>"


def golden(value: float, rel: float = 1e-4):
    """`pytest.approx(value, rel)` for a number a test computed when it was written (CPU, float32; see
    test_golden.py for how such numbers are made and updated). Other backends initialise and multiply differently
    (rbg keys, TF32 matmuls), so there it equals anything."""
    import jax
    import pytest

    return pytest.approx(value, rel=rel) if jax.default_backend() == "cpu" else _AnyNumber()
