"""Utterance-level acoustic functionals: pitch, energy, voice quality, spectrum, MFCCs and timing statistics.

    x = functionals(wave, 16000)                       # (len(FEATURE_NAMES),) float32, always finite

These are the classical speech-emotion features (the eGeMAPS family, computed here with numpy/librosa): the
baseline (`mmemo baseline`) feeds them to a logistic regression, and the neural model can take them as one
extra "acoustic statistics" token. Audio at any rate is resampled to 16 kHz; frames are 32 ms (512 samples)
every 10 ms. Cost: about 17 ms of one CPU core per 3 s of audio (EmoDB, numpy's FFT, no librosa call per
clip; the mel filter bank is built once). A speaker's statistics of them, enrolled from a few clips, are a
`SpeakerProfile` (`mmemo.data.speakers`).

Frames: a frame is *active* (speech, not pause) when its energy is within `ACTIVE_RANGE_DB` of the loudest
frame and above `SILENCE_DB` absolute; it is *voiced* when it is active and YIN finds a period with an
aperiodicity (cumulative-mean-normalised difference at the chosen lag) below `VOICING_THRESHOLD`. Statistics
of an empty frame set are 0 (a silent clip has voicing 0, pitch stats 0), so the vector is never NaN/inf.

Units: pitch in semitones above 27.5 Hz (A0; 220 Hz = 36 st), energy in dB re full scale (RMS of a frame),
spectral centroid/bandwidth/roll-off in kHz, slopes per second, rates per second of the clip, durations in
seconds. MFCCs (1-13, c0 left out: it is energy, covered in dB) come from a 40-band log-mel spectrum.

Bump `FEATURES_VERSION` whenever `functionals` returns different numbers: caches key on it.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.fft
from scipy.signal import resample_poly

from mmemo.errors import DataError

FEATURES_VERSION = 1
SAMPLING_RATE = 16000
N_FFT = 512  # 32 ms analysis frames
HOP = 160  # 10 ms
N_MELS = 40
N_MFCC = 13
YIN_RATE = 8000  # pitch is tracked on a 2× decimated copy: f0 ≤ 600 Hz needs no more, and it costs a quarter
YIN_FRAME = 512  # YIN sees 64 ms: a 32 ms integration window plus lags up to 32 ms (f0 down to 31 Hz)
YIN_WINDOW = 256
F0_MIN, F0_MAX = 60.0, 600.0
VOICING_THRESHOLD = 0.3  # YIN aperiodicity below this is voiced (speech: ~0.05-0.2 voiced, > 0.4 noise)
YIN_TROUGH = 0.1  # YIN takes the first dip below this (avoids octave-down errors), else the global minimum
ACTIVE_RANGE_DB = 35.0
SILENCE_DB = -70.0
SEMITONE_REF_HZ = 27.5
MIN_PAUSE_S = 0.1  # a run of inactive frames this long (inside the speech) counts as a pause
EPS = 1e-10
FLOOR_DB = 100.0  # spectra are floored this far below the clip's peak: a level-free floor keeps MFCCs gain-free

_PERCENTILES = (10, 50, 90)


def _names() -> tuple[str, ...]:
    names = []
    for i in range(1, N_MFCC + 1):
        names += [f"mfcc{i}_mean", f"mfcc{i}_std", f"mfcc{i}_delta_std"]
    names += [
        "pitch_mean",
        "pitch_std",
        "pitch_min",
        "pitch_p10",
        "pitch_p50",
        "pitch_p90",
        "pitch_max",
        "pitch_range",
        "pitch_slope",
        "pitch_delta_abs_mean",
        "pitch_rising_ratio",
        "voicing_ratio",
        "jitter",
        "periodicity_mean",
        "periodicity_std",
        "energy_mean",
        "energy_std",
        "energy_p10",
        "energy_p50",
        "energy_p90",
        "energy_max",
        "energy_range",
        "energy_slope",
        "energy_delta_abs_mean",
        "energy_voiced_mean",
        "shimmer",
    ]
    for name in ("centroid", "bandwidth", "rolloff", "flatness", "flux", "zcr", "alpha_ratio", "hammarberg"):
        names += [f"{name}_mean", f"{name}_std"]
    names += [
        "duration",
        "pause_ratio",
        "pauses_per_second",
        "mean_pause_duration",
        "voiced_segments_per_second",
        "mean_voiced_segment_duration",
    ]
    return tuple(names)


FEATURE_NAMES: tuple[str, ...] = _names()


def functionals(wave: np.ndarray, sampling_rate: int) -> np.ndarray:
    """The utterance functionals of one clip.

    Args:
        wave: mono audio samples (any float or int dtype; ints are not rescaled, so pass floats in [-1, 1]
            for energies in dBFS).
        sampling_rate: the rate of `wave` in Hz; other rates than 16 kHz are resampled.

    Returns:
        A float32 vector of `len(FEATURE_NAMES)` finite values, in `FEATURE_NAMES` order.

    Raises:
        DataError: `wave` is not 1-D, holds NaN/inf, or `sampling_rate` is not positive.
    """
    y = np.asarray(wave, dtype=np.float64)
    if y.ndim != 1:
        raise DataError(f"functionals: expected mono 1-D audio, got shape {y.shape}; downmix first")
    if not sampling_rate or sampling_rate <= 0:
        raise DataError(f"functionals: sampling rate must be a positive number of Hz, got {sampling_rate!r}")
    if not np.isfinite(y).all():
        raise DataError("functionals: audio contains NaN or infinite samples")
    duration = y.size / sampling_rate
    if sampling_rate != SAMPLING_RATE:
        g = math.gcd(int(sampling_rate), SAMPLING_RATE)
        y = resample_poly(y, SAMPLING_RATE // g, int(sampling_rate) // g)
    y = y - y.mean() if y.size else y  # DC offset carries no information and would read as energy
    y = np.pad(y, (0, max(0, N_FFT - y.size)))  # a clip shorter than one frame still gets frames

    feats: dict[str, float] = {"duration": duration}
    spec = np.abs(_stft(y))  # (F, T)
    n_frames = spec.shape[1]
    frames = _frames(y, N_FFT)  # (T, N_FFT), aligned with the STFT columns
    energy_db = 10.0 * np.log10(np.mean(frames**2, axis=1) + EPS)  # (T,)
    active = (energy_db > energy_db.max() - ACTIVE_RANGE_DB) & (energy_db > SILENCE_DB)

    f0, aperiodicity = _yin(resample_poly(y, YIN_RATE, SAMPLING_RATE), n_frames)  # (T,), (T,)
    voiced = active & (aperiodicity < VOICING_THRESHOLD)
    pitch = 12.0 * np.log2(f0[voiced] / SEMITONE_REF_HZ)
    frame_s = HOP / SAMPLING_RATE
    t = np.flatnonzero(voiced) * frame_s
    feats |= _stats("pitch", pitch, ("mean", "std", "min", "p10", "p50", "p90", "max", "range"))
    feats["pitch_slope"] = _slope(t, pitch)
    steps = _consecutive(voiced)  # index pairs (i, i+1) both voiced
    pitch_of = np.zeros(n_frames)
    pitch_of[voiced] = pitch
    dpitch = pitch_of[steps + 1] - pitch_of[steps]
    feats["pitch_delta_abs_mean"] = _mean(np.abs(dpitch)) / frame_s
    feats["pitch_rising_ratio"] = _mean((dpitch > 0).astype(float))
    feats["voicing_ratio"] = voiced.sum() / active.sum() if active.any() else 0.0
    # jitter/shimmer in the spirit of Praat's "local" measures, but frame-to-frame rather than period-to-period
    feats["jitter"] = _mean(np.abs(f0[steps + 1] - f0[steps])) / max(_mean(f0[voiced]), EPS) if steps.size else 0.0
    amplitude = np.sqrt(np.mean(frames**2, axis=1))
    feats["shimmer"] = (
        _mean(np.abs(amplitude[steps + 1] - amplitude[steps])) / max(_mean(amplitude[voiced]), EPS)
        if steps.size
        else 0.0
    )
    periodicity = 1.0 - aperiodicity[voiced]
    feats["periodicity_mean"], feats["periodicity_std"] = _mean(periodicity), _std(periodicity)

    e = energy_db[active]
    feats |= _stats("energy", e, ("mean", "std", "p10", "p50", "p90", "max", "range"))
    feats["energy_slope"] = _slope(np.flatnonzero(active) * frame_s, e)
    both_active = _consecutive(active)
    feats["energy_delta_abs_mean"] = _mean(np.abs(energy_db[both_active + 1] - energy_db[both_active])) / frame_s
    feats["energy_voiced_mean"] = _mean(energy_db[voiced])

    feats |= _spectral(spec, frames, active, voiced)
    feats |= _mfcc(spec, active)
    feats |= _timing(active, voiced, frame_s, duration)
    out = np.array([feats[name] for name in FEATURE_NAMES], dtype=np.float32)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)  # belt and braces: the contract is "finite"


def _stft(y: np.ndarray) -> np.ndarray:
    """Complex STFT (F, T) with a Hann window; frames centred like `_frames`."""
    frames = _frames(y, N_FFT) * _hann(N_FFT)
    return scipy.fft.rfft(frames, axis=1).T


def _frames(y: np.ndarray, length: int, hop: int = HOP) -> np.ndarray:
    """(T, length) frames centred every `hop` samples (zero-padded at both ends); T = 1 + len(y) // hop."""
    padded = np.pad(y, (length // 2, length // 2))
    n = 1 + y.size // hop
    return np.lib.stride_tricks.sliding_window_view(padded, length)[: n * hop : hop]


@functools.cache
def _hann(n: int) -> np.ndarray:
    return np.hanning(n + 1)[:-1]  # periodic Hann, as librosa's STFT uses


@functools.cache
def _mel_basis() -> np.ndarray:
    import librosa  # slow to import; only the filter bank comes from it

    return librosa.filters.mel(sr=SAMPLING_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=20.0, fmax=SAMPLING_RATE / 2)


def _yin(y: np.ndarray, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """YIN f0 (Hz) and aperiodicity per frame (de Cheveigné & Kawahara 2002).

    librosa.yin returns f0 only; voicing needs the aperiodicity at the chosen lag, so the cumulative-mean-
    normalised difference is computed here (by FFT, as librosa does) and both are read off it.
    """
    hop = HOP * YIN_RATE // SAMPLING_RATE
    frames = _frames(y, YIN_FRAME, hop)[:n_frames]  # (T, YIN_FRAME)
    frames = np.pad(frames, ((0, n_frames - frames.shape[0]), (0, 0)))  # rounding in the decimation
    max_lag = YIN_FRAME - YIN_WINDOW
    lag_min, lag_max = int(YIN_RATE / F0_MAX), min(int(YIN_RATE / F0_MIN), max_lag - 1)
    size = scipy.fft.next_fast_len(YIN_FRAME + YIN_WINDOW, real=True)
    # r[τ] = Σ_{j<W} x_j x_{j+τ}: cross-correlation of the window's head with the frame
    spectrum = scipy.fft.rfft(frames, size, axis=1)
    head = scipy.fft.rfft(frames[:, :YIN_WINDOW], size, axis=1)
    r = scipy.fft.irfft(spectrum * np.conj(head), size, axis=1)[:, : max_lag + 1]  # (T, L)
    power = np.cumsum(np.pad(frames**2, ((0, 0), (1, 0))), axis=1)  # (T, YIN_FRAME + 1)
    lags = np.arange(max_lag + 1)
    energy_at = power[:, lags + YIN_WINDOW] - power[:, lags]  # Σ_{j<W} x_{j+τ}²
    diff = np.maximum(energy_at[:, :1] + energy_at - 2.0 * r, 0.0)  # (T, L)
    cum = np.cumsum(diff[:, 1:], axis=1)
    cmnd = np.ones_like(diff)
    cmnd[:, 1:] = diff[:, 1:] * lags[1:] / np.maximum(cum, EPS)
    cmnd[cum[:, -1] <= EPS] = 1.0  # a silent frame is aperiodic, not perfectly periodic

    band = cmnd[:, lag_min : lag_max + 1]  # (T, B)
    is_dip = np.zeros_like(band, dtype=bool)
    is_dip[:, 1:-1] = (band[:, 1:-1] < band[:, :-2]) & (band[:, 1:-1] <= band[:, 2:]) & (band[:, 1:-1] < YIN_TROUGH)
    first_dip = np.argmax(is_dip, axis=1)
    best = np.where(is_dip.any(axis=1), first_dip, np.argmin(band, axis=1))
    rows = np.arange(band.shape[0])
    # parabolic interpolation around the chosen lag for sub-sample precision
    k = np.clip(best, 1, band.shape[1] - 2)
    left, mid, right = band[rows, k - 1], band[rows, k], band[rows, k + 1]
    denom = left - 2 * mid + right
    shift = np.where(np.abs(denom) > EPS, 0.5 * (left - right) / np.where(denom == 0, 1, denom), 0.0)
    shift = np.where(best == k, np.clip(shift, -1, 1), 0.0)
    lag = lag_min + best + shift
    return YIN_RATE / lag, band[rows, best]


def _spectral(spec: np.ndarray, frames: np.ndarray, active: np.ndarray, voiced: np.ndarray) -> dict[str, float]:
    freqs = np.linspace(0, SAMPLING_RATE / 2, spec.shape[0])  # (F,)
    power = spec**2 + _floor(spec)
    total = spec.sum(axis=0) + EPS  # (T,)
    centroid = (freqs[:, None] * spec).sum(axis=0) / total
    bandwidth = np.sqrt(((freqs[:, None] - centroid) ** 2 * spec).sum(axis=0) / total)
    cumulative = np.cumsum(power, axis=0)
    rolloff = freqs[np.argmax(cumulative >= 0.85 * cumulative[-1], axis=0)]
    flatness = np.exp(np.mean(np.log(power), axis=0)) / np.mean(power, axis=0)
    norm = spec / total
    flux = np.r_[0.0, np.sqrt((np.diff(norm, axis=1) ** 2).sum(axis=0))]  # of the magnitude shape, level-free
    zcr = np.mean(np.abs(np.diff(np.signbit(frames), axis=1)), axis=1)
    low, mid, high = freqs < 1000, (freqs >= 1000) & (freqs < 5000), freqs < 2000
    # eGeMAPS voice-quality ratios: alpha (1-5 kHz vs 0-1 kHz energy), Hammarberg (peak 0-2 kHz vs 2-5 kHz)
    alpha = 10 * np.log10(power[mid].sum(axis=0) / power[low].sum(axis=0))
    hammarberg = 10 * np.log10(power[high].max(axis=0) / power[~high & (freqs < 5000)].max(axis=0))
    out = {}
    for name, values, mask in (
        ("centroid", centroid / 1000, active),
        ("bandwidth", bandwidth / 1000, active),
        ("rolloff", rolloff / 1000, active),
        ("flatness", flatness, active),
        ("flux", flux, active),
        ("zcr", zcr, active),
        ("alpha_ratio", alpha, voiced),
        ("hammarberg", hammarberg, voiced),
    ):
        out[f"{name}_mean"], out[f"{name}_std"] = _mean(values[mask]), _std(values[mask])
    return out


def _mfcc(spec: np.ndarray, active: np.ndarray) -> dict[str, float]:
    log_mel = 10 * np.log10(_mel_basis() @ spec**2 + _floor(spec))  # (N_MELS, T)
    mfcc = scipy.fft.dct(log_mel, type=2, norm="ortho", axis=0)[1 : N_MFCC + 1]  # (N_MFCC, T), c0 left out
    delta = np.gradient(mfcc, axis=1) if mfcc.shape[1] > 1 else np.zeros_like(mfcc)
    out = {}
    for i in range(N_MFCC):
        values, deltas = mfcc[i, active], delta[i, active]
        out[f"mfcc{i + 1}_mean"], out[f"mfcc{i + 1}_std"] = _mean(values), _std(values)
        out[f"mfcc{i + 1}_delta_std"] = _std(deltas)
    return out


def _timing(active: np.ndarray, voiced: np.ndarray, frame_s: float, duration: float) -> dict[str, float]:
    out = {"pause_ratio": 1.0 - active.mean() if active.any() else 1.0}
    pauses = np.zeros(0)
    if active.any():
        first, last = np.flatnonzero(active)[[0, -1]]
        pauses = _runs(~active[first : last + 1]) * frame_s
        pauses = pauses[pauses >= MIN_PAUSE_S]
    segments = _runs(voiced) * frame_s
    seconds = max(duration, frame_s)
    out["pauses_per_second"] = pauses.size / seconds
    out["mean_pause_duration"] = _mean(pauses)
    out["voiced_segments_per_second"] = segments.size / seconds
    out["mean_voiced_segment_duration"] = _mean(segments)
    return out


def _floor(spec: np.ndarray) -> float:
    """A power floor FLOOR_DB below the clip's peak (and a tiny absolute one for digital silence)."""
    return max(float(spec.max()) ** 2, 1e-20) * 10 ** (-FLOOR_DB / 10)


def _runs(mask: np.ndarray) -> np.ndarray:
    """Lengths (in frames) of the runs of True in a boolean vector."""
    edges = np.diff(np.r_[0, mask.astype(np.int8), 0])
    return (np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).astype(float)


def _consecutive(mask: np.ndarray) -> np.ndarray:
    """Indices i with mask[i] and mask[i + 1]."""
    return np.flatnonzero(mask[:-1] & mask[1:])


def _stats(prefix: str, values: np.ndarray, which: tuple[str, ...]) -> dict[str, float]:
    if values.size == 0:
        return {f"{prefix}_{w}": 0.0 for w in which}
    p5, p10, p50, p90, p95 = np.percentile(values, (5, *_PERCENTILES, 95))
    table = {
        "mean": values.mean(),
        "std": values.std(),
        "min": p5,  # 5th/95th percentiles: robust to the odd octave error or clipped frame
        "max": p95,
        "p10": p10,
        "p50": p50,
        "p90": p90,
        "range": p95 - p5,
    }
    return {f"{prefix}_{w}": float(table[w]) for w in which}


def _slope(t: np.ndarray, values: np.ndarray) -> float:
    """Least-squares slope of values over t (per second); 0 for fewer than two points or no spread in t."""
    if values.size < 2 or np.ptp(t) == 0:
        return 0.0
    t = t - t.mean()
    return float((t * (values - values.mean())).sum() / (t**2).sum())


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else 0.0


def _std(values: np.ndarray) -> float:
    return float(values.std()) if values.size else 0.0
