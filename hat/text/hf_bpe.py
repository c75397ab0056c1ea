"""Foreign byte-level BPE tokenizers (HF `tokenizers` tokenizer.json files of real models: GPT-2, Llama 3, SmolLM2).

`HFByteBPE` gives `hat.byteprob` what it needs from such a file: every token's bytes, the canonical encoding of a
text (HF's own pipeline), BPE of one chunk's bytes (any bytes, HF's merges without the pre-tokenizer), and the
pre-tokenizer's chunk boundaries of a text (HF's own pre-tokenizer). Unlike hat's own rule (`hat.text.bpe`), these
pre-tokenizers look ahead (GPT-2's `\\s+(?!\\S)`, Llama 3's `\\s*[\\r\\n]+`), so a prefix's last chunk boundaries are
not final until more text arrives; `hat.byteprob.lookahead` handles that.

Supported (anything else is a `TokenizerError`): a BPE model over GPT-2's 256 byte characters, with or without
`ignore_merges` (Llama 3's: a chunk that is itself a token is that token, whatever the merges would make of it),
without dropout, word prefixes/suffixes or a normalizer; a pre-tokenizer made of `Split` (isolated,
not inverted), `Digits` and `ByteLevel` (no prefix space) steps; added tokens only as special tokens. Special
tokens never come out of text: `encode` treats their spelling as ordinary text, and they have no bytes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import regex
from tokenizers import Tokenizer

from hat.text.bpe import (
    BYTE_CHARS,
    BPETokenizer,
    TokenBytes,
    TokenizerError,
    _byte_chars,
    has_hat_rule,
    load_tokenizer,
)

# The pattern ByteLevel's own `use_regex` applies (GPT-2's).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
END_OF_TEXT_NAMES = ("<|endoftext|>", "<|end_of_text|>")
_CHAR_TO_BYTE = {char: value for value, char in enumerate(BYTE_CHARS)}
# What a regex pattern spells out literally, once property classes, escapes and syntax are removed.
_PATTERN_SYNTAX = regex.compile(r"\\[pP]\{[^}]*\}|\\.|\{\d+(,\d*)?\}|\(\?([a-zA-Z]*:|<?[!=])?|[?|+*()\[\]^-]")


def _letters_only_in_contractions(pattern: str) -> bool:
    """Whether every letter `pattern` spells out stands in an apostrophe contraction (`'s`, `'re`, `'ll`: at most
    two letters right after an apostrophe), so that a letter more than two characters after the last apostrophe is
    matched only through letter classes. GPT-2's, Llama 3's and Qwen's patterns are of this kind."""
    bare = regex.sub(r"\\[pP]\{[^}]*\}|\\.|\(\?[a-zA-Z]*[:)]", "", pattern)
    return not regex.search(r"\p{L}", regex.sub(r"'\p{L}{1,2}(?!\p{L})", "", bare))


def _steps(pre_tokenizer: dict | None) -> list[dict]:
    if pre_tokenizer is None:
        return []
    if pre_tokenizer.get("type") == "Sequence":
        return [step for inner in pre_tokenizer["pretokenizers"] for step in _steps(inner)]
    return [pre_tokenizer]


def _check_step(step: dict) -> list[str]:
    """The regex patterns one pre-tokenizer step applies; unsupported steps raise."""
    step_type = step.get("type")
    if step_type == "Split" and step.get("behavior") == "Isolated" and not step.get("invert"):
        pattern = step["pattern"]
        return [pattern["Regex"] if "Regex" in pattern else regex.escape(pattern["String"])]
    if step_type == "Digits":
        return []
    if step_type == "ByteLevel" and not step.get("add_prefix_space"):
        return [GPT2_PATTERN] if step.get("use_regex", True) else []
    raise TokenizerError(f"unsupported pre-tokenizer step {json.dumps(step)[:200]}")


class HFByteBPE(TokenBytes):
    """A foreign byte-level BPE tokenizer (see the module docstring).

    `token_bytes[id]` (b"" for special tokens), `vocab_size`, `eot_id` (the document separator: the special token
    spelled as one of `END_OF_TEXT_NAMES`, else `eos_id`, the model's own eos from its metadata),
    `encode(bytes)` (UTF-8 text only), `bpe(pieces)` (each one chunk), `merges_only(pieces)` (the same without
    `ignore_merges`), `ignore_merges`, `chunk_starts(str)` (character offsets),
    `literals` (characters the pre-tokenizer's patterns spell out, case variants included where they ignore case),
    `contraction_letters_only` (every literal letter stands in an apostrophe contraction of at most two letters),
    `missing_bytes` (byte values without a token).
    """

    prefix_stable = False

    def __init__(self, spec: dict, path: Path | None = None, eos_id: int | None = None) -> None:
        self.path = path
        where = path or "tokenizer"
        model = spec.get("model") or {}
        if model.get("type") != "BPE":
            raise TokenizerError(f"{where}: not a BPE tokenizer (model type {model.get('type')!r})")
        for option in ("dropout", "continuing_subword_prefix", "end_of_word_suffix"):
            if model.get(option):
                raise TokenizerError(f"{where}: BPE option {option}={model[option]!r} is not supported")
        if spec.get("normalizer"):
            raise TokenizerError(f"{where}: tokenizers with a normalizer are not supported")
        patterns = [p for step in _steps(spec.get("pre_tokenizer")) for p in _check_step(step)]
        if not any(s.get("type") == "ByteLevel" for s in _steps(spec.get("pre_tokenizer"))):
            raise TokenizerError(f"{where}: not a byte-level tokenizer (no ByteLevel pre-tokenizer)")
        added = spec.get("added_tokens") or []
        plain = [t["content"] for t in added if not t.get("special")]
        if plain:
            raise TokenizerError(f"{where}: non-special added tokens are not supported: {plain[:3]}")
        vocab: dict[str, int] = dict(model.get("vocab") or {})
        # Real vocabularies may lack bytes that text never (0xc0, 0xff) or rarely (some control bytes) holds:
        # those bytes get probability 0, and text holding one cannot be encoded.
        self.missing_bytes = frozenset(value for value, c in enumerate(BYTE_CHARS) if c not in vocab)
        if len(self.missing_bytes) > 64:
            missing = len(self.missing_bytes)
            raise TokenizerError(f"{where}: not a byte-level vocabulary ({missing} byte tokens missing)")
        self.special_ids = sorted({t["id"] for t in added})
        # The pretraining document separator comes first: a chat model's eos ends a turn, not a document
        # (SmolLM2-Instruct's GGUF says eos = <|im_end|>; its documents were separated by <|endoftext|>).
        eot = [t["id"] for name in END_OF_TEXT_NAMES for t in added if t["content"] == name]
        eot += [eos_id] if eos_id in self.special_ids else []
        if not eot:
            raise TokenizerError(
                f"{where}: no end-of-text special token (one of {', '.join(END_OF_TEXT_NAMES)}, or the model's eos "
                f"id as a special token; got eos id {eos_id})"
            )
        self.eot_id = eot[0]
        self.vocab_size = max([*vocab.values(), *self.special_ids]) + 1
        self.token_bytes: list[bytes] = [b""] * self.vocab_size
        specials = set(self.special_ids)
        for token, index in vocab.items():
            if index not in specials:
                self.token_bytes[index] = bytes(_CHAR_TO_BYTE[c] for c in token)
        self.literals = frozenset(
            variant
            for pattern in patterns
            for char in _PATTERN_SYNTAX.sub("", pattern)
            for variant in ({char, char.lower(), char.upper()} if "(?i" in pattern else {char})
        )
        self.contraction_letters_only = all(_letters_only_in_contractions(p) for p in patterns)
        self._merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model.get("merges") or []]
        self._vocab = vocab
        self.hf = Tokenizer.from_str(json.dumps(spec))
        self.hf.encode_special_tokens = True
        self.ignore_merges = bool(model.get("ignore_merges"))
        bare = dict(spec, pre_tokenizer=None, post_processor=None, normalizer=None, decoder=None)
        self._bpe = Tokenizer.from_str(json.dumps(bare))
        self._bpe.encode_special_tokens = True
        self._merges_only = self._bpe
        if self.ignore_merges:
            self._merges_only = Tokenizer.from_str(json.dumps(dict(bare, model=dict(model, ignore_merges=False))))
            self._merges_only.encode_special_tokens = True
        self._pre = self.hf.pre_tokenizer

    def encode(self, data: bytes) -> list[int]:
        """The canonical encoding of UTF-8 text (HF's own pipeline; special-token spellings are plain text)."""
        return self.encode_batch([data])[0]

    def encode_batch(self, texts: Sequence[bytes]) -> list[list[int]]:
        """`encode` of many texts (HF encodes the batch in parallel); text that is not UTF-8 or holds a byte no
        token holds is a `TokenizerError` (the vocabulary cannot spell it)."""
        strings = [self._text(data) for data in texts]
        nonempty = [i for i, text in enumerate(strings) if text]
        out: list[list[int]] = [[] for _ in texts]
        encoded = self.hf.encode_batch([strings[i] for i in nonempty], add_special_tokens=False)
        for i, encoding in zip(nonempty, encoded):
            out[i] = encoding.ids
        return out

    def _text(self, data: bytes) -> str:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise TokenizerError(f"{self.path or 'tokenizer'}: text is not valid UTF-8 ({error})") from None
        missing = self.missing_bytes.intersection(data)
        if missing:
            raise TokenizerError(f"{self.path or 'tokenizer'}: no token holds byte {min(missing):#04x}")
        return text

    def bpe(self, pieces: Sequence[bytes]) -> list[list[int]]:
        """The encoding of each piece as one chunk (any bytes, no pre-tokenization): the token it is where
        `ignore_merges` is on and the piece is a token, else the tokens the merges make of it."""
        return self._encode_chunks(self._bpe, pieces)

    def merges_only(self, pieces: Sequence[bytes]) -> list[list[int]]:
        """The tokens the merges alone make of each piece (`bpe` without `ignore_merges`)."""
        return self._encode_chunks(self._merges_only, pieces)

    @staticmethod
    def _encode_chunks(tokenizer: Tokenizer, pieces: Sequence[bytes]) -> list[list[int]]:
        nonempty = [i for i, p in enumerate(pieces) if p]
        out: list[list[int]] = [[] for _ in pieces]
        encoded = tokenizer.encode_batch(
            [[_byte_chars(pieces[i])] for i in nonempty], is_pretokenized=True, add_special_tokens=False
        )
        for i, encoding in zip(nonempty, encoded):
            out[i] = encoding.ids
        return out

    @cached_property
    def token_chars(self) -> list[str]:
        """Each token's bytes in GPT-2's byte characters (BPE's own alphabet; "" for special tokens)."""
        return [_byte_chars(b) for b in self.token_bytes]

    def pair_encodings(self, left: int, rights: Sequence[int]) -> list[list[int]]:
        """The merges' tokens of bytes(left) + bytes(r) for each r (one chunk each): the pair test of
        `hat.byteprob.lookahead`."""
        chars = self.token_chars
        head = chars[left]
        encoded = self._merges_only.encode_batch(
            [[head + chars[r]] for r in rights], is_pretokenized=True, add_special_tokens=False
        )
        return [encoding.ids for encoding in encoded]

    @cached_property
    def spines(self) -> MergeSpines | None:
        """The merge trees' spines for the vectorised pair test (None where the merges do not allow it)."""
        return MergeSpines.build(self._merges, self._vocab, self.vocab_size)

    def pair_tests(self, left: int, rights: np.ndarray) -> np.ndarray:
        """Whether the merges make [left, r] of bytes(left) + bytes(r) for each r, for tokens the merges make of
        their own bytes (others: False; `ignore_merges` plays no part). By the merge spines when the merges allow
        it, else through HF's BPE."""
        if self.spines is not None:
            return self.spines.pair_tests(left, rights)
        out = np.zeros(len(rights), bool)
        for k, (r, ids) in enumerate(zip(rights.tolist(), self.pair_encodings(left, rights.tolist()))):
            out[k] = ids == [left, r]
        return out

    def chunk_starts(self, text: str) -> list[int]:
        """Character offsets where the pre-tokenizer starts a chunk of `text` (0 excluded)."""
        return [start for _, (start, _) in self._pre.pre_tokenize_str(text)[1:]] if text else []


class MergeSpines:
    """The BPE pair test without running BPE: `BPE(bytes(l) + bytes(r)) == [l, r]` for canonical l and r.

    HF's BPE applies the lowest-ranked merge present (the leftmost on a tie). Where every merge's parts are made
    by lower-ranked merges (trained vocabularies are), that is applying merges in rank order, so until the first
    merge across the boundary each side evolves as it does alone: the left side's last symbol runs up l's right
    spine x_0 (its last byte), x_1, ..., x_a = l, x_i living from its own merge's rank c(x_i) until c(x_{i+1})
    (infinity for l), and the right side's first symbol up r's left spine y_0, ..., y_b = r. The boundary survives
    exactly when no cross merge (x_i, y_j) of rank m fires while both live: m < c(x_{i+1}) (at m = c(x_{i+1}) the
    left side's own merge is leftmost and wins) and m <= c(y_{j+1}) (there the cross merge is leftmost). A token
    made by two different merges, or a merge whose part comes later, makes `build` return None (HF decides).
    """

    NEVER = np.iinfo(np.int64).max  # the rank of a merge that does not exist, or of a spine's end

    def __init__(self, spine_ranks: tuple[np.ndarray, np.ndarray], spines: tuple[np.ndarray, np.ndarray],
                 by_left: dict[int, tuple[np.ndarray, np.ndarray]], vocab_size: int) -> None:  # fmt: skip
        (self.right_ids_VxS, self.left_ids_VxS), (self.right_c_VxS, self.left_c_VxS) = spines, spine_ranks
        self.by_left, self.vocab_size = by_left, vocab_size

    @classmethod
    def build(cls, merges: Sequence[tuple[str, str]], vocab: dict[str, int], vocab_size: int) -> MergeSpines | None:
        made_by: dict[int, tuple[int, int, int]] = {}  # token -> (rank, left part, right part)
        for rank, (a, b) in enumerate(merges):
            ia, ib, out = vocab.get(a), vocab.get(b), vocab.get(a + b)
            if ia is None or ib is None or out is None or out in made_by:
                return None
            made_by[out] = (rank, ia, ib)
        for rank, a, b in made_by.values():
            if made_by.get(a, (-1,))[0] >= rank or made_by.get(b, (-1,))[0] >= rank:
                return None
        depth = 1
        spines = []
        for side in (2, 1):  # the right spine follows right parts, the left spine left parts
            chains = []
            for t in range(vocab_size):
                chain = [t]
                while chain[-1] in made_by:
                    chain.append(made_by[chain[-1]][side])
                chains.append(chain[::-1])  # from the byte up to the token
                depth = max(depth, len(chain))
            spines.append(chains)
        inf = cls.NEVER
        ids = [np.full((vocab_size, depth + 1), -1, np.int64) for _ in spines]
        ranks = [np.full((vocab_size, depth + 1), inf, np.int64) for _ in spines]
        for chains, ids_VxS, ranks_VxS in zip(spines, ids, ranks):
            for t, chain in enumerate(chains):
                ids_VxS[t, : len(chain)] = chain
                ranks_VxS[t, : len(chain)] = [made_by[x][0] if x in made_by else -1 for x in chain]
        grouped: dict[int, list[tuple[int, int]]] = {}
        for rank, a, b in made_by.values():
            grouped.setdefault(a, []).append((b, rank))
        by_left = {a: (np.array([b for b, _ in bs]), np.array([r for _, r in bs])) for a, bs in grouped.items()}
        return cls((ranks[0], ranks[1]), (ids[0], ids[1]), by_left, vocab_size)

    def pair_tests(self, left: int, rights: np.ndarray) -> np.ndarray:
        """See `HFByteBPE.pair_tests` (canonical tokens; the caller checks canonicity)."""
        never = self.NEVER
        ok = np.ones(len(rights), bool)
        # y_j and c(y_{j+1}) side by side; past the spine's end ids are -1 and ranks NEVER.
        y_ids_NxS, y_next_NxS = self.left_ids_VxS[rights][:, :-1], self.left_c_VxS[rights][:, 1:]
        x_chain, x_ranks = self.right_ids_VxS[left], self.right_c_VxS[left]
        for i, x in enumerate(x_chain[:-1].tolist()):
            if x < 0:
                break
            parts = self.by_left.get(x)
            if parts is None:  # no merge has x on its left
                continue
            rank_with_V = np.full(self.vocab_size, never, np.int64)
            rank_with_V[parts[0]] = parts[1]
            m_NxS = np.where(y_ids_NxS >= 0, rank_with_V[np.maximum(y_ids_NxS, 0)], never)
            fires = (m_NxS < x_ranks[i + 1]) & (m_NxS <= y_next_NxS) & (m_NxS < never)
            ok &= ~fires.any(axis=1)
        return ok


def load_hf_tokenizer(path: str | Path, eos_id: int | None = None) -> HFByteBPE:
    """Loads a foreign tokenizer.json (`eos_id`: see `HFByteBPE`); a missing, unreadable or unsupported file is a
    `TokenizerError`."""
    return HFByteBPE(_read_spec(Path(path)), Path(path), eos_id)


def _read_spec(path: Path) -> dict:
    if not path.is_file():
        raise TokenizerError(f"tokenizer file not found: {path}")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise TokenizerError(f"cannot read tokenizer file {path}: {error}") from None


def load_any_tokenizer(path: str | Path, eos_id: int | None = None) -> BPETokenizer | HFByteBPE:
    """The one tokenizer loader: a tokenizer.json as hat's own `BPETokenizer` when hat trained it, else as a
    foreign `HFByteBPE` (`eos_id`, the model's eos from its metadata, is used when the file names no end-of-text
    token)."""
    path = Path(path)
    spec = _read_spec(path)
    return load_tokenizer(path) if has_hat_rule(spec) else HFByteBPE(spec, path, eos_id)
