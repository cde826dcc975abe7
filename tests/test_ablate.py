import json

import pytest
from conftest import tiny_config_dict

from mmemo.ablate import VARIANTS, ablate, format_ablation, variant_config
from mmemo.config import config_from_dict
from mmemo.errors import ConfigError


def test_variant_configs_change_only_what_they_name(synth_corpus, tmp_path):
    base = config_from_dict(tiny_config_dict(synth_corpus, tmp_path / "base"))
    base.train.modality_dropout = {"name": "none"}
    cfgs = {name: variant_config(base, name, seed=3, output_dir=tmp_path / name) for name in VARIANTS}
    assert cfgs["joint_md"].train.modality_dropout["name"] == "independent"  # joint_md always drops modalities
    assert cfgs["joint_nomd"].train.modality_dropout == {"name": "none"}
    assert cfgs["text_only"].train.monitor == "text" and cfgs["audio_only"].train.monitor == "audio"
    assert cfgs["concat"].model.fusion == "concat" and cfgs["joint_md"].model.fusion == "cross_attention"
    assert all(c.train.seed == 3 and c.train.epochs == base.train.epochs for c in cfgs.values())  # same budget
    assert base.model.fusion == "cross_attention"  # the base config is not modified


def test_an_unknown_variant_is_refused_before_training(synth_corpus, tmp_path):
    cfg = config_from_dict(tiny_config_dict(synth_corpus, tmp_path / "base"))
    with pytest.raises(ConfigError, match=r"variant must be one of .*got 'concatt'; did you mean 'concat'\?"):
        ablate(cfg, out_dir=tmp_path / "abl", variants=("joint_md", "concatt"))
    assert not (tmp_path / "abl").exists()


@pytest.mark.slow
def test_ablation_runs_and_reports_every_condition(synth_corpus, tmp_path):
    cfg = config_from_dict(tiny_config_dict(synth_corpus, tmp_path / "base", epochs=1))
    results = ablate(cfg, seeds=(0, 1), out_dir=tmp_path / "abl", variants=("joint_md", "text_only"))
    assert set(results) == {"joint_md", "text_only"}
    assert set(results["joint_md"]) == {"both", "text", "audio"} and set(results["text_only"]) == {"text"}
    for scores in results["joint_md"].values():
        assert {"ua", "wa", "macro_f1"} <= set(scores) and scores["n_runs"] == 2
        assert 0 <= scores["ua"] <= 1 and scores["ua_std"] >= 0
    table = format_ablation(results)
    assert "| text_only |" in table and "text-only UA" in table
    json.dumps(results)  # the --json output is plain JSON
    assert (tmp_path / "abl" / "text_only" / "seed-1" / "model" / "model.safetensors").is_file()
