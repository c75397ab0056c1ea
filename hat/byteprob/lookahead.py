"""Exact next-byte distributions through foreign byte-level BPE tokenizers whose pre-tokenizer looks ahead.

Definition of a valid token sequence (used here and checked literally by the tests). A tokenizer cuts a text z
into chunks (its pre-tokenizer) and BPE-encodes each chunk on its own. A token sequence t with bytes w is *valid*
when some text z whose UTF-8 starts with w has chunks c_1, c_2, ... such that t is, chunk by chunk, the BPE of
the parts of z's chunks inside w:

    t = BPE(c_1) + ... + BPE(c_{m-1}) + BPE(c_m ∩ w)        (c_m: the chunk holding w's last byte)

Tokens never cross a chunk boundary, and the last chunk may continue past w (it is BPE-encoded on the bytes seen
so far, as BPE's merges inside a prefix run as if the rest were absent). BPE(c) is the tokenizer's encoding of one
chunk: the merges' tokens, or with `ignore_merges` (Llama 3) the one token c where c is a token. With
`ignore_merges` the valid sequences are not closed under prefixes (the merges' tokens of a part that is itself a
token are invalid, yet grow into a valid longer part), so the stream also keeps those "grown" sequences, which only
ever continue their last chunk. For a prefix-stable rule this is
`encode(decode(t)) == t`, the definition of `hat.byteprob.exact`; here the chunk boundaries near the end of w
depend on what follows (GPT-2's `\\s+(?!\\S)` gives a space to the next word; Llama 3's `\\s*[\\r\\n]+` joins
a whitespace run with a later newline). A complete document x has one valid encoding, encode(x) (z = x).
Covers, P~ and q(b | x) are then defined exactly as in `hat.byteprob.exact`, over this set of valid sequences.

Which continuations matter. The pre-tokenizer sees characters only through classes: its patterns' literal
characters (contraction letters, ' ', "'", each of \\t \\n \\r), other whitespace, letters, numbers and
everything else; and runs of one class (other than literals and numbers) longer than three behave as runs of three.
Every chunk end it sets inside a text is decided by the next character, or, inside a whitespace run, by the
next whitespace character and the one after it. So the chunkings of w's bytes that continuations can produce are
exactly those produced by w + y for y in {"", one class representative, a whitespace representative plus one
more}, with a partial last character first completed by one representative of each class its completions have.
The tests check this against a literal enumeration over a larger, independent set of continuations.

Algorithm. Everything before the last chunk boundary that every continuation keeps (`final`) is encoded once.
At each byte position k the stream keeps the valid sequences that decode to x[:k] (usually one; two inside
whitespace runs) with their probabilities and the model's next-token distribution, so streaming costs about
one model call per byte. A cover s + [tau] (s ending at k) is valid when some chunking of x[:k] + tau that
continuations allow keeps tau inside one chunk and agrees with s; then tau must be the BPE of its own bytes (a
chunk starts at k) or a valid BPE neighbour of s's last token (the chunk continues): a BPE encoding is canonical
exactly when each adjacent token pair is (the pair test of Berglund & van der Merwe 2023, used by ByteSampler).
With `ignore_merges` every token is valid alone, and a token continues a chunk when, besides the pair test on the
merges' tokens, the chunk's part so far plus the token is not itself a token.
"""

from __future__ import annotations

import unicodedata
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hat.byteprob.exact import EOT_OUTCOME, TokenIndex, outcome_logprobs
from hat.byteprob.models import Prefix, TokenModel
from hat.text.bpe import TokenizerError
from hat.text.hf_bpe import HFByteBPE

WHITE_SPACE = frozenset(
    chr(c) for c in [*range(0x9, 0xE), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F,
                     0x205F, 0x3000]
)  # fmt: skip
_OTHER_SPACE, _NUMBER, _OTHER = "\x0b", "0", "!"
_SPACES = (" ", "\t", "\n", "\r", _OTHER_SPACE)
_LONGEST_RUN = 3


def split_utf8(data: bytes) -> tuple[str, bytes] | None:
    """`data` as complete characters plus the bytes of an unfinished last one; None if it is not a prefix of
    valid UTF-8."""
    for cut in range(len(data), max(-1, len(data) - 4), -1):
        try:
            text = data[:cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        tail = data[cut:]
        return (text, tail) if _completable(tail) else None
    return None


def _completable(tail: bytes) -> bool:
    """Whether `tail` (at most 3 bytes) starts some UTF-8 character."""
    if not tail:
        return True
    for filler in (b"\x80", b"\xbf", b"\x90", b"\xa0"):
        for length in range(1, 4):
            try:
                (tail + filler * length).decode("utf-8")
                return True
            except UnicodeDecodeError:
                pass
    return False


class CharClasses:
    """The classes a tokenizer's pre-tokenizer tells characters apart by (see the module docstring)."""

    def __init__(self, literals: frozenset[str], contraction_letters_only: bool = False) -> None:
        self.exact = frozenset(set(literals) | {" ", "\t", "\n", "\r", "'"})
        self.contraction_letters_only = contraction_letters_only
        self.literal_letters = frozenset(c for c in self.exact if c.isalpha())
        self.letter = next(c for c in "aqxzjkbcfghinopuwy" if c not in self.exact)
        self.alphabet = sorted(self.exact | {_OTHER_SPACE, self.letter, _NUMBER, _OTHER})
        self.spaces = [c for c in self.alphabet if c in WHITE_SPACE]
        self.collapsible = frozenset({self.letter, _OTHER, *_SPACES} - self.literal_letters - {"'"})
        self._completions: dict[bytes, tuple[str, ...]] = {}

    def of(self, char: str) -> str:
        """The representative of `char`'s class."""
        if char in self.exact:
            return char
        if char in WHITE_SPACE:
            return _OTHER_SPACE
        category = unicodedata.category(char)[0]
        if category == "L":
            # A letter that case-folds onto a literal one (ſ -> s) stays itself: case-insensitive patterns see it.
            if {char.lower(), char.upper(), char.casefold()} & self.literal_letters:
                return char
            return self.letter
        return _NUMBER if category == "N" else _OTHER

    def signature(self, text: str) -> tuple[str, list[int]]:
        """`text` with every character replaced by its class and long runs shortened, and for each kept character
        its index in `text` (a run keeps its first and last two characters)."""
        classes = [self.of(c) for c in text]
        if self.contraction_letters_only:
            # A literal letter counts as itself only where a contraction can hold it: within two characters after
            # an apostrophe, or among the first two (an apostrophe may precede the text). Elsewhere the patterns
            # see it through letter classes only, so it joins the plain letter class (and its runs collapse).
            for i in range(2, len(classes)):
                if classes[i] != self.letter and classes[i].isalpha() and "'" not in (text[i - 1], text[i - 2]):
                    classes[i] = self.letter
        out: list[str] = []
        index: list[int] = []
        i = 0
        while i < len(classes):
            j = i
            while j < len(classes) and classes[j] == classes[i]:
                j += 1
            keep = [i, j - 2, j - 1] if j - i > _LONGEST_RUN and classes[i] in self.collapsible else range(i, j)
            out += [classes[i]] * len(keep)
            index += list(keep)
            i = j
        return "".join(out), index

    def completions(self, partial: bytes) -> tuple[str, ...]:
        """One representative per class of the characters whose UTF-8 starts with `partial` (cached)."""
        found = self._completions.get(partial)
        if found is None:
            lead = partial[0]
            size = 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
            rest = 6 * (size - len(partial))
            known = lead & (0xFF >> (size + 1))
            for byte in partial[1:]:
                known = (known << 6) | (byte & 0x3F)
            classes = set()
            for code in range(known << rest, (known + 1) << rest):
                if code < 0x110000 and not 0xD800 <= code < 0xE000 and chr(code).encode().startswith(partial):
                    classes.add(self.of(chr(code)))
            found = self._completions[partial] = tuple(sorted(classes))
        return found

    def continuations(self, last: str | None) -> list[str]:
        """The continuations y that decide every chunk end inside a text whose last class is `last`."""
        out = ["", *self.alphabet]
        if last in WHITE_SPACE:
            out += [s + c for s in self.spaces for c in self.alphabet]
        return out


@dataclass(frozen=True)
class Piece:
    """A byte string as the pre-tokenizer sees it: its signature, the byte offset of every signature character
    (then the end of its complete characters), and the completions of an unfinished last character (empty when it
    ends at a character boundary)."""

    sig: str
    offsets: tuple[int, ...]
    completions: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, tuple[str, ...]]:
        """What chunkings depend on."""
        return self.sig, self.completions


def piece_of(classes: CharClasses, data: bytes) -> Piece | None:
    """The `Piece` of `data` (None when it is not a prefix of valid UTF-8)."""
    split = split_utf8(data)
    if split is None:
        return None
    text, partial = split
    sig, index = classes.signature(text)
    starts = np.cumsum([0] + [len(c.encode("utf-8")) for c in text]).tolist()
    completions = classes.completions(partial) if partial else ()
    if partial and not completions:
        return None
    return Piece(sig, tuple(starts[i] for i in index) + (starts[-1],), completions)


class LookaheadTable(TokenIndex):
    """Lookups for one foreign tokenizer: a `TokenIndex`, character classes, which tokens are the BPE of their own
    bytes, the BPE neighbours of each token (cached), and chunkings of signatures (cached)."""

    def __init__(self, tokenizer: HFByteBPE, cache_size: int = 4096) -> None:
        super().__init__(tokenizer.token_bytes, [tokenizer.eot_id, *tokenizer.special_ids])
        self.tokenizer, self.eot_id, self.cache_size = tokenizer, tokenizer.eot_id, cache_size
        self.classes = CharClasses(tokenizer.literals, tokenizer.contraction_letters_only)
        self._real = self.sorted_ids.tolist()
        # Which tokens the merges make of their own bytes (the pair test's tokens), and which are valid alone in
        # their chunk's part: those, or with `ignore_merges` every token (a chunk that is a token is that token).
        self.canonical = np.zeros(tokenizer.vocab_size, bool)
        for i, ids in zip(self._real, tokenizer.merges_only([tokenizer.token_bytes[i] for i in self._real])):
            self.canonical[i] = ids == [i]
        self.alone_valid = self.canonical
        if tokenizer.ignore_merges:
            self.alone_valid = np.zeros(tokenizer.vocab_size, bool)
            self.alone_valid[self._real] = True
        self._token_of = {tokenizer.token_bytes[i]: i for i in self._real}
        self._completed: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._pairs: OrderedDict[int, np.ndarray] = OrderedDict()
        self._chunkings: dict[tuple, list[tuple[int, ...]]] = {}
        self._fits: dict[tuple, frozenset[tuple[tuple[int, ...], bool]]] = {}
        # The piece of every token that starts at a character boundary, as an index into `pieces` (-1: none).
        self.pieces: list[Piece] = []
        index: dict[tuple, int] = {}
        self.token_piece = np.full(tokenizer.vocab_size, -1, np.int64)
        for i, data in enumerate(tokenizer.token_bytes):
            piece = piece_of(self.classes, data) if data and not 0x80 <= data[0] < 0xC0 else None
            if piece is not None:
                if piece.key not in index:
                    index[piece.key] = len(self.pieces)
                    self.pieces.append(piece)
                self.token_piece[i] = index[piece.key]

    def stream(self, model: TokenModel) -> LookaheadStream:
        """A `LookaheadStream` of `model` at the empty prefix."""
        return LookaheadStream(model, self)

    def neighbours(self, left: int, ids: np.ndarray) -> np.ndarray:
        """Boolean mask over `ids`: whether the merges make [left, r] of bytes(left) + bytes(r) for each r (the
        pair test; computed for the pairs asked for only, and cached per left token)."""
        known = self._pairs.get(left)  # per right token: 0 not asked yet, 1 not a neighbour, 2 a neighbour
        if known is None:
            known = self._pairs[left] = np.zeros(self.tokenizer.vocab_size, np.int8)
            if len(self._pairs) > self.cache_size:
                self._pairs.popitem(last=False)
        else:
            self._pairs.move_to_end(left)
        missing = ids[known[ids] == 0]
        if len(missing):
            # A pair holds only canonical tokens (were one side not its own BPE, neither would be the pair's).
            valid = self.tokenizer.pair_tests(left, missing) & self.canonical[missing] & self.canonical[left]
            known[missing] = np.where(valid, 2, 1)
        return known[ids] == 2

    def completes_token(self, head: bytes, ids: np.ndarray) -> np.ndarray:
        """Boolean mask over `ids`: whether head + bytes(r) is itself a token (with `ignore_merges` such a chunk
        part is that one token, so r cannot continue it). Cached per head."""
        found = self._completed.get(head)
        if found is None:
            found = np.zeros(self.tokenizer.vocab_size, bool)
            for i in self.with_prefix(head, len(head) + 1).tolist():
                rest = self._token_of.get(self.tokenizer.token_bytes[i][len(head) :])
                if rest is not None:
                    found[rest] = True
            self._completed[head] = found
            if len(self._completed) > self.cache_size:
                self._completed.popitem(last=False)
        return found[ids]

    def _starts(self, sig: str, completions: tuple[str, ...]) -> list[tuple[int, ...]]:
        """Chunk starts inside `sig` (interior; an unfinished last character's start counts) under every
        continuation, one tuple per continuation (the first: the text ends here, when it can)."""
        limit = len(sig) + (1 if completions else 0)
        if completions:
            texts = [sig + c + y for c in completions for y in self.classes.continuations(c)]
        else:
            texts = [sig + y for y in self.classes.continuations(sig[-1] if sig else None)]
        return [tuple(b for b in self.tokenizer.chunk_starts(t) if b < limit) for t in texts]

    def chunkings(self, piece: Piece) -> list[tuple[int, ...]]:
        """The interior chunk starts (signature offsets) that continuations give `piece`; the first is the one
        with no continuation (when `piece` ends at a character boundary). Cached by signature."""
        found = self._chunkings.get(piece.key)
        if found is None:
            starts = self._starts(*piece.key)
            found = self._chunkings[piece.key] = [starts[0], *sorted(set(starts[1:]) - {starts[0]})]
        return found

    def fits(self, context: Piece, token: Piece, inside_char: bool) -> frozenset[tuple[tuple[int, ...], bool]]:
        """How a token that follows `context` can lie inside one chunk: the set of (chunk starts inside the context,
        in its signature offsets; whether a chunk starts at the token) over every continuation. With `inside_char`
        the token goes on with the context's unfinished character (joined into `token`'s first character)."""
        key = (context.sig, token.key, inside_char)
        found = self._fits.get(key)
        if found is None:
            cut = len(context.sig)
            out = set()
            for starts in self._starts(context.sig + token.sig, token.completions):
                if any(b > cut for b in starts):  # a chunk would start inside the token
                    continue
                inside = tuple(b for b in starts if b < cut or (inside_char and b == cut))
                out.add((inside, not inside_char and (cut == 0 or cut in starts)))
            found = self._fits[key] = frozenset(out)
        return found


@dataclass
class _State:
    """A sequence decoding to x[:k] that is valid or can be extended to a valid one: its log probability, the
    chunkings (absolute interior chunk starts after `final`) under which it is valid, and those under which its
    last chunk's part is the merges' tokens of its bytes, so that a token can continue that chunk. Without
    `ignore_merges` the two are the same; with it a last part that is a token is valid only as that token, while
    the merges' tokens of it can still grow into a valid longer part."""

    log_p: float
    final: int
    chunkings: set[tuple[int, ...]] = field(default_factory=set)
    open_chunkings: set[tuple[int, ...]] = field(default_factory=set)


def _kept(chunkings: set[tuple[int, ...]], state_final: int, final: int, k: int) -> set[tuple[int, ...]]:
    """The chunkings of a state at k (made when its final boundary was `state_final`) that keep the chunks every
    continuation of the longer text keeps (final boundary `final`), as interior starts after `final`."""
    return {tuple(b for b in c if b > final) for c in chunkings if state_final == final or final in c or k == final}


class LookaheadStream:
    """Exact next-byte distributions along a growing text through a look-ahead tokenizer; the interface of
    `hat.byteprob.exact.ByteStream` (extend, push, logprobs(n), covers, canonical_log_prob, model_calls)."""

    def __init__(self, model: TokenModel, table: LookaheadTable, batch_size: int = 32) -> None:
        self.model, self.table, self.batch_size = model, table, batch_size
        self.data = bytearray()
        self.final = {0: 0}  # per recent length: the last chunk start every continuation keeps
        self.trunk_len = {0: 0}  # per recent length: how many tokens of `_trunk` encode data[:final]
        self._trunk: Prefix = ()  # the encoding of data[:_trunk_end]
        self._trunk_end = 0
        self.states: dict[int, dict[Prefix, _State]] = {0: {(): _State(0.0, 0, {()})}}
        self.complete: dict[int, Prefix] = {0: ()}  # encode(data[:k]) where data[:k] ends a character
        self.rows: dict[Prefix, np.ndarray] = {}
        self._piece_cache: dict[bytes, list[int]] = {}
        self._merges_cache: dict[bytes, list[int]] = {}
        self.model_calls = 0

    def __len__(self) -> int:
        return len(self.data)

    def push(self, value: int) -> None:
        """Appends one byte."""
        self.extend(bytes([value]))

    def extend(self, data: bytes) -> None:
        """Appends bytes (a `TokenizerError` if they leave valid UTF-8); model prefixes are evaluated in batches.
        Afterwards `logprobs(n)` works for every n from the old length to the new one."""
        start = len(self.data)
        self._forget(start)
        for value in data:
            self._append(value)
        new = [seq for k in range(start + 1, len(self.data) + 1) for seq in self.states[k]]
        self._fill_rows([()] + new if start == 0 else new)
        for k in range(start + 1, len(self.data) + 1):
            for seq, state in self.states[k].items():
                prev = seq[:-1]
                before = self.states[k - int(self.lengths[seq[-1]])].get(prev)
                if before is None:
                    raise RuntimeError(f"valid sequence {seq} has no valid prefix state (a bug in the chunkings)")
                state.log_p = before.log_p + float(self.rows[prev][seq[-1]])

    @property
    def lengths(self) -> np.ndarray:
        return self.table.lengths

    def _bpe(self, pieces: Sequence[bytes], merges_only: bool = False) -> list[int]:
        """The tokens of each piece as one chunk (`merges_only`: the merges' tokens), concatenated (cached)."""
        tokenizer = self.table.tokenizer
        cache = self._merges_cache if merges_only else self._piece_cache
        encode = tokenizer.merges_only if merges_only else tokenizer.bpe
        missing = [p for p in dict.fromkeys(pieces) if p not in cache]
        for p, ids in zip(missing, encode(missing)):
            cache[p] = ids
        return [t for p in pieces for t in cache[p]]

    def _cut(self, begin: int, end: int, starts: Sequence[int]) -> list[bytes]:
        edges = [begin, *starts, end]
        return [bytes(self.data[a:b]) for a, b in zip(edges, edges[1:])]

    def _append(self, value: int) -> None:
        if value in self.table.tokenizer.missing_bytes:
            raise TokenizerError(f"byte {value:#04x} at {len(self.data)} has no token in this tokenizer")
        self.data.append(value)
        n = len(self.data)
        begin = self._trunk_end
        piece = piece_of(self.table.classes, bytes(self.data[begin:n]))
        if piece is None:
            raise TokenizerError(f"the text is not valid UTF-8 at byte {n - 1} (a foreign tokenizer needs text)")
        options = [tuple(begin + piece.offsets[b] for b in c) for c in self.table.chunkings(piece)]
        # The new final boundary: the last start that every chunking shares, with the same starts before it.
        final = begin
        for b in options[0]:
            before = [x for x in options[0] if x < b]
            if all(b in c and [x for x in c if x < b] == before for c in options):
                final = b
        if final > begin:
            self._trunk += tuple(self._bpe(self._cut(begin, final, [b for b in options[0] if b < final])))
            self._trunk_end = final
        self.final[n], self.trunk_len[n] = final, len(self._trunk)
        states: dict[Prefix, _State] = {}
        for c in options:
            inner = tuple(b for b in c if b > final)
            pieces = self._cut(final, n, inner)
            seq = self._trunk + tuple(self._bpe(pieces))
            state = states.setdefault(seq, _State(0.0, final))
            state.chunkings.add(inner)
            if not self.table.tokenizer.ignore_merges:
                state.open_chunkings.add(inner)
                continue
            # The last part as the merges make it (the same tokens unless that part is a token of its own).
            grown = seq[: len(seq) - len(self._bpe(pieces[-1:]))] + tuple(self._bpe(pieces[-1:], merges_only=True))
            states.setdefault(grown, _State(0.0, final)).open_chunkings.add(inner)
        self.states[n] = states
        if not piece.completions:
            first = tuple(b for b in options[0] if b > final)
            self.complete[n] = self._trunk + tuple(self._bpe(self._cut(final, n, first)))

    def _fill_rows(self, prefixes: Sequence[Prefix]) -> None:
        missing = [p for p in dict.fromkeys(prefixes) if p not in self.rows]
        for i in range(0, len(missing), self.batch_size):
            batch = missing[i : i + self.batch_size]
            rows = self.model.next_token_logprobs(batch)
            self.model_calls += len(batch)
            for p, row in zip(batch, rows):
                self.rows[p] = np.asarray(row, np.float64)

    def _forget(self, n: int) -> None:
        """Drops per-position state that no cover of a prefix of length >= n can reach."""
        horizon = n + 1 - self.table.max_len
        for k in [k for k in self.states if k < horizon]:
            for seq in self.states.pop(k):
                self.rows.pop(seq, None)
            self.final.pop(k, None)
            self.trunk_len.pop(k, None)
            self.complete.pop(k, None)

    def _candidates(self, final: int, k: int, ids: np.ndarray) -> tuple[Piece, bool, np.ndarray, list]:
        """The context piece data[final:k] (complete characters), whether k is inside a character, the candidate
        ids that can follow, and their groups: (token piece, member indices into the ids)."""
        table = self.table
        split = split_utf8(bytes(self.data[final:k]))
        assert split is not None  # the stream only holds prefixes of valid UTF-8
        text, partial = split
        context = piece_of(table.classes, text.encode("utf-8"))
        assert context is not None
        if partial:  # only tokens that go on with the unfinished character can follow it
            first = table.bytes_VxL[ids, 0]
            ids = ids[(first >= 0x80) & (first < 0xC0)]
            groups: dict[tuple, tuple[Piece, list[int]]] = {}
            for j, i in enumerate(ids.tolist()):
                piece = piece_of(table.classes, partial + table.tokenizer.token_bytes[i])
                if piece is not None:
                    groups.setdefault(piece.key, (piece, []))[1].append(j)
            return context, True, ids, [(piece, np.array(js)) for piece, js in groups.values()]
        # Grouped by sorting (a token that starts a chunk can be any of ~50k, in thousands of pieces).
        unique, inverse = np.unique(table.token_piece[ids], return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(unique) + 1)).tolist()
        groups_of = [
            (table.pieces[key], order[bounds[u] : bounds[u + 1]]) for u, key in enumerate(unique.tolist()) if key >= 0
        ]
        return context, False, ids, groups_of

    def cover_terms(self, n: int) -> list[tuple[int, Prefix, np.ndarray, np.ndarray]]:
        """For x = data[:n]: (k, s, token ids tau, log P(s + [tau])) over the valid s ending at k and the valid tau
        whose bytes start with x[k:] and run past the end of x."""
        table, final = self.table, self.final[n]
        trunk = self._trunk[: self.trunk_len[n]]
        terms = []
        for k in range(max(final, n + 1 - table.max_len), n + 1):
            ids = table.with_prefix(bytes(self.data[k:n]), n - k + 1)
            if not len(ids):
                continue
            context, inside_char, ids, groups = self._candidates(final, k, ids)
            for seq, state in self.states[k].items():
                # Only states that keep the chunks every continuation of data[:n] keeps.
                if seq[: len(trunk)] != trunk:
                    continue
                closed, grown = (_kept(c, state.final, final, k) for c in (state.chunkings, state.open_chunkings))
                starts_ok = np.zeros(len(ids), bool)
                # Per start of the chunk the token continues (it matters with `ignore_merges` only).
                continues_ok: dict[int, np.ndarray] = {}
                for piece, members in groups:
                    for inside, starts_chunk in table.fits(context, piece, inside_char):
                        absolute = tuple(final + context.offsets[b] for b in inside)
                        if starts_chunk and absolute in closed:
                            starts_ok[members] = True
                        elif not starts_chunk and absolute in grown:
                            chunk_start = (absolute[-1] if absolute else final) if table.tokenizer.ignore_merges else 0
                            continues_ok.setdefault(chunk_start, np.zeros(len(ids), bool))[members] = True
                valid = starts_ok & table.alone_valid[ids]
                for chunk_start, mask in continues_ok.items():
                    if not seq:
                        break
                    can = table.neighbours(seq[-1], ids[mask])
                    if table.tokenizer.ignore_merges:
                        can &= ~table.completes_token(bytes(self.data[chunk_start:k]), ids[mask])
                    valid[mask] |= can
                if valid.any():
                    terms.append((k, seq, ids[valid], state.log_p + self.rows[seq][ids[valid]]))
        return terms

    def logprobs(self, n: int | None = None) -> np.ndarray:
        """log q(outcome | x) for x = the first `n` bytes (default: all) over 257 outcomes (bytes, end-of-text);
        see `hat.byteprob.exact.ByteStream.logprobs`. End-of-text is impossible inside a character."""
        n = len(self.data) if n is None else n
        self._fill_rows([()])
        outcomes, log_weights = [np.zeros(0, np.int64)], [np.zeros(0)]
        if n in self.complete:
            seq = self.complete[n]
            outcomes.append(np.array([EOT_OUTCOME]))
            log_weights.append(np.array([self.states[n][seq].log_p + self.rows[seq][self.table.eot_id]]))
        for k, _, ids, log_w in self.cover_terms(n):
            outcomes.append(self.table.bytes_VxL[ids, n - k])
            log_weights.append(log_w)
        return outcome_logprobs(outcomes, log_weights)

    def covers(self) -> list[tuple[Prefix, float]]:
        """The covers of the current prefix with their log prefix probabilities (empty for x = b"")."""
        n = len(self.data)
        if n == 0:
            return []
        out = [(seq, state.log_p) for seq, state in self.states[n].items() if state.chunkings]
        for k, seq, ids, log_w in self.cover_terms(n):
            if k < n:
                out += [(seq + (int(i),), float(w)) for i, w in zip(ids, log_w)]
        return out

    @property
    def canonical_log_prob(self) -> float:
        """log P(encode(x)) (NaN while x ends inside a character)."""
        n = len(self.data)
        return self.states[n][self.complete[n]].log_p if n in self.complete else float("nan")
