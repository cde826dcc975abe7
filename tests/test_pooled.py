"""The pooled audio head over a pretrained (here: tiny random) Whisper tower: the frozen tower's state cache, the
head trained on it, speaker profiles with pooled statistics, refit on train + valid."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_tiny_whisper, tiny_config_dict

from mmemo.builders import build_recognizer, load_splits, pooled_tables
from mmemo.config import config_from_dict
from mmemo.data.speakers import SpeakerProfile
from mmemo.errors import ConfigError, DataError, ModelLoadError
from mmemo.inference import EmotionRecognizer
from mmemo.train import train


@pytest.fixture(scope="module")
def tower(tmp_path_factory):
    """A tiny random Whisper checkpoint folder (full model: encoder + decoder), as a converted one looks."""
    return build_tiny_whisper(tmp_path_factory.mktemp("tower") / "whisper")


def _config(manifest, out_dir, tower, cache_dir=None, **model):
    cfg = tiny_config_dict(manifest, out_dir, epochs=3, lr=3e-3)
    cfg["model"] = {
        **cfg["model"],
        "audio_config": {},
        "audio_encoder": str(tower),
        "freeze_audio_layers": -1,
        "audio_head": "pooled",
        "pooled_layers": [1, 2],
        **model,
    }
    cfg["data"]["max_audio_seconds"] = 3.0
    if cache_dir is not None:
        cfg["data"]["cache_dir"] = str(cache_dir)
    return config_from_dict(cfg)


class _Counting:
    """Wraps a recognizer's `pooled_states` to count the clips the tower really encodes."""

    def __init__(self, recognizer):
        self.clips, self.inner = 0, recognizer.pooled_states
        recognizer.pooled_states = self

    def __call__(self, waves, *args, **kwargs):
        self.clips += len(waves)
        return self.inner(waves, *args, **kwargs)


def _tables(cfg, seed=0):
    splits = load_splits(cfg)
    torch.manual_seed(seed)
    recognizer = build_recognizer(cfg.model, splits, torch.device("cpu"))
    counter = _Counting(recognizer)
    return pooled_tables(recognizer, splits, cfg, None), counter.clips, recognizer


def test_a_frozen_towers_states_are_computed_once_and_recomputed_when_tower_crop_or_layers_change(
    synth_corpus, tower, tmp_path
):
    cfg = _config(synth_corpus, tmp_path / "run", tower, cache_dir=tmp_path / "cache")
    first, encoded, recognizer = _tables(cfg)
    rows = sum(len(rows) for rows in load_splits(cfg).values())
    assert encoded == rows and first["train"].shape[0] == 1 and first["train"].shape[2:] == (2, 32)
    again, encoded_again, _ = _tables(cfg)
    assert encoded_again == 0  # every clip from the cache, another seed's model notwithstanding (the tower is frozen)
    for split in first:
        np.testing.assert_array_equal(again[split], first[split])
    # the live tower gives what the cache holds (a clip the 3 s crop leaves whole, batched with others or alone)
    from mmemo.data.audio import load_audio
    from mmemo.data.dataset import clip_seconds

    test = load_splits(cfg)["test"]
    i = next(i for i, row in enumerate(test) if clip_seconds(row) < 3.0)
    live = recognizer.pooled_states([load_audio(test[i]["audio"], 16000)])[0]
    np.testing.assert_allclose(first["test"][0, i], live, atol=1e-4)

    cropped = _config(synth_corpus, tmp_path / "run", tower, cache_dir=tmp_path / "cache")
    cropped.data.max_audio_seconds = 2.0
    assert _tables(cropped)[1] == rows  # another crop: every clip again
    layers = _config(synth_corpus, tmp_path / "run", tower, cache_dir=tmp_path / "cache", pooled_layers=[0, 2])
    assert _tables(layers)[1] == rows
    other = build_tiny_whisper(tmp_path / "other", seed=1)
    assert _tables(_config(synth_corpus, tmp_path / "run", other, cache_dir=tmp_path / "cache"))[1] == rows


def test_augmented_copies_are_cached_beside_the_clean_clip(synth_corpus, tower, tmp_path):
    cfg = _config(synth_corpus, tmp_path / "run", tower, cache_dir=tmp_path / "cache")
    cfg.data.tower_copies, cfg.data.augment = 2, {"gain_db": [-6, 6], "p_gain": 1.0}
    splits = load_splits(cfg)
    from mmemo.data.augment import build_augmenter

    recognizer = build_recognizer(cfg.model, splits, torch.device("cpu"))
    tables = pooled_tables(recognizer, splits, cfg, build_augmenter(cfg.data.augment))
    assert tables["train"].shape[0] == 3 and tables["valid"].shape[0] == 1  # copies of training clips only
    assert not np.allclose(tables["train"][1], tables["train"][0])  # a copy is not the clean clip
    assert not np.allclose(tables["train"][1], tables["train"][2])
    counter = _Counting(recognizer)
    again = pooled_tables(recognizer, splits, cfg, build_augmenter(cfg.data.augment))
    assert counter.clips == 0
    np.testing.assert_array_equal(again["train"], tables["train"])


def test_tower_copies_without_augmentation_is_an_error_when_the_config_loads(tmp_path):
    from mmemo.config import load_config

    config = tmp_path / "c.yaml"
    config.write_text("data:\n  manifest: missing.jsonl\n  tower_copies: 2\n")  # the manifest is never read
    with pytest.raises(ConfigError, match="c.yaml: data.tower_copies=2 augments copies .* data.augment"):
        load_config(config)
    assert load_config(config, ["data.augment={gain_db: [-6, 6]}"]).data.tower_copies == 2


def test_speaker_normalisation_reaches_the_pooled_states_without_the_acoustic_token(synth_corpus, tower, tmp_path):
    """`acoustic_normalization: speaker` standardises a pooled head's states per speaker whether or not the
    acoustic-statistics token is on (it once did only with the token: the recipe trained globally unawares)."""
    from mmemo.train import setup

    for acoustic_features in (False, True):
        cfg = _config(
            synth_corpus,
            tmp_path / f"run{acoustic_features}",
            tower,
            cache_dir=tmp_path / "cache",
            acoustic_normalization="speaker",
            acoustic_features=acoustic_features,
        )
        run = setup(cfg)
        for name, loader in run.loaders.items():
            batch = next(iter(loader))
            assert "pooled_reference" in batch["audio"], (acoustic_features, name)
            assert torch.isfinite(batch["audio"]["pooled_reference"]).all()


def test_pooled_training_batches_are_random_draws_not_length_buckets(synth_corpus, tower, tmp_path):
    """A pooled clip is one token, so nothing pads: length buckets would only group the long emotions (sad,
    bored) apart from the short ones (angry) and cost accuracy. The frames head still buckets."""
    from mmemo.train import setup

    def spread(head):
        cfg = _config(synth_corpus, tmp_path / head, tower, cache_dir=tmp_path / "cache", audio_head=head)
        loader = setup(cfg).loaders["train"]
        seconds = np.array(loader.dataset.durations())
        return np.mean([np.ptp(seconds[batch]) for batch in loader.batch_sampler.batches()]), np.ptp(seconds)

    bucketed, whole = spread("frames")
    drawn, _ = spread("pooled")
    assert bucketed < 0.2 * whole < drawn


@pytest.fixture(scope="module")
def pooled_run(synth_corpus, tower, tmp_path_factory):
    root = tmp_path_factory.mktemp("pooled")
    cfg = _config(synth_corpus, root / "run", tower, cache_dir=root / "cache", acoustic_normalization="speaker")
    return train(cfg)


@pytest.mark.slow
def test_training_the_pooled_head_keeps_the_frozen_tower_byte_identical(pooled_run, tower):
    from transformers import WhisperForAudioClassification

    original = WhisperForAudioClassification.from_pretrained(tower).encoder.state_dict()
    trained = EmotionRecognizer.from_pretrained(pooled_run["model_dir"]).model.audio_encoder.model.state_dict()
    assert original.keys() == trained.keys()
    for name, tensor in original.items():
        assert torch.equal(tensor, trained[name]), name
    scores = pooled_run["test"]
    assert scores["audio"]["n"] > 0 and 0.0 <= scores["audio"]["ua"] <= 1.0


@pytest.mark.slow
def test_the_cached_training_path_and_live_prediction_give_the_same_probabilities(pooled_run, synth_corpus, tmp_path):
    from mmemo.data.dataset import clip_seconds

    rec = EmotionRecognizer.from_pretrained(pooled_run["model_dir"])
    cfg = _config(
        synth_corpus, tmp_path / "run", pooled_run["model_dir"], cache_dir=pooled_run["out_dir"].parent / "cache"
    )
    rows = [r for r in load_splits(cfg)["test"] if clip_seconds(r) <= 3.0][:4]  # not cropped either way
    cached = pooled_tables(rec, {"test": rows}, cfg, None, set_statistics=False)["test"][0]  # (N, layers, D)
    batch = rec.collator(
        [{"id": r["id"], "label": -100, "text": "", "audio": None, "pooled": p} for r, p in zip(rows, cached)]
    )
    with torch.no_grad():
        logits = rec.model.logits_by_condition(None, batch["audio"], None, batch["audio_present"])["audio"][0]
    from_cache = torch.softmax(logits / rec.temperature, -1).numpy()
    live = [p.probabilities for p in rec.predict(audio=[r["audio"] for r in rows])]
    np.testing.assert_allclose(from_cache, [[p[label] for label in rec.labels] for p in live], atol=1e-5)


@pytest.mark.slow
def test_a_speaker_profile_carries_the_pooled_statistics_and_must_fit_the_tower(pooled_run, synth_corpus, tmp_path):
    rec = EmotionRecognizer.from_pretrained(pooled_run["model_dir"])
    rows = [json.loads(line) for line in open(synth_corpus)]
    speaker = next(r["speaker"] for r in rows if r["split"] == "test")
    clips = [str(synth_corpus.parent / r["audio"]) for r in rows if r["speaker"] == speaker][:6]
    profile = rec.enrol_speaker(clips)
    assert profile.pooled_mean.shape == (2, 32) and profile.pooled_key == rec.pooled_key
    loaded = SpeakerProfile.load(profile.save(tmp_path / "me.json"))
    np.testing.assert_allclose(loaded.pooled_std, profile.pooled_std)
    plain = rec.predict(audio=clips[0]).probabilities
    personal = rec.predict(audio=clips[0], speaker_profile=tmp_path / "me.json").probabilities
    assert plain != personal
    # what the profile does equals the training's speaker standardisation: z = (x - speaker mean) / speaker std
    wave = rec._waveform(clips[0], None, "audio")
    z = (rec.pooled_states([wave])[0] - profile.pooled_mean) / profile.pooled_std
    assert np.isfinite(z).all()

    functionals_only = SpeakerProfile(profile.names, profile.version, profile.n_clips, profile.mean, profile.std)
    with pytest.raises(DataError, match="has no audio-tower statistics .* enrol the speaker again"):
        rec.predict(audio=clips[0], speaker_profile=functionals_only)
    other = SpeakerProfile.enrol(np.stack([profile.mean] * 2), np.zeros((2, 2, 32)), "another:[1, 2]")
    with pytest.raises(DataError, match="was enrolled with another audio tower"):
        rec.predict(audio=clips[0], speaker_profile=other)


@pytest.mark.slow
def test_refit_trains_on_train_and_valid_for_the_best_epoch_count(synth_corpus, tower, tmp_path, monkeypatch):
    cfg = _config(synth_corpus, tmp_path / "run", tower, cache_dir=tmp_path / "cache")
    cfg.train.refit = True
    result = train(cfg)
    epochs = result["refit_epochs"]
    assert epochs == result["best_epoch"] >= 1
    log = (tmp_path / "run" / "refit" / "metrics.jsonl").read_text().splitlines()
    assert len(log) == epochs
    final = EmotionRecognizer.from_pretrained(result["model_dir"]).model.state_dict()
    # one copy of the weights: the refit's model moved into the run's model/, and no checkpoints of the refit (a
    # killed refit starts again); model/ is no longer the first run's best, so the run cannot be resumed
    assert not any(p.is_dir() for p in (tmp_path / "run" / "refit").iterdir())
    with pytest.raises(ModelLoadError, match="finished its refit: model/ holds the refit's model"):
        train(cfg, resume=True)
    # the run folder's report describes the model it holds: the refit's test scores, the first run's validation ones
    report = (tmp_path / "run" / "report.md").read_text()
    assert f"refit on train + valid for {epochs} epochs" in report
    for split in ("test", "valid"):
        audio = result[split]["audio"]
        assert f"| audio-only | {audio['n']} | {audio['wa']:.3f} | {audio['ua']:.3f} |" in report, split
    # the refit trained on train + valid: the pooled statistics are theirs
    splits = load_splits(cfg)
    fresh = build_recognizer(cfg.model, splits, torch.device("cpu"))
    pooled_tables(fresh, {"train": splits["train"] + splits["valid"]}, cfg, None)
    torch.testing.assert_close(final["pooled_mean"], fresh.model.pooled_mean)
    # train.refit_epochs sets the refit's length, whatever the best epoch was; the refit saves its last epoch only
    cfg.train.refit_epochs, cfg.train.output_dir = epochs + 2, str(tmp_path / "fixed")
    saved, save = [], EmotionRecognizer.save_pretrained

    def recorded(rec, path, **kwargs):
        saved.append(Path(path))
        return save(rec, path, **kwargs)

    monkeypatch.setattr(EmotionRecognizer, "save_pretrained", recorded)
    assert train(cfg)["refit_epochs"] == epochs + 2
    assert [p for p in saved if Path(p).is_relative_to(tmp_path / "fixed" / "refit")] == [
        tmp_path / "fixed" / "refit" / "model"
    ]
    assert len((tmp_path / "fixed" / "refit" / "metrics.jsonl").read_text().splitlines()) == epochs + 2


def test_pooled_layers_outside_the_tower_are_a_config_error(synth_corpus, tower, tmp_path):
    cfg = _config(synth_corpus, tmp_path / "run", tower, pooled_layers=[1, 3])
    with pytest.raises(ConfigError, match=r"model.pooled_layers .* from 0 .* to 2 .* got \[1, 3\]"):
        build_recognizer(cfg.model, load_splits(cfg), torch.device("cpu"))


def test_a_whisper_folder_without_preprocessor_config_gets_one_from_its_config(tower, tmp_path, capsys):
    import shutil

    from mmemo.builders import load_feature_extractor
    from mmemo.config import ModelConfig
    from mmemo.encoders import build_encoders

    folder = tmp_path / "converted"
    shutil.copytree(tower, folder)
    (folder / "preprocessor_config.json").unlink()
    cfg = ModelConfig(
        audio_encoder=str(folder),
        text_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
    )
    extractor = load_feature_extractor(cfg)
    assert type(extractor).__name__ == "WhisperFeatureExtractor" and extractor.feature_size == 80
    build_encoders(cfg, vocab_size=50)
    err = capsys.readouterr().err
    assert "audio tower: the Whisper encoder of" in err and "2 layers, 32 wide" in err
    assert "MISSING" not in err and "UNEXPECTED" not in err and "newly initialized" not in err

    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32}))
    with pytest.raises(ModelLoadError, match="no preprocessor_config.json, and a bert model's feature extractor"):
        load_feature_extractor(cfg)
