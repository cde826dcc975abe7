"""Audio loading: any file soundfile or librosa can read, or an array, to mono float32 at the model's rate."""

from __future__ import annotations

import functools
import math
import os
import warnings

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from scipy.signal import resample_poly

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
    if os.path.getsize(path) == 0:
        raise DataError(f"audio file {path} is empty (0 bytes); re-export or re-download it")
    try:
        audio, rate = _decode(path, start, end)
    except DataError:
        raise
    except Exception as e:  # decoders raise many types for corrupt input; all mean "cannot read this file"
        # audioread's NoBackendError (random bytes, text, an unknown container) carries no message
        reason = str(e).strip() or f"no decoder recognises its content ({type(e).__name__})"
        raise DataError(f"cannot decode audio file {path}: {reason}; is it a valid audio file?") from None
    return prepare_waveform(audio, rate, sampling_rate, where=path)


def prepare_waveform(audio, rate: int, sampling_rate: int = 16000, where: str = "audio") -> np.ndarray:
    """Turn an array or tensor (samples, or channels × samples / samples × channels) into mono float32.

    Integer arrays are scaled to [-1, 1]; the channel axis of a 2-D array is the shorter one (a square array
    is read as samples × channels); the rate is converted with torchaudio's band-limited resampler, or
    scipy's polyphase one for odd rates (see `_resample`).

    Raises:
        DataError: empty input, NaN/inf samples, more than two dimensions, or a non-positive rate.
    """
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    audio = np.asarray(audio)
    if not rate or rate <= 0:
        raise DataError(f"{where}: sampling rate must be a positive number of Hz, got {rate!r}")
    if audio.size == 0:
        raise DataError(f"{where}: audio is empty (0 samples); give a recording, or drop the row")
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
        audio = _resample(audio, int(rate), int(sampling_rate))
    return audio


def _resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Resample; output length ceil(len * target / rate).

    torchaudio's kernel holds (target / g) × (rate / g) taps for g = gcd(rate, target): tiny for 44.1/48/8 kHz,
    but an odd rate such as 44101 Hz → 16 kHz would need 12 GB and a minute, so such ratios go through scipy's
    polyphase filter, whose memory grows with the larger of the two only.
    """
    g = math.gcd(rate, target)
    if (rate // g) * (target // g) <= 1_000_000:
        return AF.resample(torch.from_numpy(audio), rate, target).numpy()
    return resample_poly(audio, target // g, rate // g).astype(np.float32)


def audio_duration(path: str | os.PathLike) -> float | None:
    """Duration in seconds from the file header (no decoding), or None when the header cannot be read.

    Answers are remembered per (absolute path, modification time, size): training asks once to check every
    file and again to bucket by length, and only the first ask should open the files.
    """
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return _header_duration(os.path.abspath(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=1 << 15)  # a corpus of up to 32k clips; each entry is a few hundred bytes
def _header_duration(path: str, mtime_ns: int, size: int) -> float | None:
    try:
        info = sf.info(path)
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
    return audio.mean(axis=1), rate  # (frames, channels) → mono here, where the layout is known


def _decode_librosa(path: str, start: float | None, end: float | None) -> tuple[np.ndarray, int]:
    import librosa  # slow to import; only needed for formats libsndfile cannot read

    duration = None if end is None else end - (start or 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa warns about its audioread fallback on every call
        audio, rate = librosa.load(path, sr=None, mono=True, offset=start or 0.0, duration=duration)
    return audio, int(rate)
