"""Released TFree-HAT checkpoints behave here as in Aleph Alpha's runtime: context, special tokens, shapes, splitter
corners, export checks and the released-precision norms.

The `hat-splitter` package (Aleph Alpha's Rust splitter, non-commercial licence) is a test-only reference: the tests
that compare against it skip when it is missing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file
from support import REPO, TINY_HAT, cli

from hat.checkpoint import load_model
from hat.checkpoint.store import ConversionError
from hat.config import load_config
from hat.convert.released import check_released_runtime, config_from_released
from hat.data import PackedSequences, prepare_in_memory
from hat.data.layout import ContextRules, layout_context
from hat.generate import generate_all
from hat.kinds import kind_of
from hat.models.layers import RMSNorm
from hat.sampling import Sampling, SamplingError
from hat.sessions import HatSession, UncachedSession
from hat.text import SpecialTokenError, SpecialTokens, split_words

SPECIALS = {"<|eot_id|>": 192, "<|begin_of_text|>": 193, "<|start_header_id|>": 245, "<|end_header_id|>": 246}
# Prompts as the released chat template (Aleph Alpha's vLLM fork, `HATTokenizer`) renders them.
CHAT_PROMPTS = [
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\nHello, world!<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>",
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\nYou are a helpful assistant.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\nWhat's 2+2? Answer <|eot_id|> now <|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>",
    "<|start_header_id|>user<|end_header_id|>\n  def f(x):\n\treturn x \u0301.y <|eot_id|>",
    "text <|eot_id|><|eot_id|> more<|begin_of_text|>",
]


def released_reference_split(text: str, specials: dict[str, int], max_word: int) -> list[bytes]:
    """The released runtime's split: cut at the special-token strings, each a one-byte word, the rest through the
    `hat-splitter` package (as the vLLM fork's `HATRuleSplitter.encode` does)."""
    hat_splitter = pytest.importorskip("hat_splitter")
    splitter = hat_splitter.HATSplitter()
    pattern = re.compile("(" + "|".join(map(re.escape, specials)) + ")")
    words = []
    for chunk in pattern.split(text):
        if chunk in specials:
            words.append(bytes([specials[chunk]]))
        elif chunk:
            words += [bytes(word) for word in splitter.split_with_limit(chunk, max_word)]
    return words


def hat_split(text: str, specials: dict[str, int], max_word: int) -> list[bytes]:
    tokens = SpecialTokens(specials)
    return split_words(tokens.encode(text), max_word, tokens.special_bytes)


# ---- splitter: special tokens and the whitespace corners, against the released splitter -------------------------


@pytest.mark.parametrize("prompt", CHAT_PROMPTS)
def test_chat_template_prompts_split_as_released(prompt: str):
    assert hat_split(prompt, SPECIALS, 100) == released_reference_split(prompt, SPECIALS, 100)


@pytest.mark.parametrize(
    "text",
    ["a\x0bb", "a \x0b b", "x\x85y", " \x85", "a \u0301.b", "a  \u0301!x", "\t\u0301.,", "é \u0301 \u0301", "a\u3000b"],
)
def test_whitespace_and_mark_corners_split_as_released(text: str):
    assert hat_split(text, {}, 100) == released_reference_split(text, {"<|eot_id|>": 192}, 100)


def test_documented_deviation_keeps_the_space_a_word():
    # Released: [" \t\u0301."] joins the space, which had closed as a word when the tab arrived (not causal).
    assert hat_split("x \t\u0301.", {}, 100) == [b"x", b" ", "\t\u0301.".encode()]


def test_special_bytes_are_words_of_their_own():
    tokens = SpecialTokens(SPECIALS)
    assert tokens.encode("a <|eot_id|>b") == b"a \xc0b"
    assert split_words(b"a \xc0b", 100, tokens.special_bytes) == [b"a", b" ", b"\xc0", b"b"]
    # Without special bytes a raw 192 after a single space joins it (hat's own models).
    assert split_words(b"a \xc0b") == [b"a", b" \xc0", b"b"]
    assert tokens.decode(b"x\xc1\xf5y") == b"x<|begin_of_text|><|start_header_id|>y"
    with pytest.raises(SpecialTokenError, match="valid UTF-8"):
        SpecialTokens({"<|x|>": 65})


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.sampled_from([b"a", b" ", b"\xc0", b"\xc1", b"  ", b"\n", b".", b"\xe6\x97", b"\xa5", b"Zz"]), max_size=16
    ).map(b"".join),
    st.sampled_from([None, 3, 100]),
)
def test_special_bytes_keep_the_splitter_guarantees(data: bytes, limit):
    special = b"\xc0\xc1"
    words = split_words(data, limit, special)
    assert b"".join(words) == data and all(words)
    assert all(word in (b"\xc0", b"\xc1") or not set(word) & set(special) for word in words)
    starts = np.cumsum([0] + [len(w) for w in words])[:-1].tolist()
    for cut in range(len(data) + 1):
        prefix_starts = np.cumsum([0] + [len(w) for w in split_words(data[:cut], limit, special)])[:-1].tolist()
        assert set(prefix_starts) <= set(starts)  # never a word start the full text lacks
        if words and starts and cut in starts:
            assert split_words(data[cut:], limit, special) == words[starts.index(cut) :]


# ---- a released-layout checkpoint written by hand -----------------------------------------------------------------

MAX_WORD, CONTEXT_BYTES, CONTEXT_WORDS = 12, 64, 24


def _llama(prefix: str, dim: int, heads: int, kv_heads: int, mlp: int) -> dict[str, tuple[int, ...]]:
    q, kv = heads * (dim // heads), kv_heads * (dim // heads)
    attn, mlp_ = prefix + "self_attn.", prefix + "mlp."
    return {
        prefix + "input_layernorm.weight": (dim,), prefix + "post_attention_layernorm.weight": (dim,),
        attn + "q_proj.weight": (q, dim), attn + "k_proj.weight": (kv, dim), attn + "v_proj.weight": (kv, dim),
        attn + "o_proj.weight": (dim, q), mlp_ + "gate_proj.weight": (mlp, dim), mlp_ + "up_proj.weight": (mlp, dim),
        mlp_ + "down_proj.weight": (dim, mlp),
    }  # fmt: skip


def served_shapes() -> dict[str, tuple[int, ...]]:
    """Tensors of `served_config`: encoder 32 wide (4 heads, 2 kv), pooling 6 x 8 = 48 = backbone width, decoder
    cross-attention 4 x 8 (2 kv) in both decoder layers, no cross-attention QK-norm."""
    shapes = {"encoder.embedding_layer.weight": (256, 32), **_llama("encoder.layers.0.", 32, 4, 2, 64)}
    pool = "encoder_connector.cross_attention_encoder_connector."
    shapes |= {
        "encoder_connector.latent_query": (1, 1, 48),
        pool + "q_proj.weight": (48, 48),
        pool + "k_proj.weight": (16, 32),
        pool + "v_proj.weight": (16, 32),
        pool + "o_proj.weight": (48, 48),
    }
    for i in range(2):
        shapes |= _llama(f"backbone.layers.{i}.", 48, 4, 2, 64)
    shapes["decoder_connector.first_word_embedding"] = (1, 1, 48)
    for i in range(2):
        block = f"decoder.decoder_layers.{i}."
        shapes |= _llama(block + "llama_layer.", 32, 4, 2, 64)
        shapes |= {
            block + "query_norm.weight": (32,),
            block + "kv_norm.weight": (48,),
            block + "cross_attention.q_proj.weight": (32, 32),
            block + "cross_attention.k_proj.weight": (16, 48),
            block + "cross_attention.v_proj.weight": (16, 48),
            block + "cross_attention.o_proj.weight": (32, 32),
        }
    return shapes | {"layer_norm.weight": (32,), "lm_head.weight": (256, 32)}  # fmt: skip


def _stack(hidden: int, layers: int, window: int | None, vocab: int, positions: int) -> dict:
    return {
        "vocab_size": vocab, "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": 4,
        "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "intermediate_size": 64, "max_position_embeddings": positions,
        "rope_theta": 10000.0, "rope_scaling": None, "mlp_bias": False, "sliding_window": window,
        "key_query_norm": False, "key_query_norm_per_head": False, "is_neox_style": True,
    }  # fmt: skip


def served_config() -> dict:
    """A config.json shaped as the served checkpoints (vLLM fork), with per-part windows and a word window the
    released computation never reads."""
    cross = {"key_query_norm": False, "key_query_norm_per_head": False, "word_window_size": 3}
    return {
        "model_type": "hierarchical_autoregressive_transformer", "special_token_dict": SPECIALS, "eos_token_id": 192,
        "max_word_size": MAX_WORD, "sliding_window": 8, "max_position_embeddings": CONTEXT_BYTES,
        "encoder_config": _stack(32, 1, 8, 256, CONTEXT_BYTES) | {"cross_attention_config": cross | {
            "hidden_size": 48, "hidden_size_q": 48, "hidden_size_kv": 32, "num_attention_heads": 6,
            "attention_num_kv_heads": 2}},
        "backbone_config": _stack(48, 2, None, 0, CONTEXT_WORDS),
        "decoder_config": _stack(32, 2, 6, 256, CONTEXT_BYTES) | {"cross_attn_every_layer": True,
            "cross_attention_config": cross | {"hidden_size": 32, "hidden_size_q": 32, "hidden_size_kv": 48,
                                               "num_attention_heads": 4, "attention_num_kv_heads": 2}},
    }  # fmt: skip


def write_served(directory: Path) -> Path:
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(served_config()))
    rng = np.random.default_rng(5)
    tensors = {
        name: ((1.0 if "norm" in name else 0.0) + rng.normal(0, 0.2, shape)).astype(np.float32)
        for name, shape in served_shapes().items()
    }
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
    return directory


@pytest.fixture(scope="module")
def served_store(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("served")
    assert cli("import_hat")([str(write_served(tmp / "released")), str(tmp / "store")]) == 0
    return tmp / "store"


def test_import_carries_the_released_runtime(served_store: Path):
    config = load_model(served_store).config
    model = config.model
    assert (config.data.seq_bytes, config.data.max_words) == (CONTEXT_BYTES, CONTEXT_WORDS)
    assert not model.leading_end_of_text and model.special_tokens == SPECIALS
    assert (model.encoder.sliding_window, model.decoder.sliding_window) == (8, 6)
    assert model.cross_attn_every_layer and not model.pooling.qk_norm
    assert (model.pooling.num_heads, model.pooling.num_kv_heads, model.pooling.head_dim) == (6, 2, 8)
    cross = model.decoder_cross_attention
    assert (cross.num_heads, cross.num_kv_heads, cross.head_dim) == (4, 2, 8)
    assert model.encoder.norm_dtype == "float32" and model.compute_dtype == "float32"


def _reference_logits(loaded, prompt: str) -> np.ndarray:
    """Next-byte logits of `prompt` laid out as the released runtime feeds it, built without hat.data.layout: the
    prompt's bytes from position 0, word ids from the released split."""
    words = released_reference_split(prompt, SPECIALS, MAX_WORD)
    data = np.frombuffer(b"".join(words), np.uint8).astype(np.int32)
    word_ids = np.repeat(np.arange(len(words)), [len(w) for w in words]).astype(np.int32)
    logits = loaded.model(data[None], word_ids[None], num_words=loaded.config.data.max_words)
    return np.asarray(logits)[0, -1]


@pytest.mark.slow
def test_released_checkpoint_generates_with_the_released_context(served_store: Path):
    loaded = load_model(served_store, scan_layers=False)
    prompts = [CHAT_PROMPTS[0], "<|begin_of_text|>Hi <|eot_id|>"]
    encoded = [SpecialTokens(SPECIALS).encode(p) for p in prompts]
    cached, uncached = HatSession(loaded).start(encoded), UncachedSession(loaded).start(encoded)
    for row, prompt in enumerate(prompts):
        reference = _reference_logits(loaded, prompt)
        np.testing.assert_allclose(np.asarray(cached)[row], reference, atol=2e-4)
        np.testing.assert_allclose(np.asarray(uncached)[row], reference, atol=2e-4)
    # Generation takes the strings; a prompt longer than the context is cut to whole words. Rows are independent,
    # so the short prompt's greedy bytes agree between the cached and the uncached session.
    batch = [prompts[0].encode(), (CHAT_PROMPTS[1] * 3).encode()]
    greedy = [generate_all(loaded, batch, max_new_bytes=6, sampling=Sampling(0.0), use_cache=c) for c in (1, 0)]
    assert greedy[0][0] == greedy[1][0] and all(len(text) <= 6 * len("<|start_header_id|>") for text in greedy[0])
    with pytest.raises(SamplingError, match="non-empty prompt"):
        generate_all(loaded, [b""], max_new_bytes=2)


@pytest.mark.slow
def test_released_checkpoint_evaluates_without_a_leading_end_of_text(served_store: Path, tmp_path: Path):
    loaded = load_model(served_store)
    text = ("<|begin_of_text|>" + "The cat sat on the mat. " * 6 + "<|eot_id|>").encode()
    scorer = kind_of(loaded.config).scorer(loaded)
    source, _ = scorer.source([text])
    first = source[0]
    assert first["inputs"][0] == 193 and first["word_ids"][0] == 0 and first["targets"][0] == ord("T")
    # Every byte after the first is a target once: the next sequence's first byte ends the one before it.
    targets = np.concatenate([source[i]["targets"][source[i]["loss_mask"] > 0] for i in range(len(source))])
    assert bytes(targets.astype(np.uint8).tolist()) == SpecialTokens(SPECIALS).encode(text)[1:] + b"\xc0"
    path = tmp_path / "chat.txt"
    path.write_bytes(text)
    result = kind_of(loaded.config).evaluate_files(loaded, [path])
    assert np.isfinite(result["bits_per_byte"])


def test_released_layout_and_hat_layout_differ_only_by_the_leading_end_of_text():
    released = ContextRules(False, SpecialTokens(SPECIALS))
    inputs, word_ids, last = layout_context(b"ab \xc0c", 16, 8, 12, released)
    assert inputs[:5].tolist() == list(b"ab \xc0c") and word_ids[:6].tolist() == [0, 0, 1, 2, 3, 8] and last == 4
    inputs, word_ids, last = layout_context(b"ab \xc0c", 16, 8, 12)
    assert inputs[:6].tolist() == [192, *b"ab \xc0c"] and word_ids[:7].tolist() == [0, 1, 1, 2, 2, 3, 8] and last == 5
    corpus = prepare_in_memory([b"one two three four"], 12)
    examples = PackedSequences.build(corpus, 8, 8, ContextRules(False))
    assert examples[0]["inputs"][:7].tolist() == list(b"one two") and examples[0]["targets"][6] == ord(" ")


# ---- export: checked against what the released runtimes assume ------------------------------------------------


def test_export_refuses_what_the_released_runtime_misreads(served_store: Path, tmp_path: Path, capsys):
    # The imported per-part windows differ: the vLLM fork would apply the top-level window to the decoder too.
    assert cli("export")([str(served_store), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.decoder.sliding_window" in err
    tiny = load_config(None, TINY_HAT)
    check_released_runtime(tiny, "hf")
    refusals = {
        "model.pooling.head_dim": ["model.pooling.head_dim=8"],
        "model.cross_attn_every_layer": [],
        "model.pooling.qk_norm": ["model.cross_attn_every_layer=true"],
        "model.pooling.num_heads x head_dim": ["model.cross_attn_every_layer=true", "model.pooling.qk_norm=false"],
    }
    for field, overrides in refusals.items():
        runtime = "hf" if field == "model.pooling.head_dim" else "vllm"
        with pytest.raises(ConversionError, match=re.escape(field)):
            check_released_runtime(load_config(None, [*TINY_HAT, *overrides]), runtime)


def test_served_shaped_configs_pass_the_vllm_checks():
    for name in ("hat_llama3_8b.yaml", "hat_llama3_8b_pod.yaml"):
        config = load_config(REPO / "configs" / name)
        check_released_runtime(config, "vllm")
    imported = config_from_released(
        served_config()
        | {"sliding_window": 6, "encoder_config": served_config()["encoder_config"] | {"sliding_window": 6}}
    )
    check_released_runtime(imported, "vllm")


# ---- released precision ---------------------------------------------------------------------------------------


def test_released_precision_norms_match_a_bfloat16_reference():
    """hat's norm without upcast against the released formula in torch bfloat16,
    `x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight`, element by element."""
    torch = pytest.importorskip("torch")
    from flax import nnx

    rng = np.random.default_rng(0)
    x = rng.normal(0, 3, (64, 48)).astype(np.float32)
    weight = (1 + rng.normal(0, 0.1, 48)).astype(np.float32)
    norm = RMSNorm(48, eps=1e-5, rngs=nnx.Rngs(0), upcast=False)
    norm.scale[...] = jnp.asarray(weight)
    ours = np.asarray(norm(jnp.asarray(x, jnp.bfloat16)).astype(jnp.float32))
    xt, wt = torch.tensor(x).bfloat16(), torch.tensor(weight).bfloat16()
    theirs = (xt * torch.rsqrt(xt.pow(2).mean(-1, keepdim=True) + 1e-5) * wt).float().numpy()
    upcast = RMSNorm(48, eps=1e-5, rngs=nnx.Rngs(0))
    upcast.scale[...] = jnp.asarray(weight)
    upcast_out = np.asarray(upcast(jnp.asarray(x, jnp.bfloat16)).astype(jnp.float32))
    # Bit for bit on this backend (CPU); the float32 norm rounds differently.
    assert np.array_equal(ours, theirs) and np.mean(upcast_out == theirs) < 0.9


def test_released_precision_import(tmp_path: Path):
    config = config_from_released(served_config(), precision="released")
    assert config.model.compute_dtype == "bfloat16"
    assert {config.model.encoder.norm_dtype, config.model.backbone.norm_dtype, config.model.decoder.norm_dtype} == {
        "compute"
    }
    with pytest.raises(ConversionError, match="precision"):
        config_from_released(served_config(), precision="half")
