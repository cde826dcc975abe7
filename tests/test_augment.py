"""Training-time augmentation: seeded per (seed, epoch, index), off at evaluation, each operation does what it
says (SNR, gain, speed, masks), bad specs are named, and a tiny training run with augmentation completes."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import tiny_config_dict
from torch.utils.data import DataLoader
from transformers import Wav2Vec2FeatureExtractor, WhisperFeatureExtractor

from mmemo.data.audio import load_audio
from mmemo.data.augment import build_augmenter
from mmemo.data.cache import AudioCache
from mmemo.data.dataset import Collator, EmotionDataset
from mmemo.errors import ConfigError, DataError

SR = 16000
EVERYTHING = {
    "speed": [0.9, 1.1],
    "noise_snr": [10, 30],
    "gain_db": [-6, 6],
    "time_mask": {"count": 2, "max_seconds": 0.1},
    "spec_mask": {},
}


def _tone(seconds=3.0, freq=440.0, amplitude=0.1):
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _db(power_ratio):
    return 10 * np.log10(power_ratio)


def _power(x):
    return float(np.mean(np.square(x, dtype=np.float64)))


@pytest.fixture(scope="module")
def clips(rows):
    """Twelve training rows with audio."""
    clips = [r for r in rows if r["split"] == "train" and r["audio"]][:12]
    assert len(clips) == 12
    return clips


def _dataset(rows, augment, train=True, **kwargs):
    labels = {label: i for i, label in enumerate(sorted({r["label"] for r in rows}))}
    return EmotionDataset(rows, labels, SR, max_seconds=4.0, train=train, seed=3, augment=augment, **kwargs)


def test_evaluation_is_never_augmented(clips):
    augment = build_augmenter(EVERYTHING)
    clean, augmented = _dataset(clips, None, train=False), _dataset(clips, augment, train=False)
    for i in range(len(clips)):
        np.testing.assert_array_equal(clean[i]["audio"], augmented[i]["audio"])
        assert "augment_rng" not in augmented[i]
    # and training with the same augmenter does change the clips: the comparison above can fail
    trained = _dataset(clips, augment, train=True)
    assert sum(not np.array_equal(clean[i]["audio"], trained[i]["audio"]) for i in range(len(clips))) >= 10


def test_same_seed_epoch_index_same_clip_new_epoch_new_clip(clips):
    augment = build_augmenter(EVERYTHING)
    first, again = _dataset(clips, augment), _dataset(clips, augment)
    for i in range(4):
        np.testing.assert_array_equal(first[i]["audio"], again[i]["audio"])
    before = [first[i]["audio"] for i in range(4)]
    first.set_epoch(1)
    assert all(not np.array_equal(before[i], first[i]["audio"]) for i in range(4))
    again.set_epoch(1)
    for i in range(4):  # a resumed run that starts at epoch 1 sees what the uninterrupted one saw
        np.testing.assert_array_equal(first[i]["audio"], again[i]["audio"])


def test_noise_reaches_the_drawn_snr():
    clean = _tone()
    for snr in (0.0, 12.5, 30.0):
        augment = build_augmenter({"noise_snr": [snr, snr], "p_noise": 1.0})
        for seed in range(6):  # white, pink and brown noise all get drawn
            noisy = augment(clean, SR, np.random.default_rng(seed))
            assert abs(_db(_power(clean) / _power(noisy - clean)) - snr) < 0.5


def test_gain_in_decibels_and_clipping():
    clean = _tone(amplitude=0.05)
    for gain in (-6.0, 4.5):
        out = build_augmenter({"gain_db": [gain, gain], "p_gain": 1.0})(clean, SR, np.random.default_rng(0))
        assert abs(_db(_power(out) / _power(clean)) - gain) < 0.01
    loud = build_augmenter({"gain_db": [20, 20], "p_gain": 1.0})(_tone(amplitude=0.5), SR, np.random.default_rng(0))
    assert loud.max() == 1.0 and loud.min() == -1.0  # clipped as a recorder would, not wrapped or NaN


def test_silence_stays_finite():
    augment = build_augmenter({**EVERYTHING, "p_speed": 1.0, "p_noise": 1.0, "p_gain": 1.0})
    out = augment(np.zeros(SR, dtype=np.float32), SR, np.random.default_rng(0))
    assert out.dtype == np.float32 and np.isfinite(out).all() and not out.any()


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_changes_length_and_pitch_together(factor):
    clean = _tone(freq=1000.0)
    out = build_augmenter({"speed": [factor, factor], "p_speed": 1.0})(clean, SR, np.random.default_rng(0))
    assert abs(len(out) / (len(clean) / factor) - 1) < 0.01
    peak = np.argmax(np.abs(np.fft.rfft(out))) * SR / len(out)
    assert abs(peak - 1000.0 * factor) < 5  # Kaldi-style: a slower clip is also lower


def test_time_mask_zeroes_short_spans():
    clean = _tone() + 0.5  # no natural zeros
    out = build_augmenter({"time_mask": {"count": 3, "max_seconds": 0.1}})(clean, SR, np.random.default_rng(1))
    zeroed = np.flatnonzero(out == 0)
    assert 0 < len(zeroed) <= 3 * 0.1 * SR


def test_spec_mask_stays_within_valid_frames():
    augment = build_augmenter({"spec_mask": {"freq_count": 2, "freq_width": 8, "time_count": 2, "time_width": 10}})
    features = np.ones((80, 100), dtype=np.float32)
    for seed in range(20):
        masked = augment.mask_spectrogram(features, 60, np.random.default_rng(seed))
        assert (masked[:, 60:] == 1).all()
        assert (masked[:, :60] == 0).any()
    assert (features == 1).all()  # the input is not modified


def test_collator_masks_log_mel_features_in_training_only():
    augment = build_augmenter({"spec_mask": {"freq_count": 2, "freq_width": 20, "time_count": 2, "time_width": 10}})
    clips = [_tone(1.0), _tone(0.5)]

    def items():
        return [
            {"id": str(i), "text": "", "audio": a, "label": 0, "augment_rng": np.random.default_rng(i)}
            for i, a in enumerate(clips)
        ]

    evaluation = Collator(None, WhisperFeatureExtractor())
    clean = evaluation(items())["audio"]["input_features"]  # (2, 80, 100)
    masked = evaluation.for_training(augment)(items())["audio"]["input_features"]
    assert torch.equal(evaluation(items())["audio"]["input_features"], clean)  # the original stays clean
    changed = (masked != clean).any(dim=1)  # (2, frames)
    assert changed[0].any() and changed[1, :50].any()
    assert not changed[1, 50:].any()  # the second clip's padding frames are untouched


def test_spec_mask_with_a_waveform_tower_warns_once():
    augment = build_augmenter({"spec_mask": {}})
    collator = Collator(None, Wav2Vec2FeatureExtractor(return_attention_mask=True))
    with pytest.warns(UserWarning, match="mask_time_prob"):
        training = collator.for_training(augment)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batch = training([{"id": "a", "text": "", "audio": _tone(), "label": 0, "augment_rng": None}])
    assert set(batch["audio"]) == {"input_values", "attention_mask"}


def test_noise_dir_reads_real_files(tmp_path):
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "hum.wav", (0.2 * rng.standard_normal(8000)).astype(np.float32), 8000)  # 1 s, looped
    (tmp_path / "sub").mkdir()
    sf.write(tmp_path / "sub" / "long.flac", (0.1 * rng.standard_normal(5 * SR)).astype(np.float32), SR)
    (tmp_path / "notes.txt").write_text("not audio")
    augment = build_augmenter({"noise_snr": [10, 10], "p_noise": 1.0, "noise_dir": str(tmp_path)})
    assert len(augment.noise_files) == 2
    clean = _tone()
    for seed in range(6):
        noisy = augment(clean, SR, np.random.default_rng(seed))
        assert len(noisy) == len(clean)
        assert abs(_db(_power(clean) / _power(noisy - clean)) - 10) < 0.5


def test_noise_dir_without_audio_is_named(tmp_path):
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really")
    with pytest.raises(DataError, match=f"noise_dir {tmp_path} holds no readable audio"):
        build_augmenter({"noise_snr": [5, 20], "noise_dir": str(tmp_path)})
    with pytest.raises(DataError, match="is not a folder"):
        build_augmenter({"noise_snr": [5, 20], "noise_dir": str(tmp_path / "missing")})


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"sped": [0.9, 1.1]}, "unknown key 'sped'; did you mean 'speed'"),
        ({"time_mask": {"cout": 2}}, r"time_mask: unknown key 'cout'; did you mean 'count'"),
        ({"spec_mask": {"freq_widht": 4}}, "did you mean 'freq_width'"),
        ({"speed": [1.1, 0.9]}, r"data.augment.speed must be \[low, high\]"),
        ({"speed": 0.9}, r"data.augment.speed must be \[low, high\]"),
        ({"gain_db": [-6, "loud"]}, "data.augment.gain_db"),
        ({"noise_snr": [10, 30], "p_noise": 1.5}, "p_noise must be a probability"),
        ({"p_noise": 0.3}, "p_noise is set but data.augment.noise_snr is not"),
        ({"time_mask": {"count": -1}}, "time_mask.count must be a whole number"),
        ({"spec_mask": [2, 8]}, "spec_mask must be a mapping"),
    ],
)
def test_bad_spec_names_the_key(spec, message):
    with pytest.raises(ConfigError, match=message):
        build_augmenter(spec)


def test_empty_spec_is_off():
    assert build_augmenter({}) is None and build_augmenter(None) is None


def test_cache_keeps_clean_clips_and_workers_agree(clips, tmp_path):
    augment = build_augmenter(EVERYTHING)
    plain = _dataset(clips, augment)
    cached = _dataset(clips, augment, cache_dir=str(tmp_path / "cache"))
    for i in range(4):
        np.testing.assert_array_equal(plain[i]["audio"], cached[i]["audio"])  # augments the cached clip alike
        row = clips[i]
        entry = AudioCache(tmp_path / "cache", SR).load(row["audio"], row["start"], row["end"])
        np.testing.assert_array_equal(entry, load_audio(row["audio"], SR, row["start"], row["end"]))

    def collected(workers):
        loader = DataLoader(cached, batch_size=4, num_workers=workers, collate_fn=lambda items: items)
        return [item["audio"] for batch in loader for item in batch]

    for ours, theirs in zip(collected(0), collected(2), strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_setup_augments_the_training_loader_only_and_reproducibly(synth_corpus, tmp_path):
    from mmemo.config import config_from_dict
    from mmemo.train import setup

    def first_batch_of_epoch_one(name):
        cfg = tiny_config_dict(synth_corpus, tmp_path / name, threads=1)
        cfg["data"]["augment"] = EVERYTHING
        with pytest.warns(UserWarning, match="spec_mask needs a log-mel audio tower"):
            run = setup(config_from_dict(cfg))
        assert run.loaders["train"].dataset.augment is not None
        assert run.loaders["valid"].dataset.augment is None and run.loaders["test"].dataset.augment is None
        loader = run.loaders["train"]
        loader.batch_sampler.set_epoch(1)
        loader.dataset.set_epoch(1)
        return next(iter(loader))["audio"]["input_values"]

    # two setups, as an uninterrupted run and a run resumed at epoch 1 make: the same augmented batch
    assert torch.equal(first_batch_of_epoch_one("a"), first_batch_of_epoch_one("b"))


@pytest.mark.slow
def test_tiny_training_run_with_augmentation(synth_corpus, tmp_path):
    from mmemo.config import config_from_dict
    from mmemo.train import train

    cfg = tiny_config_dict(synth_corpus, tmp_path / "run", epochs=2, threads=1)
    cfg["data"]["max_audio_seconds"] = 2.0  # keeps the test fast; augmentation cost does not depend on it much
    cfg["data"]["augment"] = {**EVERYTHING, "spec_mask": None, "p_speed": 1.0, "p_noise": 1.0}
    result = train(config_from_dict(cfg))
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(np.isfinite(h["train_loss"]) for h in history) and result["skipped"] == 0
    assert 0.0 <= result["test"]["both"]["ua"] <= 1.0
    cfg["data"]["augment"] = {"speed": [0.9, 1.1], "nosie_snr": [5, 10]}
    cfg["train"]["output_dir"] = str(tmp_path / "bad")
    with pytest.raises(ConfigError, match="did you mean 'noise_snr'"):
        train(config_from_dict(cfg))
