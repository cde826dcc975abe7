"""Acoustic functionals on signals whose answers are known, SpeakerProfile, and the functionals cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from mmemo.data.acoustic import FEATURE_NAMES, FEATURES_VERSION, functionals
from mmemo.data.audio import load_audio
from mmemo.data.cache import AudioCache
from mmemo.data.speakers import SpeakerProfile
from mmemo.errors import DataError

SR = 16000


def tone(hz: float = 220.0, seconds: float = 2.0, rate: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def glide(start_hz: float, end_hz: float, seconds: float = 2.0) -> np.ndarray:
    """A voice-like harmonic sound whose pitch rises exponentially from start_hz to end_hz."""
    t = np.arange(int(seconds * SR)) / SR
    f0 = start_hz * (end_hz / start_hz) ** (t / seconds)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    wave = sum(np.sin(k * phase) / k for k in range(1, 8))
    return (0.1 * wave * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)  # 3 Hz loudness wobble


def named(values: np.ndarray) -> dict[str, float]:
    return dict(zip(FEATURE_NAMES, values.tolist()))


def test_names_match_the_vector():
    assert len(FEATURE_NAMES) >= 80
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    values = functionals(tone(), SR)
    assert values.shape == (len(FEATURE_NAMES),) and values.dtype == np.float32


def test_a_220_hz_tone_is_36_semitones_and_voiced():
    f = named(functionals(tone(220.0), SR))
    assert f["pitch_mean"] == pytest.approx(36.0, abs=0.05)  # 12·log2(220 / 27.5)
    assert f["pitch_std"] < 0.05
    assert f["voicing_ratio"] > 0.95
    assert f["pause_ratio"] == pytest.approx(0.0)
    assert f["duration"] == pytest.approx(2.0)


def test_other_rates_are_resampled():
    at_44k = named(functionals(tone(220.0, rate=44100), 44100))
    assert at_44k["pitch_mean"] == pytest.approx(36.0, abs=0.05)
    assert at_44k["duration"] == pytest.approx(2.0)


def test_a_rising_glide_has_the_right_slope_and_range():
    f = named(functionals(glide(150.0, 300.0), SR))  # one octave in 2 s: 12 st, 6 st/s
    assert f["pitch_slope"] == pytest.approx(6.0, rel=0.05)
    assert f["pitch_max"] - f["pitch_min"] == pytest.approx(0.9 * 12, abs=0.5)  # 5th to 95th percentile
    assert f["pitch_rising_ratio"] > 0.9


def test_doubling_the_gain_adds_6_db_and_changes_no_shape_statistic():
    wave = glide(120.0, 240.0)
    quiet, loud = named(functionals(wave, SR)), named(functionals(2 * wave, SR))
    assert loud["energy_mean"] - quiet["energy_mean"] == pytest.approx(20 * np.log10(2), abs=0.01)
    level_free = [n for n in FEATURE_NAMES if n.startswith(("mfcc", "pitch", "jitter", "shimmer", "alpha"))]
    for name in level_free:
        assert loud[name] == pytest.approx(quiet[name], rel=1e-3, abs=1e-4), name


@pytest.mark.parametrize(
    "wave",
    [np.zeros(SR), np.full(SR, 0.5), tone(seconds=0.1), tone(seconds=0.05), np.zeros(0), np.zeros(3)],
    ids=["silence", "dc", "0.1s", "0.05s", "empty", "3 samples"],
)
def test_degenerate_clips_give_finite_values(wave):
    values = functionals(wave, SR)
    assert values.shape == (len(FEATURE_NAMES),)
    assert np.isfinite(values).all()


def test_silence_is_unvoiced_with_zero_pitch_statistics():
    f = named(functionals(np.zeros(SR), SR))
    assert f["voicing_ratio"] == 0.0
    assert f["pitch_mean"] == 0.0 and f["pitch_range"] == 0.0
    assert f["pause_ratio"] == 1.0


def test_functionals_are_deterministic():
    wave = glide(100.0, 200.0)
    assert np.array_equal(functionals(wave, SR), functionals(wave.copy(), SR))


def test_bad_input_is_refused():
    with pytest.raises(DataError, match="mono"):
        functionals(np.zeros((2, SR)), SR)
    with pytest.raises(DataError, match="NaN"):
        functionals(np.full(SR, np.nan), SR)
    with pytest.raises(DataError, match="sampling rate"):
        functionals(tone(), 0)


def clips(n: int = 6) -> np.ndarray:
    return np.stack([functionals(glide(100.0 + 20 * i, 180.0 + 15 * i, 1.0 + 0.1 * i), SR) for i in range(n)])


def test_speaker_profile_z_scores_its_own_clips():
    features = clips()
    profile = SpeakerProfile.enrol(features)
    z = profile.normalise(features)
    assert z.shape == features.shape and np.isfinite(z).all()
    varying = features.std(axis=0) > 0.1 * np.abs(features.mean(axis=0)) + 1e-2  # not floored
    assert varying.sum() > 20
    np.testing.assert_allclose(z[:, varying].mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(z[:, varying].std(axis=0), 1.0, atol=1e-3)
    assert profile.normalise(features[0]).shape == (len(FEATURE_NAMES),)


def test_speaker_profile_from_one_clip_stays_bounded():
    features = clips()
    profile = SpeakerProfile.enrol(features[:1])
    z = profile.normalise(features)
    assert np.isfinite(z).all() and np.abs(z).max() <= 10.0
    assert np.all(profile.normalise(features[0]) == 0.0)


def test_speaker_profile_save_load_round_trip(tmp_path):
    profile = SpeakerProfile.enrol(clips())
    path = profile.save(tmp_path / "spk.json")
    loaded = SpeakerProfile.load(path)
    assert loaded.names == FEATURE_NAMES and loaded.version == FEATURES_VERSION and loaded.n_clips == 6
    np.testing.assert_array_equal(loaded.mean, profile.mean)
    np.testing.assert_array_equal(loaded.std, profile.std)


def test_speaker_profile_refuses_a_mismatched_file(tmp_path):
    path = SpeakerProfile.enrol(clips(3)).save(tmp_path / "spk.json")
    data = json.loads(path.read_text())
    data["version"] = FEATURES_VERSION + 1
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="re-enrol"):
        SpeakerProfile.load(path)
    data["version"], data["names"] = FEATURES_VERSION, data["names"][:-1]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="re-enrol"):
        SpeakerProfile.load(path)
    path.write_text("{}")
    with pytest.raises(DataError, match="not a SpeakerProfile"):
        SpeakerProfile.load(path)
    with pytest.raises(DataError, match="does not exist"):
        SpeakerProfile.load(tmp_path / "missing.json")


def test_cache_returns_the_same_vector(tmp_path):
    wav = tmp_path / "clip.wav"
    sf.write(wav, glide(110.0, 220.0), SR)
    cache = AudioCache(tmp_path / "cache")
    first = cache.functionals(wav)
    stored = list((tmp_path / "cache").rglob(f"*.functionals-v{FEATURES_VERSION}.npy"))
    assert len(stored) == 1
    second = AudioCache(tmp_path / "cache").functionals(wav)  # a fresh cache object: read from disk
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, functionals(load_audio(wav, SR), SR))
    stored[0].write_bytes(b"garbage")  # a damaged entry is recomputed, not trusted
    np.testing.assert_array_equal(AudioCache(tmp_path / "cache").functionals(wav), first)
