"""Hugging Face Llama -> hat: tiny random checkpoints saved by transformers itself give the same logits in hat."""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from support import OPT_OUT, TINY_HAT, cli

from hat.checkpoint import load_model
from hat.checkpoint.store import ConversionError
from hat.config import RopeScalingConfig, load_config
from hat.convert.llama import convert_llama
from hat.models.layers import rope_frequencies

pytestmark = pytest.mark.slow
torch = transformers = None  # imported by the fixture below: collecting this file (the fast tier) stays cheap


@pytest.fixture(autouse=True, scope="module")
def _torch_and_transformers():
    global torch, transformers
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")


LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,
}


def save_llama(path, *, dtype=None, shard_size=None, **overrides):
    """A random LlamaForCausalLM saved by transformers (several shards when `shard_size` is small), float32 unless
    `dtype` says otherwise."""
    dtype = dtype or torch.float32
    settings = dict(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        tie_word_embeddings=False,
    )
    settings.update(overrides)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**settings)).to(dtype)
    with torch.no_grad():  # make norms non-trivial so that a dropped norm weight would show
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(torch.rand_like(param) * 0.5)
    model.save_pretrained(path, max_shard_size=shard_size or "2GB")
    return model.eval().to(torch.float32)


def hf_logits(model, tokens):
    with torch.no_grad():
        return model(torch.tensor(tokens)).logits.numpy()


CASES = {
    "gqa_llama3_tied_sharded": dict(rope_scaling=LLAMA3_ROPE, tie_word_embeddings=True, shard_size="20KB"),
    "mha_untied_single_file": dict(num_key_value_heads=4, rope_theta=10000.0),
    "gqa_llama3_untied_sharded_head_dim": dict(rope_scaling=LLAMA3_ROPE, head_dim=16, shard_size="30KB"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_converted_lm_matches_transformers(tmp_path, case, monkeypatch):
    # Blocks of 10 rows (of width 32): the embedding and head are streamed in several uneven pieces.
    monkeypatch.setattr("hat.convert.llama._BLOCK_ELEMENTS", 320)
    settings = dict(CASES[case])
    shard_size = settings.pop("shard_size", None)
    reference = save_llama(tmp_path / "hf", shard_size=shard_size, **settings)
    if shard_size:
        assert len(list((tmp_path / "hf").glob("*.safetensors"))) > 2
    convert_llama(tmp_path / "hf", tmp_path / "lm", to="lm")
    loaded = load_model(tmp_path / "lm")
    assert loaded.config.model.tie_embeddings == settings.get("tie_word_embeddings", False)
    tokens = np.random.default_rng(0).integers(0, 96, (2, 48))
    ours = np.asarray(loaded.model(jnp.asarray(tokens)))
    diff = np.abs(ours - hf_logits(reference, tokens)).max()
    assert diff <= 1e-4, f"max |logit diff| {diff}"


def test_bfloat16_checkpoint_converts(tmp_path):
    reference = save_llama(tmp_path / "hf", dtype=torch.bfloat16, rope_scaling=LLAMA3_ROPE)
    convert_llama(tmp_path / "hf", tmp_path / "lm", to="lm")
    tokens = np.random.default_rng(1).integers(0, 96, (1, 32))
    # The reference holds the same bfloat16-rounded weights (upcast), so float32 logits agree.
    diff = np.abs(np.asarray(load_model(tmp_path / "lm").model(jnp.asarray(tokens))) - hf_logits(reference, tokens))
    assert diff.max() <= 1e-4


def test_llama3_rope_frequencies_match_transformers():
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = transformers.LlamaConfig(
        hidden_size=256, num_attention_heads=4, rope_theta=500000.0, rope_scaling=LLAMA3_ROPE
    )
    expected, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    scaling = RopeScalingConfig(8.0, 1.0, 4.0, 16)
    ours = np.asarray(rope_frequencies(64, 500000.0, scaling))
    np.testing.assert_allclose(ours, expected.numpy(), rtol=1e-6)
    assert not np.allclose(ours, np.asarray(rope_frequencies(64, 500000.0)))  # the scaling changes something


def test_hat_backbone_reproduces_llama_activations(tmp_path):
    reference = save_llama(tmp_path / "hf", rope_scaling=LLAMA3_ROPE, hidden_size=64, num_attention_heads=2,
                           num_key_value_heads=1)  # fmt: skip
    base = load_config(None, TINY_HAT)
    convert_llama(tmp_path / "hf", tmp_path / "hat", to="hat", base=base)
    loaded = load_model(tmp_path / "hat")
    assert loaded.config.model.kind == "hat" and loaded.config.model.backbone.num_kv_heads == 1
    words = np.random.default_rng(2).normal(size=(2, 20, 64)).astype(np.float32)
    ours = np.asarray(loaded.model.backbone(jnp.asarray(words), jnp.arange(20)[None]))
    with torch.no_grad():
        theirs = reference.model(inputs_embeds=torch.tensor(words)).last_hidden_state.numpy()
    # HF's last hidden state has the final norm applied; the HAT backbone stops before it (HAT has no final norm).
    norm = reference.model.norm.weight.detach().numpy()
    ours_normed = ours / np.sqrt((ours**2).mean(-1, keepdims=True) + 1e-5) * norm
    assert np.abs(ours_normed - theirs).max() <= 1e-4
    # The fresh parts run: byte logits of the whole HAT are finite.
    tokens = np.frombuffer(b"def main():\n    return 1\n", np.uint8)[None].astype(np.int32)
    word_ids = np.minimum(np.arange(tokens.shape[1]) // 4, 7)[None]
    assert np.isfinite(np.asarray(loaded.model(jnp.asarray(tokens), jnp.asarray(word_ids), 8))).all()


def _assert_one_line_error(run, match, tmp_path, out_name="out"):
    with pytest.raises(ConversionError, match=match) as info:
        run()
    assert "\n" not in str(info.value)
    assert not (tmp_path / out_name).exists()
    assert not list(tmp_path.glob(f".{out_name}.partial-*"))


def test_bad_inputs_give_one_line_errors_and_leave_nothing(tmp_path):
    hf = tmp_path / "hf"
    save_llama(hf, shard_size="20KB")
    convert = lambda: convert_llama(hf, tmp_path / "out", to="lm")  # noqa: E731

    (tmp_path / "out").mkdir()
    with pytest.raises(ConversionError, match="already exists"):
        convert()
    (tmp_path / "out").rmdir()

    config = json.loads((hf / "config.json").read_text())
    for field, value, match in [
        ("model_type", "mistral", "unsupported architecture model_type='mistral'"),
        ("rope_parameters", {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}, "rope_type 'yarn'"),
        ("intermediate_size", 64, "mlp.gate_proj.weight has shape"),
        ("attention_bias", True, "attention_bias"),
    ]:
        (hf / "config.json").write_text(json.dumps(config | {field: value}))
        _assert_one_line_error(convert, match, tmp_path)
    (hf / "config.json").write_text(json.dumps(config))

    shard = sorted(hf.glob("*.safetensors"))[1]
    shard.rename(shard.with_suffix(".bak"))
    _assert_one_line_error(convert, f"shard {shard.name} named in .* is missing", tmp_path)
    shard.with_suffix(".bak").rename(shard)
    shard.write_bytes(shard.read_bytes()[:-100])  # a download cut short
    _assert_one_line_error(convert, f"{shard.name} is truncated", tmp_path)


def test_convert_command(tmp_path, capsys):
    save_llama(tmp_path / "hf")
    command = cli("convert")
    assert command([str(tmp_path / "hf"), str(tmp_path / "lm"), "--to", "lm"]) == 0
    assert "model.backbone.num_kv_heads=2" in capsys.readouterr().out
    assert command([str(tmp_path / "hf"), str(tmp_path / "lm")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: output directory already exists") and "\n" not in err


def test_recipe_stages_run_through_train_py(tmp_path, capsys):
    """convert --to hat, then stage 1 (frozen backbone) and stage 2 (lower backbone rate) through train.py."""
    save_llama(tmp_path / "hf", hidden_size=64, num_attention_heads=2, num_key_value_heads=1, rope_scaling=LLAMA3_ROPE)
    assert cli("convert")(
        [str(tmp_path / "hf"), str(tmp_path / "store"), "--to", "hat", *TINY_HAT]
    ) == 0  # fmt: skip
    backbone = [line.strip() for line in capsys.readouterr().out.splitlines() if line.strip().startswith("model.")]
    corpus = "data.corpus=['" + str(Path(json.__file__).parent) + "']"
    common = [corpus, *TINY_HAT, *backbone, "data.seq_bytes=256", "data.max_words=96", "data.eval_fraction=0.2",
              "train.batch_size=4", "train.steps=2", "train.eval_every=2", "train.eval_sequences=4",
              "train.peak_flops_per_device=1e9"]  # fmt: skip
    train = cli("train")
    stage1 = [f"workdir={tmp_path / 's1'}", *common, f"train.init_from={tmp_path / 'store'}", "train.freeze=[backbone]"]
    assert train(stage1) == 0
    # Stage 2 evaluates and saves only at its end (0: no periodic evaluation or checkpoint).
    stage2 = [f"workdir={tmp_path / 's2'}", *common, f"train.init_from={tmp_path / 's1'}",
              "train.lr_scale={backbone: 0.1}", "train.eval_every=0", "train.checkpoint_every=0"]  # fmt: skip
    assert train(stage2) == 0
    store = load_model(tmp_path / "store").model
    after1, after2 = load_model(tmp_path / "s1").model, load_model(tmp_path / "s2").model
    kernel = lambda m: np.asarray(m.backbone.layers[0].mlp.up_proj[...])  # noqa: E731
    assert np.array_equal(kernel(store), kernel(after1))  # stage 1 leaves the pretrained blocks alone
    assert not np.array_equal(kernel(after1), kernel(after2))  # stage 2 trains them
    encoder = lambda m: np.asarray(m.encoder.embedding_layer[...])  # noqa: E731
    assert not np.array_equal(encoder(store), encoder(after1))


def test_bpe_lm_export_then_import_keeps_exact_byte_probabilities(tmp_path):
    """hat BPE LM -> HF Llama layout (with tokenizer.json) -> convert --to lm: the same byte-level model."""
    from flax import nnx

    from hat.byteprob.bytelevel import text_bits
    from hat.checkpoint.store import ParamStoreWriter, flatten_params
    from hat.convert.export import export_checkpoint
    from hat.kinds import load_byte_model
    from hat.models import build_model
    from hat.text.bpe import train_tokenizer

    texts = [path.read_bytes() for path in sorted(Path(json.__file__).parent.glob("*.py"))]
    train_tokenizer(texts, 300).save(tmp_path / "tokenizer.json")
    config = load_config(None, [
        *OPT_OUT, "model.kind=token_lm", "model.vocab_size=300", "data.format=bpe", "data.bpe.vocab_size=300",
        "model.backbone.num_layers=2", "model.backbone.hidden_size=32", "model.backbone.num_heads=2",
        "model.backbone.num_kv_heads=1", "model.backbone.mlp_hidden_size=64",
    ])  # fmt: skip
    model = build_model(config.model, rngs=nnx.Rngs(3))
    with ParamStoreWriter(tmp_path / "lm", config) as writer:
        for name, value in flatten_params(nnx.state(model, nnx.Param)).items():
            writer.write(name, np.asarray(value))
        writer.add_file("tokenizer.json", tmp_path / "tokenizer.json")
        writer.finalize()
    export_checkpoint(tmp_path / "lm", tmp_path / "hf")
    convert_llama(tmp_path / "hf", tmp_path / "back", to="lm")
    data = "def f(x):\n    return x + 1  # é\n".encode()
    before = text_bits(load_byte_model(tmp_path / "lm").text_logprobs(data), data)
    after = text_bits(load_byte_model(tmp_path / "back").text_logprobs(data), data)
    assert after == pytest.approx(before, rel=1e-5)
