"""A GGUF's byte-level BPE tokenizer (`tokenizer.ggml.*` metadata) as a Hugging Face `tokenizer.json`.

llama.cpp stores a BPE tokenizer as its vocabulary (`tokens`, in GPT-2's byte-to-character alphabet), its merges in
rank order, each token's type (1 normal, 3 control, 4 user-defined, ...), the bos/eos ids and whether to add them,
and the *name* of its pre-tokenizer (`tokenizer.ggml.pre`), whose rules live in llama.cpp's source
(`llama-vocab.cpp`). The file written here spells those rules as HF `tokenizers` components, so that it encodes text
as the model's own tokenizer does:

- `gpt2` (and llama.cpp's other users of GPT-2's rule): GPT-2's regex
  `'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+` (HF `ByteLevel(use_regex)`).
- `smollm` (SmolLM, SmolLM2; llama.cpp groups it with starcoder, refact, command-r, codeshell): every digit on its
  own (`\\p{N}`), then GPT-2's regex: HF `Digits(individual_digits)` + `ByteLevel(use_regex)`, which is how
  SmolLM2's own tokenizer.json is built.
- `llama-bpe` (Llama 3 and its family): Llama 3's regex (case-insensitive contractions, `\\p{N}{1,3}` digit groups,
  newline runs) with `ignore_merges` (a pre-token that is itself a token is not merged up from bytes), as llama.cpp
  does for that family.

Control tokens (type 3) become special added tokens and user-defined ones (type 4) plain added tokens, so text that
spells them encodes to them, as in llama.cpp. `add_bos_token` / `add_eos_token` become a post-processor that adds
them (llama.cpp's default for the Llama 3 family is to add bos). Unknown pre-tokenizer names are refused by name:
a guessed rule would encode differently without any error.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from hat.checkpoint.store import ConversionError
from hat.convert.gguf import GGUFFile

# llama.cpp's token types (llama_token_type): 3 = control, 4 = user-defined.
CONTROL, USER_DEFINED = 3, 4

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_GPT2_NAMES = ("gpt2", "mpt", "olmo", "jais", "trillion")
_DIGITS_THEN_GPT2_NAMES = ("smollm", "starcoder", "refact", "command-r", "codeshell")
_LLAMA3_NAMES = ("llama-bpe", "llama3", "llama-v3", "falcon3")
SUPPORTED_PRE = _GPT2_NAMES + _DIGITS_THEN_GPT2_NAMES + _LLAMA3_NAMES


def _pre_tokenizer(pre: str) -> tuple[pre_tokenizers.PreTokenizer, bool]:
    """The HF pre-tokenizer for llama.cpp's pre-tokenizer name, and whether BPE ignores merges."""
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    if pre in _GPT2_NAMES:
        return byte_level, False
    if pre in _DIGITS_THEN_GPT2_NAMES:
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level]), False
    if pre in _LLAMA3_NAMES:
        split = pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False)
        no_regex = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)
        return pre_tokenizers.Sequence([split, no_regex]), True
    raise ConversionError(
        f"unsupported tokenizer.ggml.pre {pre!r} (supported: {', '.join(SUPPORTED_PRE)}); the weights convert with "
        "--to hat, which needs no tokenizer"
    )


def gguf_tokenizer(file: GGUFFile) -> Tokenizer:
    """The HF tokenizer a GGUF's `tokenizer.ggml.*` metadata describes (byte-level BPE only)."""
    model = file.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise ConversionError(
            f"{file.path}: tokenizer.ggml.model={model!r} is not a byte-level BPE ('gpt2'); hat writes tokenizer.json "
            "only for byte-level BPE (convert with --to hat, which needs no tokenizer)"
        )
    pre = str(file.get("tokenizer.ggml.pre", "(none)"))
    pre_tokenizer, ignore_merges = _pre_tokenizer(pre)
    tokens = [str(t) for t in file.require("tokenizer.ggml.tokens")]
    merges = [tuple(str(m).split(" ", 1)) for m in file.require("tokenizer.ggml.merges")]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ConversionError(f"{file.path}: tokenizer.ggml.tokens holds duplicate tokens")
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, ignore_merges=ignore_merges))
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.ByteLevel()
    types = list(file.get("tokenizer.ggml.token_type", [1] * len(tokens)))
    marked = lambda wanted: [t for t, token_type in zip(tokens, types) if token_type == wanted]  # noqa: E731
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in marked(CONTROL)])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in marked(USER_DEFINED)])
    tokenizer.post_processor = _post_processor(file, tokens, default_bos=pre in _LLAMA3_NAMES)
    return tokenizer


def _post_processor(file: GGUFFile, tokens: list[str], default_bos: bool) -> processors.PostProcessor:
    """Adds bos / eos around each text when the GGUF says so (as llama.cpp's tokenizer does)."""
    added = []
    for role, default in (("bos", default_bos), ("eos", False)):
        token_id = file.get(f"tokenizer.ggml.{role}_token_id")
        if token_id is not None and bool(file.get(f"tokenizer.ggml.add_{role}_token", default)):
            added.append((role, tokens[int(token_id)], int(token_id)))
    if not added:
        return processors.ByteLevel(trim_offsets=False)
    bos = [f"{t}" for role, t, _ in added if role == "bos"]
    eos = [f"{t}" for role, t, _ in added if role == "eos"]
    return processors.TemplateProcessing(
        single=" ".join([*bos, "$A", *eos]),
        pair=" ".join([*bos, "$A", *eos, *bos, "$B:1", *[f"{t}:1" for t in eos]]),
        special_tokens=[(t, i) for _, t, i in added],
    )


def write_gguf_tokenizer(file: GGUFFile, path: str | Path) -> None:
    """Writes the GGUF's tokenizer as a `tokenizer.json` file at `path`."""
    gguf_tokenizer(file).save(str(Path(path)))
