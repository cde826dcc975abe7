import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import HYPOTHESIS_SETTINGS as SETTINGS
from hypothesis import assume, given
from hypothesis import strategies as st

from mmemo.data.audio import audio_duration, load_audio, prepare_waveform
from mmemo.errors import DataError

RATE = 16000
COMMON_RATES = [8000, 11025, 16000, 22050, 32000, 44100, 48000, 96000]
rates = st.one_of(st.sampled_from(COMMON_RATES), st.integers(1000, 96000))  # odd rates included
SUBTYPES = {np.int16: "PCM_16", np.int32: "PCM_32", np.float32: "FLOAT", np.float64: "DOUBLE"}


def _samples(n: int, channels: int, dtype, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).uniform(-0.9, 0.9, (n, channels))
    if np.issubdtype(dtype, np.integer):
        return (x * np.iinfo(dtype).max).astype(dtype)
    return x.astype(dtype)


def _expected_length(n: int, rate: int) -> int:
    return math.ceil(n * RATE / rate)


@SETTINGS
@given(
    n=st.integers(1, 4000),
    rate=rates,
    channels=st.integers(1, 8),
    dtype=st.sampled_from(list(SUBTYPES)),
    channels_first=st.booleans(),
    poison=st.sampled_from([None, np.nan, np.inf]),
    seed=st.integers(0, 99),
)
def test_prepare_waveform_gives_finite_mono_float32_at_the_model_rate(
    n, rate, channels, dtype, channels_first, poison, seed
):
    assume(channels == 1 or n > channels)  # an array's channel axis is its shorter one
    audio = _samples(n, channels, dtype, seed)
    if poison is not None and not np.issubdtype(dtype, np.integer):
        audio[n // 2, 0] = poison
        with pytest.raises(DataError, match="NaN or infinite"):
            prepare_waveform(audio, rate)
        return
    if channels == 1:
        audio = audio[:, 0]
    elif channels_first:
        audio = audio.T
    out = prepare_waveform(audio, rate)
    assert out.dtype == np.float32 and out.ndim == 1 and np.isfinite(out).all()
    assert abs(len(out) - _expected_length(n, rate)) <= 1


@SETTINGS
@given(
    n=st.integers(1, 4000),
    rate=rates,
    channels=st.integers(1, 8),
    dtype=st.sampled_from(list(SUBTYPES)),
    seed=st.integers(0, 99),
)
def test_load_audio_reads_any_wav_to_mono_float32_at_the_model_rate(n, rate, channels, dtype, seed):
    audio = _samples(n, channels, dtype, seed)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "a.wav"
        sf.write(path, audio, rate, subtype=SUBTYPES[dtype])
        out = load_audio(path, RATE)
    assert out.dtype == np.float32 and out.ndim == 1 and np.isfinite(out).all()
    assert abs(len(out) - _expected_length(n, rate)) <= 1  # frames, whatever the channel count


def _tone(seconds=1.0, rate=16000, freq=220.0):
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
def test_any_rate_is_resampled_to_16k(tmp_path, rate):
    path = tmp_path / "a.wav"
    sf.write(path, _tone(1.0, rate), rate)
    audio = load_audio(path, 16000)
    assert audio.dtype == np.float32 and abs(len(audio) - 16000) <= 1
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * 16000 / len(audio) - 220) < 3  # the pitch survives resampling


def test_stereo_and_six_channels_are_downmixed(tmp_path):
    stereo = np.stack([_tone(), -_tone() * 0 + _tone()], axis=1)
    sf.write(tmp_path / "s.wav", stereo, 16000)
    assert load_audio(tmp_path / "s.wav").shape == (16000,)
    six = np.repeat(_tone()[:, None], 6, axis=1)
    sf.write(tmp_path / "six.wav", six, 16000)
    np.testing.assert_allclose(load_audio(tmp_path / "six.wav"), _tone(), atol=1e-4)


def test_start_end_cut_the_clip(tmp_path):
    sf.write(tmp_path / "a.wav", _tone(3.0), 16000)
    assert len(load_audio(tmp_path / "a.wav", start=1.0, end=2.5)) == 24000
    assert audio_duration(tmp_path / "a.wav") == pytest.approx(3.0)


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float64])
def test_arrays_of_any_dtype(dtype):
    x = _tone()
    arr = (x * np.iinfo(dtype).max).astype(dtype) if np.issubdtype(dtype, np.integer) else x.astype(dtype)
    out = prepare_waveform(arr, 16000)
    np.testing.assert_allclose(out, x, atol=1e-3)
    assert out.dtype == np.float32


def test_tensors_and_channels_first():
    x = torch.from_numpy(np.stack([_tone(), _tone()]))  # (2, samples)
    assert prepare_waveform(x, 16000).shape == (16000,)


def test_bad_audio_gets_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_audio(tmp_path / "missing.wav")
    (tmp_path / "junk.wav").write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(DataError, match="cannot decode audio file .*junk.wav"):
        load_audio(tmp_path / "junk.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(DataError, match="empty.wav"):
        load_audio(tmp_path / "empty.wav")
    with pytest.raises(DataError, match="NaN or infinite"):
        prepare_waveform(np.array([0.1, np.nan, 0.2], dtype=np.float32), 16000)
    with pytest.raises(DataError, match="empty"):
        prepare_waveform(np.zeros(0, dtype=np.float32), 16000)
