import numpy as np
import pytest
import soundfile as sf
import torch

from mmemo.data.audio import audio_duration, load_audio, prepare_waveform
from mmemo.errors import DataError


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
