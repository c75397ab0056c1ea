"""Config loading: defaults, overrides, and clear errors for unknown or mistyped keys."""

from pathlib import Path

import pytest
import yaml

from hat.config import CONFIG_DIR, Config, ConfigError, config_from_dict, load_config, to_dict
from hat.kinds import kind_of


def test_default_config_loads_and_is_hat():
    config = load_config()
    assert config.model.kind == "hat"
    assert config.data.corpus == "stdlib"


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    load_config(path)


def test_dotted_overrides_are_typed():
    config = load_config(None, ["train.steps=7", "train.learning_rate=1e-3", "workdir=runs/x", "model.remat=full"])
    assert config.train.steps == 7 and config.train.learning_rate == 1e-3
    assert config.workdir == "runs/x" and config.model.remat == "full"


def test_nested_override_keeps_sibling_defaults():
    config = load_config(None, ["model.backbone.num_layers=2"])
    assert config.model.backbone.num_layers == 2
    assert config.model.backbone.hidden_size == load_config().model.backbone.hidden_size


def test_unknown_key_names_it_and_suggests():
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.stpes'.*train\.steps"):
        load_config(None, ["train.stpes=5"])


def test_unknown_top_level_key_in_file(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("modle: {kind: hat}\n")
    with pytest.raises(ConfigError, match="unknown config key 'modle'.*did you mean model"):
        load_config(path)


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"'train\.batch_size' must be int, got 'big'"):
        load_config(None, ["train.batch_size=big"])


def test_bad_literal_lists_choices():
    with pytest.raises(ConfigError, match=r"model\.kind.*\['hat', 'byte_lm', 'token_lm'\]"):
        load_config(None, ["model.kind=gpt"])


def test_missing_config_file_is_one_line():
    with pytest.raises(ConfigError, match="config file not found: nope.yaml") as info:
        load_config("nope.yaml")
    assert "\n" not in str(info.value)


def test_cross_field_validation():
    # What one model kind needs of a config is checked by its registry entry, before a run starts.
    with pytest.raises(ConfigError, match="must equal model.encoder.hidden_size"):
        kind_of(load_config(None, ["model.decoder.hidden_size=192"]))


def test_hashed_ngram_options_are_checked():
    assert load_config(None, ["model.ngrams.sizes=[2, 3]"]).model.ngrams.sizes == (2, 3)
    with pytest.raises(ConfigError, match="distinct positive"):
        load_config(None, ["model.ngrams.sizes=[3, 3]"])
    with pytest.raises(ConfigError, match="reads tokens"):
        kind_of(load_config(CONFIG_DIR / "bpe_tiny.yaml", ["model.ngrams.sizes=[2]"]))


def test_round_trip_through_dict():
    config = load_config(None, ["data.corpus=[a.txt, b/]", "model.ngrams.sizes=[2, 4]"])
    assert config_from_dict(to_dict(config)) == config
    assert yaml.safe_load(yaml.safe_dump(to_dict(config))) == to_dict(config)
    assert isinstance(config_from_dict({}), Config)


def test_base_config_and_mesh_overrides(tmp_path):
    from hat.config import CONFIG_DIR

    pod = load_config(CONFIG_DIR / "hat_llama3_8b_pod.yaml", ["parallel.mesh.fsdp=16"])
    base = load_config(CONFIG_DIR / "hat_llama3_8b.yaml")
    assert pod.model == base.model  # inherited through `base:`
    assert pod.train.batch_size == 256 and base.train.batch_size == 16
    assert pod.parallel.mesh == {"data": -1, "fsdp": 16, "tensor": 1}
    assert pod.parallel.rules["embed"] == ["fsdp"]  # one override leaves the rest of the table alone
    with pytest.raises(ConfigError, match=r"parallel\.rules\.heads names mesh axes \['model'\]"):
        load_config(None, ["parallel.rules.heads=model"])
    with pytest.raises(ConfigError, match="at most one -1"):
        load_config(None, ["parallel.mesh.fsdp=-1"])
    with pytest.raises(ConfigError, match="multiple of train.microbatches"):
        load_config(None, ["train.batch_size=6", "train.microbatches=4"])
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "loop.yaml")


def test_mesh_shape_fills_the_free_axis():
    from hat.train.mesh import MeshError, resolve_mesh_shape

    assert resolve_mesh_shape({"data": -1, "fsdp": 4, "tensor": 2}, 256) == {"data": 32, "fsdp": 4, "tensor": 2}
    with pytest.raises(MeshError, match="do not divide"):
        resolve_mesh_shape({"data": -1, "fsdp": 3}, 8)
    with pytest.raises(MeshError, match="needs 4 devices but 8"):
        resolve_mesh_shape({"data": 2, "fsdp": 2}, 8)


def test_rules_table_maps_logical_axes_to_mesh_axes():
    from jax.sharding import AbstractMesh, PartitionSpec

    from hat.models.sharding import ShardingRules

    config = load_config(None, ["parallel.part_rules={encoder: {heads: [], mlp: []}}"])
    rules = ShardingRules(AbstractMesh((2, 4, 2), ("data", "fsdp", "tensor")), config.parallel.rules,
                          config.parallel.part_rules)  # fmt: skip
    q_proj = ("embed", "heads", "head_dim")
    assert rules.spec(q_proj, (256, 8, 32), part="backbone") == PartitionSpec("fsdp", "tensor", None)
    assert rules.spec(q_proj, (256, 8, 32), part="encoder") == PartitionSpec("fsdp", None, None)
    # A stacked (scanned) layer keeps its layer axis whole; 3 heads cannot split 2 ways and stay replicated.
    assert rules.spec(("layers", *q_proj), (4, 256, 3, 32)) == PartitionSpec(None, "fsdp", None, None)
    activation = ("act_batch", "act_length", "act_embed")
    assert rules.spec(activation, (16, 128, 64)) == PartitionSpec(("data", "fsdp"), None, None)
    # Batch 4 cannot split 8 ways: only the axes that divide it are kept, in order.
    assert rules.spec(("act_batch", None), (4, 128)) == PartitionSpec("data", None)


def test_configs_of_older_checkpoints_still_load():
    from hat.config import config_from_dict, to_dict

    tree = to_dict(load_config(None))
    tree["model"]["remat"] = True  # before remat policies
    assert config_from_dict(tree).model.remat == "full"


def test_an_odd_pooling_head_dim_is_one_line_naming_the_fix():
    # 192 // 9 = 21: the rotary embedding splits head dims in halves (configs/hat_from_smollm2.yaml once had this).
    with pytest.raises(ConfigError, match="must be even for its rotary embedding: set model.pooling.head_dim"):
        kind_of(load_config(None, ["model.encoder.hidden_size=192", "model.pooling.num_heads=9",
                                   "model.pooling.num_kv_heads=3"]))  # fmt: skip
    kind_of(load_config(CONFIG_DIR / "hat_from_smollm2.yaml"))
