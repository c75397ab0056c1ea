"""`hat-generate`: sample continuations of prompts from a trained hat checkpoint of any kind.

    hat-generate runs/tiny --prompt "def main(" --max-new-bytes 200 --temperature 0.8
    hat-generate runs/tiny --prompt "import " --prompt "class " --temperature 0 --stop "\n\n"
    hat-generate runs/tiny --prompt "def " --no-cache        # the uncached path, for checking/timing
    hat-generate runs/bpe_tiny --prompt "def pri"       # token LM, exact byte by byte
    hat-generate runs/hat_tiny --also runs/bpe_tiny --ensemble product --prompt "import "

One prompt streams its continuation as it is made; several prompts run as one batch and print in order. Bytes that
are not valid UTF-8 show as U+FFFD. A prompt longer than the model's trained context keeps its most recent whole
words (filling half the context); a note on stderr says so. Every path samples with the same settings
(`hat.sampling`: temperature, top-k, top-p, seed, stop strings). A token LM (data.format bpe) samples from its exact
next-byte distribution, so a prompt that ends inside a token continues that token; `--also` with `--ensemble`
samples from a byte-level ensemble of several checkpoints.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence

from hat.cli import make_parser, run


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command; returns the exit code."""
    parser = make_parser("Generate text from a hat checkpoint.", __doc__.split("\n\n", 1)[1])
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

    from hat.byteprob.bytelevel import Ensemble
    from hat.checkpoint import load_model
    from hat.generate import generate, generate_byte_level
    from hat.kinds import kind_of
    from hat.sampling import Sampling, SamplingError, check_request

    sampling = Sampling(args.temperature, args.top_k, args.top_p, args.seed)
    try:
        check_request(prompts, args.max_new_bytes, sampling, stops)
    except SamplingError as error:
        parser.error(str(error))
    loaded = load_model(args.checkpoint)
    kind = kind_of(loaded.config)
    if args.also:
        others = [load_model(path) for path in args.also]
        members = [kind_of(model.config).byte_model(model) for model in [loaded, *others]]
        ensemble = Ensemble(members, args.weights, args.ensemble)
        pieces = generate_byte_level(ensemble, prompts, args.max_new_bytes, sampling, stops)
    else:
        for index, prompt in enumerate(prompts):
            kept = kind.prompt_bytes_kept(loaded.config, prompt)
            if kept < len(prompt) and not args.no_cache:
                print(
                    f"note: prompt {index} has {len(prompt):,} bytes, more than the model's context; its last "
                    f"{kept:,} bytes (whole words) are used",
                    file=sys.stderr,
                )
        pieces = generate(loaded, prompts, args.max_new_bytes, sampling, stops, use_cache=not args.no_cache)
    _print_pieces(prompts, pieces)
    return 0


def _print_pieces(prompts: list[bytes], pieces: Iterator[tuple[int, bytes]]) -> None:
    """One prompt streams its continuation as it comes; several print in order once all are done."""
    from hat.sampling import Utf8Stream

    streams = [Utf8Stream() for _ in prompts]
    texts = [stream.feed(prompt) for stream, prompt in zip(streams, prompts)]
    if len(prompts) == 1:
        sys.stdout.write(texts[0])
        sys.stdout.flush()
        for _, piece in pieces:
            sys.stdout.write(streams[0].feed(piece))
            sys.stdout.flush()
        sys.stdout.write(streams[0].close() + "\n")
        return
    for row, piece in pieces:
        texts[row] += streams[row].feed(piece)
    for index, (text, stream) in enumerate(zip(texts, streams)):
        sys.stdout.write(f"--- {index}\n{text}{stream.close()}\n")


def entry() -> None:
    """The `hat-generate` console script."""
    sys.exit(run(main))


if __name__ == "__main__":
    entry()
