"""Sample continuations of prompts from a trained hat checkpoint (cached: one jitted step per byte).

    python scripts/generate.py runs/tiny --prompt "def main(" --max-new-bytes 200 --temperature 0.8
    python scripts/generate.py runs/tiny --prompt "import " --prompt "class " --temperature 0 --stop "\n\n"
    python scripts/generate.py runs/tiny --prompt "def " --no-cache        # the uncached path, for checking/timing
    python scripts/generate.py runs/bpe_tiny --prompt "def pri"       # token LM, exact byte by byte
    python scripts/generate.py runs/hat_tiny --also runs/bpe_tiny --ensemble product --prompt "import "

One prompt streams its continuation as it is made; several prompts run as one batch and print in order. Bytes that
are not valid UTF-8 show as U+FFFD. A prompt longer than the model's trained context keeps its most recent whole
words (filling half the context); a note on stderr says so. A token LM (data.format bpe) samples from its exact
next-byte distribution, so a prompt that ends inside a token continues that token; `--also` with `--ensemble`
samples from a byte-level ensemble of several checkpoints (no cache, no top-p on that path).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate text from a hat checkpoint.")
    parser.add_argument("checkpoint", help="a run's workdir, or a checkpoint step directory inside it")
    parser.add_argument(
        "--prompt", action="append", help="text to continue (repeat for a batch); may be empty (default: '')"
    )
    parser.add_argument("--max-new-bytes", type=int, default=256, help="bytes to generate at most per prompt")
    parser.add_argument("--temperature", type=float, default=0.8, help="sampling temperature; 0 is greedy")
    parser.add_argument("--top-k", type=int, default=0, help="sample among the k most likely bytes (0: all)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass in (0, 1] (1: all)")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--stop", action="append", default=[], help="stop when this string is generated (repeatable)")
    parser.add_argument("--no-cache", action="store_true", help="re-run the whole context for every byte")
    parser.add_argument("--also", action="append", default=[], help="another checkpoint for the ensemble")
    parser.add_argument("--ensemble", choices=["mixture", "product"], default="mixture", help="how to combine")
    parser.add_argument("--weights", type=float, nargs="+", help="ensemble weights, one per checkpoint")
    args = parser.parse_args(argv)
    # Command-line text that is not valid UTF-8 reaches Python as surrogate escapes: pass its raw bytes on.
    prompts = [p.encode("utf-8", "surrogateescape") for p in (args.prompt or [""])]
    stops = [s.encode("utf-8", "surrogateescape") for s in args.stop]

    from hat.byteprob.bytelevel import Ensemble, byte_model, load_byte_model
    from hat.checkpoint import CheckpointError, load_model
    from hat.generate import Sampling, check_request
    from hat.sampling import Utf8Stream
    from hat.text.bpe import TokenizerError

    sampling = Sampling(args.temperature, args.top_k, args.top_p, args.seed)
    try:
        check_request(prompts, args.max_new_bytes, sampling, stops)
    except ValueError as error:
        parser.error(str(error))
    try:
        loaded = load_model(args.checkpoint)
        byte_level = None
        if loaded.config.data.format != "eqinfo" and (args.also or loaded.config.model.kind == "token_lm"):
            models = [byte_model(loaded), *(load_byte_model(path) for path in args.also)]
            byte_level = models[0] if len(models) == 1 else Ensemble(models, args.weights, args.ensemble)
    except (CheckpointError, TokenizerError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    compressed = loaded.config.data.format == "eqinfo"
    if (compressed or byte_level is not None) and args.top_p < 1.0:
        parser.error("--top-p is not supported for token models and ensembles (byte-level sampling)")
    if compressed:
        from hat.compress.generate import sample_eqinfo_bytes  # M2: tokens -> windows -> M1 decodes the bytes

        sampler = lambda prompt: sample_eqinfo_bytes(  # noqa: E731
            loaded, prompt, args.max_new_bytes, args.temperature, args.top_k, args.seed
        )
        pieces = _stopped_pieces(sampler, prompts, stops)
    elif byte_level is not None:
        from hat.byteprob.bytelevel import sample

        sampler = lambda prompt: sample(byte_level, prompt, args.max_new_bytes, args.temperature, args.top_k, args.seed)
        pieces = _stopped_pieces(sampler, prompts, stops)
    else:
        pieces = _cached_pieces(loaded, prompts, args, sampling, stops)
    streams = [Utf8Stream() for _ in prompts]
    texts = [stream.feed(prompt) for stream, prompt in zip(streams, prompts)]
    if len(prompts) == 1:
        sys.stdout.write(texts[0])
        sys.stdout.flush()
        for _, piece in pieces:
            sys.stdout.write(streams[0].feed(piece))
            sys.stdout.flush()
        sys.stdout.write(streams[0].close() + "\n")
        return 0
    for row, piece in pieces:
        texts[row] += streams[row].feed(piece)
    for index, (text, stream) in enumerate(zip(texts, streams)):
        sys.stdout.write(f"--- {index}\n{text}{stream.close()}\n")
    return 0


def _cached_pieces(loaded, prompts: list[bytes], args: argparse.Namespace, sampling, stops: list[bytes]):
    """HAT and byte models: `hat.generate` (cached unless --no-cache), after noting prompts cut to the context."""
    from hat.data.layout import fit_context
    from hat.generate import generate

    config = loaded.config
    for index, prompt in enumerate(prompts):
        kept = fit_context(prompt, config.data.seq_bytes, config.data.max_words, config.model.max_word_bytes)
        if len(kept) < len(prompt) and not args.no_cache:
            print(
                f"note: prompt {index} has {len(prompt):,} bytes, more than the model's context of "
                f"{config.data.seq_bytes:,} bytes / {config.data.max_words} words; its last {len(kept):,} bytes "
                "(whole words) are used",
                file=sys.stderr,
            )
    return generate(loaded, prompts, args.max_new_bytes, sampling, stops, use_cache=not args.no_cache)


def _stopped_pieces(sampler, prompts: list[bytes], stops: list[bytes]):
    """Byte-level samplers (token models, ensembles, compressed-text M2): one prompt after the other, with the
    stop rule of cached generation (a stop string and what follows are not shown)."""
    from hat.sampling import StopMatcher

    for row, prompt in enumerate(prompts):
        matcher = StopMatcher(stops)
        for value in sampler(prompt):
            shown, stopped = matcher.feed(bytes([value]))
            if shown:
                yield row, shown
            if stopped:
                break
        if rest := matcher.flush():
            yield row, rest


if __name__ == "__main__":
    sys.exit(main())
