"""Audio loading: any file soundfile or librosa can read, or an array, to mono float32 at the model's rate."""

from __future__ import annotations

import os
import warnings

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from mmemo.errors import DataError


def load_audio(
    path: str | os.PathLike,
    sampling_rate: int = 16000,
    start: float | None = None,
    end: float | None = None,
) -> np.ndarray:
    """Decode an audio file to a mono float32 array at `sampling_rate`.

    Args:
        path: a file soundfile can read (wav, flac, ogg, mp3 with libsndfile ≥ 1.1), else one librosa can.
        sampling_rate: the rate to resample to.
        start: seconds into the file where the clip starts (None: the beginning).
        end: seconds into the file where the clip ends (None: the end).

    Returns:
        A 1-D float32 array.

    Raises:
        DataError: the file is missing, cannot be decoded, is empty, or holds NaN/inf samples.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"audio file {path} does not exist; check the manifest's audio path")
    try:
        audio, rate = _decode(path, start, end)
    except DataError:
        raise
    except Exception as e:  # decoders raise many types for corrupt input; all mean "cannot read this file"
        raise DataError(f"cannot decode audio file {path}: {e}; is it a valid audio file?") from None
    return prepare_waveform(audio, rate, sampling_rate, where=path)


def prepare_waveform(audio, rate: int, sampling_rate: int = 16000, where: str = "audio") -> np.ndarray:
    """Turn an array or tensor (samples, or channels × samples / samples × channels) into mono float32.

    Integer arrays are scaled to [-1, 1]; the channel axis is the smaller one; the rate is converted with
    torchaudio's band-limited resampler.

    Raises:
        DataError: empty input, NaN/inf samples, more than two dimensions, or a non-positive rate.
    """
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    audio = np.asarray(audio)
    if not rate or rate <= 0:
        raise DataError(f"{where}: sampling rate must be a positive number of Hz, got {rate!r}")
    if audio.size == 0:
        raise DataError(f"{where}: audio is empty (0 samples)")
    if np.issubdtype(audio.dtype, np.integer):
        audio = audio / float(np.iinfo(audio.dtype).max)  # int16/int32 PCM to [-1, 1]
    if audio.ndim == 2:
        audio = audio.mean(axis=0 if audio.shape[0] < audio.shape[1] else 1)  # the channel axis is the short one
    elif audio.ndim != 1:
        raise DataError(f"{where}: audio must be 1-D (samples) or 2-D (channels, samples), got shape {audio.shape}")
    audio = np.asarray(audio, dtype=np.float32)
    if not np.isfinite(audio).all():
        raise DataError(f"{where}: audio contains NaN or infinite samples; re-export the file")
    if rate != sampling_rate:
        audio = AF.resample(torch.from_numpy(audio), int(rate), int(sampling_rate)).numpy()
    return audio


def audio_duration(path: str | os.PathLike) -> float | None:
    """Duration in seconds from the file header (no decoding), or None when the header cannot be read."""
    try:
        info = sf.info(os.fspath(path))
    except Exception:
        return None
    return info.frames / info.samplerate if info.samplerate else None


def _decode(path: str, start: float | None, end: float | None) -> tuple[np.ndarray, int]:
    try:
        info = sf.info(path)
    except sf.LibsndfileError:
        return _decode_librosa(path, start, end)
    first = int(round((start or 0.0) * info.samplerate))
    last = int(round(end * info.samplerate)) if end is not None else info.frames
    if first >= info.frames and info.frames > 0:
        raise DataError(f"{path}: start {start}s is past the end of the file ({info.frames / info.samplerate:.2f}s)")
    audio, rate = sf.read(path, start=first, stop=min(last, info.frames), dtype="float32", always_2d=True)
    return audio.T, rate  # (channels, samples)


def _decode_librosa(path: str, start: float | None, end: float | None) -> tuple[np.ndarray, int]:
    import librosa  # slow to import; only needed for formats libsndfile cannot read

    duration = None if end is None else end - (start or 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa warns about its audioread fallback on every call
        audio, rate = librosa.load(path, sr=None, mono=False, offset=start or 0.0, duration=duration)
    return audio, int(rate)
