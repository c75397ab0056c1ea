"""Golden numbers: the training loss of each model kind at its first two steps, from seed 0 on fixed synthetic bytes.

A 2-step train.py run per kind logs the loss of step 1 (the initial parameters) and of step 2 (after one AdamW update
at the peak learning rate: no warmup). Initialisation, the model's numerics, the loss, the optimizer and the data
pipeline (packing, tokenizer training, batch order) all move these numbers, so a change that should leave numerics
alone must leave them within tolerance, and a silent change fails here even when every bound elsewhere still holds.

How they were produced: by running these tests as they are (each prints its numbers, and a failure shows them) on
CPU in float32, with hat/ as of commit 21c1350 and jax/jaxlib 0.10.2, flax 0.12.8, optax 0.2.8, grain 0.2.18,
tokenizers 0.23.3, numpy 2.4.6. Update them only for an intended change of numerics (or an upgrade that changes
them, e.g. grain's shuffle or the BPE trainer), and say in the commit what moved them. The tolerance (rel 1e-4)
covers float32 differences between CPUs, not a change of computation; other backends initialise and multiply
differently, so there `golden` accepts any number.

The EqualInfoAC M2's numbers sit beside its run in test_compress.py. `hat_ngrams` (the hashed n-gram embeddings of
the default HAT) was added later, with the same versions, at the commit that introduced `model.ngrams`.
"""

import math
from pathlib import Path

import pytest
from support import REPO, TINY_HAT, cli, golden, synthetic_source

from hat.train.metrics import read_metrics

pytestmark = pytest.mark.slow

# Three small synthetic files (about 4 kB), written by each test: the data depends on nothing but this file and
# support.synthetic_source, so it is the same on every machine and Python version.
FILES = {f"doc{i}.py": synthetic_source(100 + i, 6 + 4 * i) for i in range(3)}
TWO_STEPS = [
    "train.steps=2", "train.log_every=1", "train.warmup_steps=0", "train.batch_size=2", "data.eval_fraction=0",
    "train.checkpoint_every=100", "train.peak_flops_per_device=1e9", "seed=0", "data.seed=0",
    "data.script_primer_bytes=0", "train.fit_steps_to_budget=false",
]  # fmt: skip
FLAT_STACK = [
    "model.backbone.hidden_size=32", "model.backbone.mlp_hidden_size=64", "model.backbone.num_layers=2",
    "model.backbone.num_heads=2", "model.backbone.num_kv_heads=2",
]  # fmt: skip
RUNS = {
    "hat": [*TINY_HAT, "data.seq_bytes=128", "data.max_words=48"],
    "hat_ngrams": [*TINY_HAT, "data.seq_bytes=128", "data.max_words=48", "model.ngrams.sizes=[3,4,5,6,7,8]",
                   "model.ngrams.buckets=4096"],
    "byte_lm": [str(REPO / "configs/byte_tiny.yaml"), *FLAT_STACK, "data.seq_bytes=128"],
    "token_lm": [str(REPO / "configs/bpe_tiny.yaml"), *FLAT_STACK, "model.vocab_size=300", "data.bpe.vocab_size=300",
                 "data.bpe.seq_tokens=32"],
}  # fmt: skip
# (loss at step 1, loss at step 2) in nats per target.
GOLDEN = {
    "hat": (5.569018840789795, 5.445403099060059),
    "hat_ngrams": (5.552646160125732, 5.4077863693237305),
    "byte_lm": (5.589231491088867, 5.461245536804199),
    "token_lm": (5.723715305328369, 5.666564464569092),
}
# A fresh model is close to uniform over its outputs: 256 bytes (end-of-text is byte 192), or the BPE ids.
VOCAB = {"hat": 256, "hat_ngrams": 256, "byte_lm": 256, "token_lm": 300}


def two_step_losses(tmp_path: Path, kind: str) -> list[float]:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, data in FILES.items():
        (corpus / name).write_bytes(data)
    args = [*RUNS[kind], f"data.corpus=['{corpus}']", f"workdir={tmp_path / 'run'}", *TWO_STEPS]
    assert cli("train")(args) == 0
    rows = [row for row in read_metrics(tmp_path / "run") if "train/loss" in row]
    assert [row["step"] for row in rows] == [1, 2]
    return [row["train/loss"] for row in rows]


@pytest.mark.parametrize("kind", list(RUNS))
def test_first_two_losses_match_the_golden_numbers(tmp_path: Path, kind: str):
    losses = two_step_losses(tmp_path, kind)
    print(f"{kind}: {tuple(losses)!r}")
    assert abs(losses[0] - math.log(VOCAB[kind])) < 0.5, losses  # a fresh model is close to uniform
    assert losses == [golden(value) for value in GOLDEN[kind]], f"{kind} losses {tuple(losses)!r}"
