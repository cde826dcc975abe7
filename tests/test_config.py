import pytest
import yaml

from mmemo.config import Config, config_from_dict, list_presets, load_config
from mmemo.errors import ConfigError


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_loads(name):
    cfg = load_config(name)
    assert isinstance(cfg, Config)
    assert cfg.model.fusion in ("cross_attention", "concat")


def test_presets_exist():
    assert {"quickstart", "iemocap_bert_wav2vec2"} <= set(list_presets())


def test_overrides_are_parsed_as_yaml():
    cfg = load_config(
        "quickstart",
        [
            "train.epochs=3",
            "train.lr=5e-4",
            "model.fusion=concat",
            "train.modality_dropout={name: exclusive, p_both: 0.6}",
        ],
    )
    assert cfg.train.epochs == 3 and cfg.train.lr == 5e-4 and cfg.model.fusion == "concat"
    assert cfg.train.modality_dropout == {"name": "exclusive", "p_both": 0.6}


def test_unknown_key_names_the_closest_one(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"train": {"epochz": 3}}))
    with pytest.raises(ConfigError, match=r"unknown key 'epochz'.*did you mean 'epochs'"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"did you mean 'model'"):
        config_from_dict({"modle": {}})


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"train.epochs must be int, got str"):
        config_from_dict({"train": {"epochs": "ten"}})
    with pytest.raises(ConfigError, match=r"model.freeze_feature_encoder must be bool"):
        config_from_dict({"model": {"freeze_feature_encoder": 1}})


def test_bad_override_and_missing_file():
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config("quickstart", ["epochs=3"])
    with pytest.raises(ConfigError, match="not found"):
        load_config("no_such_preset")


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config("quickstart", ["train.seed=7"])
    cfg.save(tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert again == cfg
