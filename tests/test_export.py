"""Export (HF Llama / released HAT layouts) and released-HAT import: exactness, HF parity, refusals."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file
from support import OPT_OUT, TINY_HAT, cli

from hat.checkpoint import load_model
from hat.checkpoint.store import ConversionError, ParamStoreWriter, flatten_params, iter_store, unflatten_params
from hat.config import Config, NgramConfig, load_config
from hat.convert.export import export_checkpoint
from hat.convert.released import import_released
from hat.models import build_model, convert_layer_layout

LLAMA3_SCALING = (
    "model.backbone.rope_scaling={factor: 4.0, low_freq_factor: 1.0, high_freq_factor: 4.0, "
    "original_max_position_embeddings: 16}"
)


def flat_config(tied: bool) -> Config:
    """A tiny token LM with GQA (4 query heads, 2 kv heads) and Llama 3 RoPE scaling that bites at short range."""
    return load_config(None, [
        *OPT_OUT, "model.kind=token_lm", "data.format=bpe", "data.bpe.vocab_size=61", "model.vocab_size=61",
        "model.backbone.num_layers=2", "model.backbone.hidden_size=32",
        "model.backbone.num_heads=4", "model.backbone.num_kv_heads=2", "model.backbone.mlp_hidden_size=48",
        "model.backbone.rope_theta=500000", LLAMA3_SCALING, f"model.tie_embeddings={str(tied).lower()}",
    ])  # fmt: skip


def hat_config(scan: bool) -> Config:
    return load_config(None, [
        *TINY_HAT, f"model.scan_layers={str(scan).lower()}", "model.decoder.num_layers=2",
        "model.pooling.num_kv_heads=1", "model.backbone.num_kv_heads=1", "model.encoder.sliding_window=8",
        "model.decoder.sliding_window=8",
    ])  # fmt: skip


def random_model(config: Config, seed: int = 0) -> nnx.Module:
    """A model whose every parameter (norm scales included) is perturbed away from its initial value."""
    model = build_model(config.model, rngs=nnx.Rngs(seed))
    state = nnx.state(model, nnx.Param)
    rng = np.random.default_rng(seed)
    flat = {k: np.asarray(v) + rng.normal(0, 0.05, v.shape).astype(np.float32)
            for k, v in flatten_params(state).items()}  # fmt: skip
    nnx.replace_by_pure_dict(state, unflatten_params(flat))
    nnx.update(model, state)
    return model


def per_layer_params(model: nnx.Module) -> dict[str, np.ndarray]:
    pure = convert_layer_layout(nnx.to_pure_dict(nnx.state(model, nnx.Param)), scan_layers=False)
    return {name: np.asarray(value) for name, value in flatten_params(pure).items()}


def write_store(model: nnx.Module, config: Config, path: Path, tokenizer: Path | None = None) -> Path:
    with ParamStoreWriter(path, config) as writer:
        for name, value in per_layer_params(model).items():
            writer.write(name, value)
        if tokenizer is not None:
            writer.add_file("tokenizer.json", tokenizer)
        return writer.finalize()


def hat_inputs(batch: int = 2, length: int = 14, word: int = 3) -> tuple[np.ndarray, np.ndarray, int]:
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 256, (batch, length)).astype(np.int32)
    word_ids = np.broadcast_to(np.arange(length) // word, (batch, length)).astype(np.int32)
    return tokens, word_ids, length // word + 1


def no_leftovers(parent: Path, name: str) -> bool:
    """Neither `name` nor a hidden partial directory of it exists in `parent`."""
    return not (parent / name).exists() and not any(p.name.startswith(f".{name}.partial") for p in parent.iterdir())


# ---- flat models -> Hugging Face Llama ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("tied", [False, True])
def test_flat_export_matches_transformers_llama(tmp_path: Path, tied: bool):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = flat_config(tied)
    model = random_model(config)
    tokenizer = tmp_path / "tok.json"
    tokenizer.write_text('{"model": "test"}')
    store = write_store(model, config, tmp_path / "store", tokenizer)
    # Untied: shards of 20 kB force several files and an index; tied: one model.safetensors.
    out = export_checkpoint(store, tmp_path / "hf", max_shard_size="20KB" if not tied else "5GB")
    index = out / "model.safetensors.index.json"
    if tied:
        assert (out / "model.safetensors").is_file() and not index.exists()
    else:
        weight_map = json.loads(index.read_text())["weight_map"]
        shards = sorted(set(weight_map.values()))
        assert len(shards) >= 3 and all((out / s).is_file() for s in shards)
        assert shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
        assert "lm_head.weight" in weight_map
    assert (out / "tokenizer.json").read_text() == tokenizer.read_text()

    # transformers 5 renamed from_pretrained's `torch_dtype` to `dtype`.
    dtype_arg = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    hf = transformers.LlamaForCausalLM.from_pretrained(out, **{dtype_arg: torch.float32}, attn_implementation="eager")
    assert hf.config.tie_word_embeddings == tied
    rope = getattr(hf.config, "rope_parameters", None) or hf.config.rope_scaling  # transformers 5 / 4
    assert rope["rope_type"] == "llama3" and rope["original_max_position_embeddings"] == 16
    tokens = np.random.default_rng(2).integers(0, config.model.vocab_size, (2, 24)).astype(np.int32)
    with torch.no_grad():
        hf_logits = hf(torch.from_numpy(tokens.astype(np.int64))).logits.numpy()
    hat_logits = np.asarray(model(tokens))
    diff = float(np.abs(hf_logits - hat_logits).max())
    print(f"max |logit diff| hat vs transformers (tied={tied}): {diff:.2e}")
    assert diff <= 1e-4


def test_bfloat16_export_writes_bfloat16(tmp_path: Path):
    config = flat_config(tied=False)
    model = random_model(config)
    store = write_store(model, config, tmp_path / "store")
    out = export_checkpoint(store, tmp_path / "bf16", dtype="bfloat16")
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    with safe_open(out / "model.safetensors", framework="numpy") as handle:
        dtypes = {handle.get_slice(name).get_dtype() for name in handle.keys()}
        embed = handle.get_tensor("model.embed_tokens.weight")
    assert dtypes == {"BF16"}
    expected = per_layer_params(model)["embedding_layer"]
    np.testing.assert_allclose(embed.astype(np.float32), expected, rtol=2**-8)


def test_flat_export_refuses_what_llama_lacks(tmp_path: Path, capsys):
    config = load_config(
        None,
        [
            *OPT_OUT,
            "model.kind=byte_lm",
            "model.backbone.num_layers=1",
            "model.backbone.hidden_size=16",
            "model.backbone.num_heads=2",
            "model.backbone.num_kv_heads=2",
            "model.backbone.mlp_hidden_size=16",
            "model.backbone.qk_norm=true",
        ],
    )
    store = write_store(random_model(config), config, tmp_path / "store")
    assert cli("export")([str(store), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "qk_norm" in err and err.count("\n") == 1
    assert no_leftovers(tmp_path, "out")

    # Hashed n-gram embeddings exist in neither format.
    ngrams = dataclasses.replace(
        config,
        model=dataclasses.replace(
            config.model,
            backbone=dataclasses.replace(config.model.backbone, qk_norm=False),
            ngrams=NgramConfig(sizes=(2, 3), buckets=8),
        ),
    )
    store = write_store(random_model(ngrams), ngrams, tmp_path / "store_ngrams")
    assert cli("export")([str(store), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "model.ngrams" in err and err.count("\n") == 1
    assert no_leftovers(tmp_path, "out")


# ---- HAT -> released layout -> HAT ----------------------------------------------------------------------------


def save_orbax(model: nnx.Module, config: Config, workdir: Path) -> Path:
    from hat.checkpoint import Checkpointer

    checkpointer = Checkpointer(workdir, async_save=False)
    checkpointer.save(0, {"params": nnx.state(model, nnx.Param), "opt_state": {}}, config)
    checkpointer.close()
    return workdir


@pytest.mark.slow
@pytest.mark.parametrize("scan", [False, True])
def test_hat_export_import_round_trip_is_exact(tmp_path: Path, scan: bool):
    config = hat_config(scan)
    model = random_model(config)
    # Per-layer source: a parameter store; scanned source: a training checkpoint with a stacked backbone.
    source = save_orbax(model, config, tmp_path / "run") if scan else write_store(model, config, tmp_path / "store")
    with pytest.raises(ConversionError, match="--format released"):
        export_checkpoint(source, tmp_path / "as_llama", fmt="hf")
    exported = export_checkpoint(source, tmp_path / "released", max_shard_size="100KB")
    released = json.loads((exported / "config.json").read_text())
    assert released["model_type"] == "hierarchical_autoregressive_transformer"
    assert released["decoder_config"]["cross_attention_config"]["hidden_size_kv"] == 64
    weight_map = json.loads((exported / "model.safetensors.index.json").read_text())["weight_map"]
    assert len(set(weight_map.values())) >= 2
    with safe_open(exported / weight_map["decoder.decoder_layers.1.query_norm.weight"], framework="numpy") as handle:
        assert np.array_equal(handle.get_tensor("decoder.decoder_layers.1.query_norm.weight"), np.ones(32))
    with safe_open(exported / weight_map["decoder.decoder_layers.0.cross_attention.q_proj.weight"], "numpy") as handle:
        assert not handle.get_tensor("decoder.decoder_layers.0.cross_attention.q_proj.weight").any()

    store = import_released(exported, tmp_path / "imported")
    original = per_layer_params(model)
    imported = dict(iter_store(store))
    assert imported.keys() == original.keys()
    for name, value in original.items():
        assert imported[name].dtype == np.float32 and np.array_equal(imported[name], value), name
    reloaded = load_model(store)
    assert reloaded.config.model == dataclasses.replace(config.model, scan_layers=False)
    # The same computation on both sides (a scanned backbone rounds differently from a per-layer one).
    reference = load_model(source, scan_layers=False).model
    tokens, word_ids, num_words = hat_inputs()
    np.testing.assert_array_equal(
        np.asarray(reloaded.model(tokens, word_ids, num_words=num_words)),
        np.asarray(reference(tokens, word_ids, num_words=num_words)),
    )


# ---- a checkpoint written in the released layout by hand --------------------------------------------------------


def _llama(prefix: str, dim: int, heads: int, kv_heads: int, mlp: int) -> dict[str, tuple[int, ...]]:
    head_dim = dim // heads
    return {
        prefix + "input_layernorm.weight": (dim,),
        prefix + "self_attn.q_proj.weight": (heads * head_dim, dim),
        prefix + "self_attn.k_proj.weight": (kv_heads * head_dim, dim),
        prefix + "self_attn.v_proj.weight": (kv_heads * head_dim, dim),
        prefix + "self_attn.o_proj.weight": (dim, heads * head_dim),
        prefix + "post_attention_layernorm.weight": (dim,),
        prefix + "mlp.gate_proj.weight": (mlp, dim),
        prefix + "mlp.up_proj.weight": (mlp, dim),
        prefix + "mlp.down_proj.weight": (dim, mlp),
    }


def released_tensor_shapes() -> dict[str, tuple[int, ...]]:
    """The released names and shapes of `RELEASED_CONFIG`, written out independently of hat.convert."""
    shapes = {"encoder.embedding_layer.weight": (256, 32), **_llama("encoder.layers.0.", 32, 4, 2, 64)}
    pool = "encoder_connector.cross_attention_encoder_connector."
    shapes |= {
        "encoder_connector.latent_query": (1, 1, 48),
        pool + "q_proj.weight": (32, 48), pool + "k_proj.weight": (16, 32), pool + "v_proj.weight": (16, 32),
        pool + "o_proj.weight": (48, 32), pool + "norm_query.weight": (8,), pool + "norm_key.weight": (8,),
    }  # fmt: skip
    for i in range(2):
        shapes |= _llama(f"backbone.layers.{i}.", 48, 4, 2, 64)
    shapes["decoder_connector.first_word_embedding"] = (1, 1, 48)
    for i in range(2):
        block = f"decoder.decoder_layers.{i}."
        shapes |= _llama(block + "llama_layer.", 32, 4, 4, 64)
        shapes |= {block + "query_norm.weight": (32,), block + "kv_norm.weight": (48,)}
    cross = "decoder.decoder_layers.0.cross_attention."
    shapes |= {
        cross + "q_proj.weight": (32, 32), cross + "k_proj.weight": (16, 48), cross + "v_proj.weight": (16, 48),
        cross + "o_proj.weight": (32, 32), cross + "norm_query.weight": (8,), cross + "norm_key.weight": (8,),
    }  # fmt: skip
    return shapes | {"layer_norm.weight": (32,), "lm_head.weight": (256, 32)}


def _stack(hidden: int, layers: int, kv_heads: int, window: int | None, vocab: int) -> dict:
    return {
        "vocab_size": vocab, "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": 4,
        "num_key_value_heads": kv_heads, "rms_norm_eps": 1e-5, "intermediate_size": 64,
        "max_position_embeddings": 256, "rope_theta": 500000, "mlp_bias": False, "use_cache": True,
        "sliding_window": window, "key_query_norm": False, "key_query_norm_per_head": False, "is_neox_style": True,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 64},
    }  # fmt: skip


def released_config() -> dict:
    cross = {"hidden_size": 32, "num_attention_heads": 4, "attention_num_kv_heads": 2, "word_window_size": 1,
             "key_query_norm": True, "key_query_norm_per_head": True}  # fmt: skip
    return {
        "model_type": "hierarchical_autoregressive_transformer", "architectures": ["HATDecoderForCausalLM"],
        "special_token_dict": {"<|eot_id|>": 192}, "eos_token_id": 192, "max_word_size": 24, "sliding_window": 8,
        "max_position_embeddings": 256, "torch_dtype": "bfloat16",
        "encoder_config": _stack(32, 1, 2, 8, 256) | {
            "cross_attention_config": cross | {"hidden_size_q": 48, "hidden_size_kv": 32}},
        "backbone_config": _stack(48, 2, 2, None, 0),
        "decoder_config": _stack(32, 2, 4, 8, 256) | {
            "cross_attn_every_layer": False,
            "cross_attention_config": cross | {"hidden_size_q": 32, "hidden_size_kv": 48}},
    }  # fmt: skip


def write_released(directory: Path, config: dict | None = None, bad_shape: str | None = None) -> Path:
    """A released-layout checkpoint with random weights in two bfloat16/float32 shards and an index."""
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(config or released_config()))
    rng = np.random.default_rng(3)
    shards: list[dict[str, np.ndarray]] = [{}, {}]
    for index, (name, shape) in enumerate(released_tensor_shapes().items()):
        if name == bad_shape:
            shape = (shape[0] + 1, *shape[1:])
        base = 1.0 if name.endswith("norm.weight") or "norm_" in name else 0.0
        value = (base + rng.normal(0, 0.1, shape)).astype(np.float32)
        # Alternate dtypes so the import reads both bfloat16 and float32 tensors.
        shards[index % 2][name] = value.astype(jnp.bfloat16) if index % 3 else value
    weight_map = {}
    for number, tensors in enumerate(shards, start=1):
        file = f"model-{number:05d}-of-00002.safetensors"
        save_file(tensors, directory / file, metadata={"format": "pt"})
        weight_map |= dict.fromkeys(tensors, file)
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    return directory


@pytest.mark.slow
def test_handwritten_released_checkpoint_imports_and_runs(tmp_path: Path):
    from hat.generate import generate_all

    released = write_released(tmp_path / "released")
    assert cli("import_hat")([str(released), str(tmp_path / "store")]) == 0
    loaded = load_model(tmp_path / "store")
    cfg = loaded.config.model
    assert (cfg.encoder.sliding_window, cfg.backbone.sliding_window, cfg.max_word_bytes) == (8, None, 24)
    assert cfg.pooling.qk_norm and cfg.pooling.num_kv_heads == 2 and not cfg.cross_attn_every_layer
    assert cfg.backbone.rope_scaling.original_max_position_embeddings == 64
    assert cfg.pooling.rope_theta == cfg.encoder.rope_theta == 500000
    # Spot checks of the layout: out x in with flattened heads -> in x heads x head_dim; (1, 1, D) -> (D,).
    stored = dict(iter_store(tmp_path / "store"))
    with safe_open(released / "model-00002-of-00002.safetensors", framework="numpy") as handle:
        names = set(handle.keys())
    pool_k = "encoder_connector.cross_attention_encoder_connector.k_proj.weight"
    shard = "model-00001-of-00002.safetensors" if pool_k not in names else "model-00002-of-00002.safetensors"
    with safe_open(released / shard, framework="numpy") as handle:
        k_weight = handle.get_tensor(pool_k).astype(np.float32)
    np.testing.assert_array_equal(
        stored["encoder_connector.cross_attention_encoder_connector.k_proj"], k_weight.T.reshape(32, 2, 8)
    )
    assert "decoder.decoder_layers.1.kv_norm.scale" not in stored
    tokens, word_ids, num_words = hat_inputs()
    logits = np.asarray(loaded.model(tokens, word_ids, num_words=num_words))
    assert logits.shape == (2, 14, 256) and np.isfinite(logits).all()
    (text,) = generate_all(loaded, [b"def "], max_new_bytes=3, use_cache=False)
    assert len(text) <= 3


# ---- refusals: one line, nothing left behind --------------------------------------------------------------------


def _refused(capsys, script: str, args: list[str], *needles: str) -> None:
    assert cli(script)(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(needle in err for needle in needles), err


def test_existing_out_dir_is_refused(tmp_path: Path, capsys):
    released = write_released(tmp_path / "released")
    (tmp_path / "out").mkdir()
    _refused(capsys, "import_hat", [str(released), str(tmp_path / "out")], "already exists")
    _refused(capsys, "export", [str(tmp_path / "whatever"), str(tmp_path / "out")], "already exists")
    assert not any((tmp_path / "out").iterdir())


def test_missing_shard_is_refused(tmp_path: Path, capsys):
    released = write_released(tmp_path / "released")
    (released / "model-00002-of-00002.safetensors").unlink()
    _refused(capsys, "import_hat", [str(released), str(tmp_path / "out")], "model-00002-of-00002.safetensors")
    assert no_leftovers(tmp_path, "out")


def test_shape_disagreeing_with_config_is_refused(tmp_path: Path, capsys):
    name = "backbone.layers.1.mlp.up_proj.weight"
    released = write_released(tmp_path / "released", bad_shape=name)
    _refused(capsys, "import_hat", [str(released), str(tmp_path / "out")], name, "(65, 48)", "(64, 48)")
    assert no_leftovers(tmp_path, "out")


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda c: c["backbone_config"]["rope_scaling"].update(rope_type="yarn"), "backbone_config.rope_scaling"),
        (
            lambda c: c["encoder_config"]["cross_attention_config"].update(key_query_norm_per_head=False),
            "encoder_config.cross_attention_config.key_query_norm_per_head",
        ),
        (lambda c: c["decoder_config"].update(mlp_bias=True), "decoder_config.mlp_bias"),
    ],
)
def test_unsupported_config_is_refused(tmp_path: Path, capsys, edit, field: str):
    config = released_config()
    edit(config)
    released = write_released(tmp_path / "released", config)
    _refused(capsys, "import_hat", [str(released), str(tmp_path / "out")], field)
    assert no_leftovers(tmp_path, "out")


def test_unexpected_tensor_is_refused(tmp_path: Path, capsys):
    released = write_released(tmp_path / "released")
    save_file({"encoder.extra.weight": np.zeros(3, np.float32)}, released / "extra.safetensors")
    index = json.loads((released / "model.safetensors.index.json").read_text())
    index["weight_map"]["encoder.extra.weight"] = "extra.safetensors"
    (released / "model.safetensors.index.json").write_text(json.dumps(index))
    _refused(capsys, "import_hat", [str(released), str(tmp_path / "out")], "encoder.extra.weight")
    assert no_leftovers(tmp_path, "out")
