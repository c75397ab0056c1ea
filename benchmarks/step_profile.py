"""Where a HAT training step's time goes: forward + backward of each stage at training shapes, beside the BPE step.

    python benchmarks/step_profile.py
    python benchmarks/step_profile.py --hat configs/hat_tiny.yaml --bpe configs/bpe_tiny.yaml model.ngrams.sizes=[]

Times the jitted value-and-gradient of each HAT stage on its own (encoder; pooling; backbone with the decoder
connector; decoder with the head), of the whole HAT, and of the whole token LM of the BPE config, on random inputs of
the configs' batch and sequence shapes (milliseconds per call, after compilation); then each whole training step
with its config's AdamW update. Run it on an idle machine; the load average is printed beside the numbers.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def milliseconds(function: Callable, *args, repeats: int = 10) -> float:
    """Mean milliseconds of one call (the first call, which compiles, is not counted)."""
    import jax

    jax.block_until_ready(function(*args))
    start = time.perf_counter()
    for _ in range(repeats):
        out = function(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time each stage of a HAT training step and the BPE step.")
    parser.add_argument("--hat", type=Path, default=REPO / "configs/hat_tiny.yaml", help="HAT config")
    parser.add_argument("--bpe", type=Path, default=REPO / "configs/bpe_tiny.yaml", help="token LM config")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per stage")
    parser.add_argument("overrides", nargs="*", help="dotted overrides for the HAT config")
    args = parser.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from hat.config import load_config
    from hat.models import build_model

    cfg = load_config(args.hat, args.overrides)
    batch, seq_bytes, num_words = cfg.train.batch_size, cfg.data.seq_bytes, cfg.data.max_words
    graphdef, params = nnx.split(build_model(cfg.model, rngs=nnx.Rngs(0)), nnx.Param)
    rng = np.random.default_rng(0)
    bytes_BxT = jnp.asarray(rng.integers(0, 256, (batch, seq_bytes)), jnp.int32)
    # Words of 1..8 bytes, as packed sequences have them; bytes past the last word slot are padding (id W).
    word_ids_BxT = np.full((batch, seq_bytes), num_words, np.int32)
    for row in range(batch):
        ids = np.repeat(np.arange(num_words), rng.integers(1, 9, num_words))[:seq_bytes]
        word_ids_BxT[row, : len(ids)] = ids
    word_ids_BxT = jnp.asarray(word_ids_BxT)

    def timed(stage: Callable, *inputs) -> float:
        loss = lambda p, *a: jnp.sum(stage(nnx.merge(graphdef, p), *a).astype(jnp.float32) ** 2) * 1e-6  # noqa: E731
        return milliseconds(jax.jit(jax.value_and_grad(loss)), params, *inputs, repeats=args.repeats)

    model = nnx.merge(graphdef, params)
    enc_BxTxE = model.encode(bytes_BxT)
    words_BxWxD = model.pool(enc_BxTxE, word_ids_BxT, num_words)
    pred_BxWxD = model.predict_words(words_BxWxD)
    results = {
        "encoder": timed(lambda m, x: m.encode(x), bytes_BxT),
        "pooling": timed(lambda m, e, w: m.pool(e, w, num_words), enc_BxTxE, word_ids_BxT),
        "backbone": timed(lambda m, w: m.predict_words(w), words_BxWxD),
        "decoder+head": timed(lambda m, e, p, w: m.decode(e, p, w), enc_BxTxE, pred_BxWxD, word_ids_BxT),
        "hat step": timed(lambda m, x, w: m(x, w, num_words), bytes_BxT, word_ids_BxT),
    }
    bpe = load_config(args.bpe)
    bpe_graphdef, bpe_params = nnx.split(build_model(bpe.model, rngs=nnx.Rngs(0)), nnx.Param)
    tokens_BxT = jnp.asarray(rng.integers(0, bpe.model.vocab_size, (batch, bpe.data.bpe.seq_tokens)), jnp.int32)
    bpe_loss = lambda p, x: jnp.sum(nnx.merge(bpe_graphdef, p)(x) ** 2) * 1e-6  # noqa: E731
    results["bpe step"] = milliseconds(jax.jit(jax.value_and_grad(bpe_loss)), bpe_params, tokens_BxT)
    hat_loss = lambda p, x, w: jnp.sum(nnx.merge(graphdef, p)(x, w, num_words) ** 2) * 1e-6  # noqa: E731
    results["hat step + AdamW"] = with_optimizer(hat_loss, params, cfg.train, args.repeats, bytes_BxT, word_ids_BxT)
    results["bpe step + AdamW"] = with_optimizer(bpe_loss, bpe_params, bpe.train, args.repeats, tokens_BxT)

    print(f"ms per forward + backward, '+ AdamW': the whole step (batch {batch}; load {os.getloadavg()[0]:.2f})")
    for name, value in results.items():
        print(f"{name:<17} {value:>9.1f}")
    print(f"hat step / bpe step: {results['hat step'] / results['bpe step']:.2f}x")
    print(f"with AdamW (the training step): {results['hat step + AdamW'] / results['bpe step + AdamW']:.2f}x")
    return 0


def with_optimizer(loss: Callable, params, train_cfg, repeats: int, *inputs) -> float:
    """Mean milliseconds of a whole training step: the gradient, the config's AdamW update (with its clipping and
    weight decay) and the new parameters, state donated as in training."""
    import jax
    import optax

    from hat.train.step import make_optimizer

    tx = make_optimizer(train_cfg, params)

    def step(params, opt_state):
        updates, opt_state = tx.update(jax.grad(loss)(params, *inputs), opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    step = jax.jit(step, donate_argnums=(0, 1))
    # Copies: donation consumes them, and the caller's parameters are still needed.
    state = [jax.tree.map(jax.numpy.copy, params), tx.init(params)]

    def advance():
        state[:] = step(*state)
        return state

    return milliseconds(advance, repeats=repeats)


if __name__ == "__main__":
    sys.exit(main())
