"""Sampling from an M2 (token_lm over EqualInfoAC tokens): sample tokens, decode each finished window with M1."""

from __future__ import annotations

from collections.abc import Iterator

import jax
import numpy as np
from flax import nnx

from hat.checkpoint import LoadedModel
from hat.compress.data import compress_in_memory, load_m1, spec_from_config
from hat.compress.equal_info import CorruptStreamError, decode_segments, tokens_to_windows
from hat.sampling import DEFAULT_SAMPLING, Sampling, check_sampling, choose

# M2 has no begin-of-text token; an empty prompt starts from a newline.
EMPTY_PROMPT = b"\n"
# Sampled windows that decode to no text (M2 put probability on invalid windows) are resampled this often.
MAX_RESAMPLES = 8


def sample_eqinfo_bytes(
    loaded: LoadedModel, prompt: bytes, max_new_bytes: int = 256, sampling: Sampling = DEFAULT_SAMPLING
) -> Iterator[int]:
    """Yields sampled bytes: M2 samples one window's tokens at a time (`hat.sampling.choose`: temperature, top-k,
    top-p, seeded), M1 decodes the window to its bytes.

    The prompt is compressed with M1 (its last window may hold fewer bytes than a greedy window would). The
    context is a fixed `[1, seq_tokens]` block, dropping whole windows from its front when full.
    """
    config = loaded.config
    m1, spec = load_m1(config), spec_from_config(config)
    per, seq_tokens = spec.tokens_per_window, config.data.eqinfo.seq_tokens
    prompt_corpus = compress_in_memory(m1, [prompt or EMPTY_PROMPT], spec, config.data.eqinfo.segment_bytes)
    context = [int(t) for t in prompt_corpus.tokens]
    graphdef, params = nnx.split(loaded.model, nnx.Param)

    @jax.jit
    def next_logits(params, inputs, position):
        return nnx.merge(graphdef, params)(inputs[None])[:, position]

    check_sampling(sampling.temperature, sampling.top_k, sampling.top_p, config.model.vocab_size)
    settings = sampling.device_args()
    key = jax.random.key(sampling.seed)
    step = 0
    produced, failures = 0, 0
    while produced < max_new_bytes and failures < MAX_RESAMPLES:
        window_tokens: list[int] = []
        for _ in range(per):
            full = context + window_tokens
            # Drop whole windows from the front, so tokens keep the phase within windows that M2 trained on.
            visible = full[-(-max(len(full) - seq_tokens, 0) // per) * per :]
            inputs = np.zeros(seq_tokens, np.int32)
            inputs[: len(visible)] = visible
            logits_1xV = next_logits(params, inputs, len(visible) - 1)
            window_tokens.append(int(choose(logits_1xV, jax.random.fold_in(key, step), *settings)[0]))
            step += 1
        try:
            (text,) = decode_segments(m1, tokens_to_windows(np.asarray(window_tokens), spec), [1], spec)
        except CorruptStreamError:
            failures += 1
            continue
        failures = 0
        context += window_tokens
        for value in text[: max_new_bytes - produced]:
            yield value
        produced += len(text)
