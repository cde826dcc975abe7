import dataclasses
import re
import typing
from pathlib import Path

import pytest
import yaml

from mmemo.config import CONFIG_DIR, Config, config_from_dict, list_presets, load_config
from mmemo.data.pool import corpora_of
from mmemo.errors import ConfigError


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_loads(name):
    cfg = load_config(name)
    assert isinstance(cfg, Config)
    assert cfg.model.fusion in ("cross_attention", "concat")
    assert corpora_of(cfg.data) if cfg.data.manifest or cfg.data.manifests else True  # entries and label maps check


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


def test_a_retired_key_in_an_older_runs_config_loads_with_one_warning(tmp_path, monkeypatch):
    from mmemo import config

    monkeypatch.setattr(config, "_WARNED_RETIRED", set())
    clean = load_config("quickstart")
    clean.save(tmp_path / "clean.yaml")
    old = clean.to_dict()
    old["data"]["min_audio_seconds"] = 0.1  # written into every run's config.yaml before it was removed
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    with pytest.warns(UserWarning, match=r"data\.min_audio_seconds is ignored .* will be removed") as caught:
        cfg = load_config(tmp_path / "config.yaml", ["train.epochs=2"])  # overrides build the config twice
        again = load_config(tmp_path / "config.yaml")
    assert len([w for w in caught if "min_audio_seconds" in str(w.message)]) == 1  # once per process
    assert again == load_config(tmp_path / "clean.yaml") and cfg.train.epochs == 2
    assert "min_audio_seconds" not in again.to_yaml()  # a new run's config.yaml no longer has it
    monkeypatch.setattr(config, "_WARNED_RETIRED", set())
    with pytest.warns(UserWarning, match="min_audio_seconds is ignored"):  # so does an old command line's override
        assert load_config("quickstart", ["data.min_audio_seconds=0.2"]) == clean


def test_nested_overrides_reach_into_mappings():
    cfg = load_config(
        "quickstart",
        [
            "model.audio_config.hidden_size=32",
            "train.modality_dropout.name=exclusive",
            "train.modality_dropout.p_both=0.6",
        ],
    )
    assert cfg.model.audio_config["hidden_size"] == 32
    assert cfg.model.audio_config["num_hidden_layers"] == 2  # the preset's other keys stay
    # a new strategy name drops the old strategy's parameters (independent's p_text would not fit exclusive)
    assert cfg.train.modality_dropout == {"name": "exclusive", "p_both": 0.6}
    cfg = load_config("quickstart", ["train.modality_dropout.p_text=0.1"])
    assert cfg.train.modality_dropout == {"name": "independent", "p_text": 0.1, "p_audio": 0.2}


def test_override_errors_name_the_override_not_the_file():
    with pytest.raises(ConfigError, match=r"^override 'train.epoch=3': unknown key 'epoch'; did you mean 'epochs'\?"):
        load_config("quickstart", ["train.epoch=3"])
    with pytest.raises(ConfigError, match=r"^override 'trian.epochs=3': unknown key 'trian'; did you mean 'train'"):
        load_config("quickstart", ["trian.epochs=3"])
    with pytest.raises(ConfigError, match=r"^override 'train.epochs=ten' must be int, got str"):
        load_config("quickstart", ["train.epochs=ten"])
    with pytest.raises(ConfigError, match=r"train.epochs is not a mapping"):
        load_config("quickstart", ["train.epochs.x=1"])


def _copy_preset_with_manifest(folder):
    """The quickstart preset copied into `folder`, with an (empty) manifest file at its data/synth path."""
    folder.mkdir()
    (folder / "q.yaml").write_text(Path(CONFIG_DIR, "quickstart.yaml").read_text())
    (folder / "data" / "synth").mkdir(parents=True)
    (folder / "data" / "synth" / "manifest.jsonl").write_text("")
    return folder / "q.yaml"


def test_relative_paths_in_a_yaml_file_resolve_against_its_folder(tmp_path, monkeypatch):
    config = _copy_preset_with_manifest(tmp_path / "exp")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(config, ["data.cache_dir=cache"])
    assert cfg.data.manifest == str(tmp_path / "exp" / "data" / "synth" / "manifest.jsonl")
    assert "relative to that file's folder" in cfg.path_origin("data.manifest")
    assert cfg.data.cache_dir == str(elsewhere / "cache")  # overrides: relative to the working directory
    assert cfg.train.output_dir == "runs/quickstart"  # runs go where you run
    # shipped presets resolve against the working directory
    assert load_config("quickstart").data.manifest == str(elsewhere / "data" / "synth" / "manifest.jsonl")
    # the saved, resolved config works from any folder
    cfg.save(tmp_path / "resolved.yaml")
    monkeypatch.chdir(tmp_path)
    assert load_config(tmp_path / "resolved.yaml").data.manifest == cfg.data.manifest


def test_missing_manifest_error_shows_absolute_path_and_rule(tmp_path, monkeypatch):
    from mmemo.errors import DataError
    from mmemo.train import train

    config = tmp_path / "exp" / "c.yaml"
    config.parent.mkdir()
    config.write_text(yaml.safe_dump({"data": {"manifest": "corpus/m.jsonl"}, "train": {"output_dir": "runs/x"}}))
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "m.jsonl").write_text("")
    monkeypatch.chdir(tmp_path)
    expected = re.escape(str(tmp_path / "exp" / "corpus" / "m.jsonl"))
    with pytest.raises(DataError, match=rf"data.manifest {expected} does not exist \(.*relative to that file's folder"):
        train(load_config(config))
    with pytest.raises(DataError, match=r"does exist under the working directory"):
        train(load_config(config))


def test_overrides_anywhere_on_the_command_line(capsys):
    from mmemo.cli import main, parse_args

    args = parse_args(["cv", "emodb_cv", "m.jsonl", "-o", "out.json", "train.epochs=3", "--seeds", "1", "2"])
    assert (args.config, args.manifest, args.output, args.seeds) == ("emodb_cv", "m.jsonl", "out.json", [1, 2])
    assert args.overrides == ["train.epochs=3"]
    args = parse_args(["cv", "emodb_cv", "train.epochs=3", "m.jsonl", "model.audio_config.hidden_size=32"])
    assert args.manifest == "m.jsonl" and args.overrides == ["train.epochs=3", "model.audio_config.hidden_size=32"]
    args = parse_args(["train", "quickstart", "--resume", "train.epochs=3"])
    assert args.resume and args.overrides == ["train.epochs=3"]
    args = parse_args(["ablate", "train.seed=1", "quickstart", "--seeds", "0", "train.epochs=2"])
    assert args.config == "quickstart" and args.overrides == ["train.seed=1", "train.epochs=2"]
    args = parse_args(["cv", "emodb_cv", "m.jsonl", "stray", "train.epochs=3"])
    with pytest.raises(ConfigError, match=r"override 'stray' must look like section.key=value"):
        load_config(args.config, args.overrides)
    with pytest.raises(SystemExit):
        parse_args(["evaluate", "model", "m.jsonl", "train.epochs=3"])  # evaluate takes no overrides
    capsys.readouterr()
    # an override's mistake is reported as the override, before anything runs
    assert main(["train", "quickstart", "--resume", "train.epoch=3"]) == 2
    assert "override 'train.epoch=3': unknown key 'epoch'; did you mean 'epochs'?" in capsys.readouterr().err


def test_json_is_a_flag_and_the_old_json_path_spelling_writes_with_a_warning(capsys):
    from mmemo.cli import parse_args

    for argv in (["cv", "c.yaml", "m.jsonl"], ["ablate", "quickstart"], ["baseline", "m.jsonl"], ["bench", "train"]):
        args = parse_args([*argv, "--json"])
        assert args.json is True and args.output is None
        args = parse_args([*argv, "--json", "-o", "r.json"])
        assert args.json is True and args.output == "r.json"
        assert capsys.readouterr().err == ""
        args = parse_args([*argv, "--json", "old.json"])  # the old spelling: -o old.json, with a warning
        assert args.json is False and args.output == "old.json"
        assert "`--json PATH` is deprecated" in capsys.readouterr().err
    assert parse_args(["bench", "predict", "--json=old.json"]).output == "old.json"
    args = parse_args(["baseline", "--json", "m.jsonl"])  # not a .json file: not the old spelling's PATH
    assert args.json is True and args.manifest == "m.jsonl" and args.output is None
    for argv in (["evaluate", "model", "m.jsonl"], ["data", "check", "m.jsonl"]):
        args = parse_args([*argv, "--json", "-o", "r.json"])
        assert args.json is True and args.output == "r.json"


def test_prepare_suggests_the_corpus_name(tmp_path):
    from mmemo.data.corpora import prepare
    from mmemo.errors import DataError

    with pytest.raises(DataError, match=r"unknown corpus 'iemocapp'; did you mean 'iemocap'\?"):
        prepare("iemocapp", tmp_path)


def test_a_noise_folder_in_a_yaml_file_resolves_against_that_file(tmp_path, monkeypatch):
    from mmemo.config import load_config

    (tmp_path / "project" / "noise").mkdir(parents=True)
    config = tmp_path / "project" / "recipe.yaml"
    config.write_text("data:\n  manifest: m.jsonl\n  augment: {noise_snr: [10, 20], noise_dir: noise}\n")
    monkeypatch.chdir(tmp_path)
    assert load_config(config).data.augment["noise_dir"] == str((tmp_path / "project" / "noise").resolve())
    overridden = load_config(config, ["data.augment.noise_dir=elsewhere"]).data.augment["noise_dir"]
    assert overridden == str((tmp_path / "elsewhere").resolve())  # a command-line value: the working directory


# --- every value checked at load: one wrong value per field ------------------------------------------------------


def _bad_values():
    """(key, wrong value, what the message must say besides the key and the value) for every checked field: a
    Literal field's first choice misspelt, each bound of a Range crossed, and a hand-made case per other check."""
    from mmemo.config import _SECTIONS
    from mmemo.config_checks import CHECKS, Range, field_choices

    special = {  # the checks that are functions: one wrong value each
        "model.labels": (["angry", "angry"], "distinct"),
        "model.pooled_layers": ([1, 1], "distinct hidden-state indices"),
        "train.output_dir": ("", "a folder name"),
        "train.device": ("cdua", "one of 'auto', 'cpu', 'cuda', 'cuda:N', 'mps', got 'cdua'; did you mean 'cuda'?"),
        "train.modality_dropout": ({"name": "indepndent"}, "got 'indepndent'; did you mean 'independent'?"),
        "data.augment": ({"sped": [0.9, 1.1]}, "unknown key 'sped'; did you mean 'speed'?"),
    }
    cases = []
    for section, cls in _SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            key = f"{section}.{f.name}"
            choices = field_choices(cls, f.name)
            if choices:
                wrong = f"{choices[0]}x"
                cases.append((key, wrong, f"one of {', '.join(map(repr, choices))}, got {wrong!r}; did you mean"))
            check = CHECKS[section].get(f.name)
            if isinstance(check, Range):
                kind = float if hints[f.name] is float else int
                if check.low is not None:
                    cases.append((key, kind(check.low if check.low_open else check.low - 1), f"must be {check}"))
                if check.high is not None:
                    cases.append((key, kind(check.high if check.high_open else check.high + 1), f"must be {check}"))
            elif check is not None:
                assert key in special, f"add a wrong value for {key} to this test"
                cases.append((key, *special[key]))
    return cases


BAD_VALUES = _bad_values()


@pytest.mark.parametrize("key, value, says", BAD_VALUES, ids=[f"{k}={v!r}" for k, v, _ in BAD_VALUES])
def test_every_wrong_value_fails_at_load_naming_key_value_and_choices(key, value, says, tmp_path):
    section, name = key.split(".")
    shown = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...")
    with pytest.raises(ConfigError) as error:  # a command-line override: named as the override
        load_config("quickstart", [f"{key}={shown}"])
    message = str(error.value)
    assert message.startswith(f"override {f'{key}={shown}'!r}: {key}") and says in message
    assert isinstance(value, dict) or f"got {value!r}" in message  # a spec's message names the part that is wrong
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({section: {name: value}}))
    with pytest.raises(ConfigError) as error:  # a YAML file: named as the file
        load_config(tmp_path / "c.yaml")
    assert str(error.value).startswith(f"{tmp_path / 'c.yaml'}: {key}") and says in str(error.value)


def test_every_choice_and_range_field_is_tried():
    tried = {key for key, _, _ in BAD_VALUES}
    assert {"model.fusion", "model.acoustic_normalization", "data.corpus_sampling", "data.on_bad_sample"} <= tried
    assert {"train.monitor", "train.monitor_average", "train.epochs", "model.dropout", "data.batch_size"} <= tried


def test_the_issues_typos_fail_at_load_before_any_data_is_read(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"data": {"manifest": "missing/manifest.jsonl"}}))  # never opened at load
    for override, message in [
        ("model.fusion=concatt", r"model\.fusion must be one of 'cross_attention', 'concat', got 'concatt'; did you"),
        ("train.monitor=bogus", r"train\.monitor must be one of 'both', 'text', 'audio', got 'bogus'"),
        ("data.corpus_sampling=equall", r"got 'equall'; did you mean 'equal'\?"),
        ("train.modality_dropout.p_text=1.5", r"train\.modality_dropout\.p_text must be in \[0, 1\], got 1\.5"),
        ("data.augment={noise_snr: [10, 30], p_noise: 2}", r"data\.augment\.p_noise must be a probability"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_config(config, [override])
    with pytest.raises(ConfigError, match=r"c\.yaml: model\.fusion_dim must be divisible by model\.fusion_heads"):
        load_config(config, ["model.fusion_dim=30"])  # two keys: named as the file's
    assert load_config(config, ["model.fusion=concat", "model.fusion_dim=30"]).model.fusion_dim == 30


def test_a_section_built_in_python_is_checked_too():
    from mmemo.config import ModelConfig, TrainConfig

    with pytest.raises(ConfigError, match=r"^model\.fusion must be one of .*got 'concatt'; did you mean 'concat'\?"):
        ModelConfig(fusion="concatt")
    with pytest.raises(ConfigError, match=r"^train\.grad_accum must be >= 1, got 0"):
        TrainConfig(grad_accum=0)
