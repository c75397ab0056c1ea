"""Generating bytes from any trained model, through the one sampler (`hat.sampling`).

    for row, piece in generate(loaded, [b"def main(", b"import "], max_new_bytes=200, sampling=Sampling(0.8)):
        ...

The model's kind (`hat.kinds`) provides the generation path: cached HAT and byte-LM sessions (`hat.sessions`:
prefill once, one jitted step per byte, a HAT's backbone once per word), a token LM's exact next-byte
distributions (`hat.byteprob`), or an EqualInfoAC M2's windows; `use_cache=False` picks a kind's uncached
reference path. Byte-level ensembles of several models sample through `generate_byte_level`.

An empty prompt is valid for hat's own models: the model continues from the start-of-document marker alone (a model
imported from the released runtime, fed without it, needs a non-empty prompt). Prompts are bytes and may hold invalid
UTF-8: the models read any bytes; a model's special tokens (`model.special_tokens`) are written as their strings.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from hat.byteprob.bytelevel import ByteLevelModel
from hat.byteprob.session import ByteLevelSession
from hat.checkpoint import LoadedModel
from hat.kinds import kind_of
from hat.sampling import DEFAULT_SAMPLING, Sampling, Session, check_request, sample_session


def decode_session(loaded: LoadedModel, use_cache: bool = True) -> Session:
    """The decode session of `loaded`'s kind (cached unless `use_cache` is False), for `hat.sampling`."""
    return kind_of(loaded.config).session(loaded, use_cache)


def generate(
    loaded: LoadedModel,
    prompts: Sequence[bytes],
    max_new_bytes: int = 256,
    sampling: Sampling = DEFAULT_SAMPLING,
    stop: Sequence[bytes] = (),
    use_cache: bool = True,
) -> Iterator[tuple[int, bytes]]:
    """Yields `(row, new bytes)` as generation proceeds, for a batch of prompts.

    A row ends at end-of-text (not shown), when a stop string completes (the stop string is not shown) or after
    `max_new_bytes` bytes. Bytes that could still begin a stop string are held back until that is decided.
    The cached and uncached sessions draw step k from the same seeded key, so their greedy bytes agree, and their
    sampled bytes agree up to float rounding of the logits.
    """
    check_request(prompts, max_new_bytes, sampling, stop)
    return kind_of(loaded.config).generate(loaded, prompts, max_new_bytes, sampling, stop, use_cache)


def generate_byte_level(
    model: ByteLevelModel,
    prompts: Sequence[bytes],
    max_new_bytes: int = 256,
    sampling: Sampling = DEFAULT_SAMPLING,
    stop: Sequence[bytes] = (),
) -> Iterator[tuple[int, bytes]]:
    """`generate` for any byte-level model (`hat.byteprob`: a token LM's exact distributions, an ensemble)."""
    check_request(prompts, max_new_bytes, sampling, stop)
    return sample_session(ByteLevelSession(model), prompts, max_new_bytes, sampling, stop)


def generate_all(loaded: LoadedModel, prompts: Sequence[bytes], **kwargs) -> list[bytes]:
    """`generate` collected: each prompt's continuation."""
    out = [bytearray() for _ in prompts]
    for row, piece in generate(loaded, prompts, **kwargs):
        out[row] += piece
    return [bytes(b) for b in out]
