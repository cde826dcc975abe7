"""Seeded training-time audio augmentation: speed, noise, gain and time masks on the waveform; SpecAugment masks
on log-mel features.

`build_augmenter(cfg.data.augment)` checks the spec and returns an `Augmenter` (or None when the spec is empty).
`EmotionDataset` applies it to training clips only, after the crop, with a generator seeded by (seed, epoch,
index), so a resumed run sees the same augmentations and evaluation never sees any. Spec (every key optional;
an operation is on when its range key is given):

    speed: [0.9, 1.1]          speed perturbation (tempo and pitch together), probability p_speed (0.5)
    noise_snr: [10, 30]        additive noise at a uniform SNR in dB, probability p_noise (0.5); white, pink or
    noise_dir: PATH            brown noise drawn per clip, or a random segment of a random audio file under PATH
    gain_db: [-6, 6]           random gain, probability p_gain (0.5)
    time_mask: {count: 2, max_seconds: 0.1}                                  zeroed waveform spans, every clip
    spec_mask: {freq_count: 2, freq_width: 8, time_count: 2, time_width: 10} zeroed log-mel bands and frames

Waveform operations run in that order (speed, noise, gain, time mask); the result is clipped to [-1, 1] as a
recorder would.
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from mmemo.data.audio import audio_duration, load_audio
from mmemo.errors import ConfigError, DataError

WHERE = "data.augment"
DEFAULT_P = 0.5
NOISE_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif")
# Speed factors are rounded to fractions with a denominator up to this, keeping resample_poly's filter short.
SPEED_DENOMINATOR = 20
# Noise colours as spectral slopes: power ∝ 1 / f**exponent.
NOISE_COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}

_SUBKEY_DEFAULTS = {
    "time_mask": {"count": 2, "max_seconds": 0.1},
    "spec_mask": {"freq_count": 2, "freq_width": 8, "time_count": 2, "time_width": 10},
}
_KEYS = ("speed", "p_speed", "noise_snr", "p_noise", "noise_dir", "gain_db", "p_gain", "time_mask", "spec_mask")


@dataclass(frozen=True)
class Augmenter:
    """Random waveform and spectrogram augmentation; every draw comes from the generator the caller passes.

    Ranges are (low, high) tuples or None (that operation off); `noise_files` holds (path, seconds) pairs, empty
    for synthetic noise. Build one from a config dict with `build_augmenter`.
    """

    speed: tuple[float, float] | None = None
    p_speed: float = DEFAULT_P
    noise_snr: tuple[float, float] | None = None
    p_noise: float = DEFAULT_P
    noise_files: tuple[tuple[str, float], ...] = ()
    gain_db: tuple[float, float] | None = None
    p_gain: float = DEFAULT_P
    time_mask_count: int = 0
    time_mask_seconds: float = 0.0
    freq_mask_count: int = 0
    freq_mask_width: int = 0
    frame_mask_count: int = 0
    frame_mask_width: int = 0

    @property
    def masks_spectrogram(self) -> bool:
        """Whether `mask_spectrogram` changes anything (a log-mel audio tower is needed for it to apply)."""
        return self.freq_mask_count * self.freq_mask_width + self.frame_mask_count * self.frame_mask_width > 0

    def __call__(self, wave: np.ndarray, sampling_rate: int, rng: np.random.Generator) -> np.ndarray:
        """Augment one clip.

        Args:
            wave: 1-D float audio in [-1, 1]; never modified (it may be a read-only memory map of the cache).
            sampling_rate: its rate in Hz.
            rng: the clip's generator; the same generator state gives the same output.

        Returns:
            A new 1-D float32 array in [-1, 1]; speed perturbation changes its length by the inverse factor.

        Raises:
            DataError: a noise file can no longer be decoded.
        """
        wave = np.array(wave, dtype=np.float32)
        if self.speed is not None and rng.random() < self.p_speed:
            wave = change_speed(wave, rng.uniform(*self.speed))
        if self.noise_snr is not None and rng.random() < self.p_noise:
            noise = self._noise(len(wave), sampling_rate, rng)
            wave = add_noise(wave, noise, rng.uniform(*self.noise_snr))
        if self.gain_db is not None and rng.random() < self.p_gain:
            wave *= np.float32(10 ** (rng.uniform(*self.gain_db) / 20))
        max_span = int(self.time_mask_seconds * sampling_rate)
        for _ in range(self.time_mask_count if max_span > 0 else 0):
            width = min(int(rng.integers(max_span + 1)), len(wave))
            start = int(rng.integers(len(wave) - width + 1))
            wave[start : start + width] = 0.0
        return np.clip(wave, -1.0, 1.0, out=wave)

    def mask_spectrogram(self, features: np.ndarray, valid_frames: int, rng: np.random.Generator) -> np.ndarray:
        """SpecAugment: zero `freq_mask_count` bands of up to `freq_mask_width` mel bins and `frame_mask_count`
        spans of up to `frame_mask_width` frames, within the first `valid_frames` frames (padding is untouched).

        Args:
            features: (n_mels, T) log-mel features of one clip.
            valid_frames: frames that hold the clip, not padding.
            rng: the clip's generator.

        Returns:
            A masked copy of `features`.
        """
        features = np.array(features)
        n_mels, valid = features.shape[0], max(0, min(int(valid_frames), features.shape[1]))
        for _ in range(self.freq_mask_count):
            width = min(int(rng.integers(self.freq_mask_width + 1)), n_mels)
            start = int(rng.integers(n_mels - width + 1))
            features[start : start + width, :valid] = 0.0
        for _ in range(self.frame_mask_count):
            width = min(int(rng.integers(self.frame_mask_width + 1)), valid)
            start = int(rng.integers(valid - width + 1))
            features[:, start : start + width] = 0.0
        return features

    def _noise(self, length: int, sampling_rate: int, rng: np.random.Generator) -> np.ndarray:
        if not self.noise_files:
            return coloured_noise(length, NOISE_COLOURS[rng.choice(list(NOISE_COLOURS))], rng)
        path, seconds = self.noise_files[int(rng.integers(len(self.noise_files)))]
        need = length / sampling_rate
        start = rng.uniform(0.0, seconds - need) if seconds > need else 0.0
        noise = load_audio(path, sampling_rate, start, start + need if seconds > need else None)
        return np.resize(noise, length)  # loops a file shorter than the clip


def change_speed(wave: np.ndarray, factor: float) -> np.ndarray:
    """Kaldi-style speed perturbation: play `factor` times faster (tempo and pitch together); length / factor.

    The factor is rounded to a fraction with a denominator of at most `SPEED_DENOMINATOR` for resample_poly.
    """
    ratio = Fraction(1 / factor).limit_denominator(SPEED_DENOMINATOR)
    if ratio == 1:
        return wave
    return resample_poly(wave, ratio.numerator, ratio.denominator).astype(np.float32)


def coloured_noise(length: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise whose power falls as 1 / f**exponent (0 white, 1 pink, 2 brown), unit variance, no DC."""
    spectrum = np.fft.rfft(rng.standard_normal(length))
    freqs = np.fft.rfftfreq(length)
    spectrum[1:] *= freqs[1:] ** (-exponent / 2)
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, length)
    std = noise.std()
    return (noise / std if std > 0 else noise).astype(np.float32)


def add_noise(wave: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`wave` plus `noise` scaled to `snr_db` (clip power over noise power); silence or silent noise: unchanged."""
    signal_power = float(np.mean(np.square(wave, dtype=np.float64)))
    noise_power = float(np.mean(np.square(noise, dtype=np.float64)))
    if signal_power == 0.0 or noise_power == 0.0:
        return wave
    scale = math.sqrt(signal_power / (noise_power * 10 ** (snr_db / 10)))
    return (wave + scale * noise).astype(np.float32)


def build_augmenter(spec: dict | None, *, scan_noise: bool = True) -> Augmenter | None:
    """Check a `data.augment` spec and build its Augmenter.

    Args:
        spec: the config dict (module docstring); None or {} turns augmentation off.
        scan_noise: read `noise_dir`'s audio headers; False checks the spec alone (what loading a config does) and
            builds an Augmenter without noise files.

    Returns:
        The Augmenter, or None when `spec` is empty.

    Raises:
        ConfigError: an unknown key (the closest valid one is named), a malformed range, a probability
            outside [0, 1], a negative count, or a p_* / noise_dir given without its operation.
        DataError: `noise_dir` is missing or holds no audio file whose header soundfile can read.
    """
    if not spec:
        return None
    if not isinstance(spec, dict):
        raise ConfigError(f"{WHERE} must be a mapping such as {{speed: [0.9, 1.1]}}, got {spec!r}")
    for key in spec:
        _check_known(key, _KEYS, WHERE)
    for p_key, key in (
        ("p_speed", "speed"),
        ("p_noise", "noise_snr"),
        ("noise_dir", "noise_snr"),
        ("p_gain", "gain_db"),
    ):
        if p_key in spec and key not in spec:
            raise ConfigError(f"{WHERE}.{p_key} is set but {WHERE}.{key} is not; add {key}: [low, high]")
    time_mask = _sub_spec(spec, "time_mask")
    spec_mask = _sub_spec(spec, "spec_mask")
    return Augmenter(
        speed=_range(spec, "speed", 0.5, 2.0),
        p_speed=_probability(spec, "p_speed"),
        noise_snr=_range(spec, "noise_snr", -20.0, 100.0),
        p_noise=_probability(spec, "p_noise"),
        noise_files=_noise_files(spec["noise_dir"]) if spec.get("noise_dir") and scan_noise else (),
        gain_db=_range(spec, "gain_db", -40.0, 40.0),
        p_gain=_probability(spec, "p_gain"),
        time_mask_count=_count(time_mask, "count", "time_mask"),
        time_mask_seconds=_number(time_mask, "max_seconds", "time_mask"),
        freq_mask_count=_count(spec_mask, "freq_count", "spec_mask"),
        freq_mask_width=_count(spec_mask, "freq_width", "spec_mask"),
        frame_mask_count=_count(spec_mask, "time_count", "spec_mask"),
        frame_mask_width=_count(spec_mask, "time_width", "spec_mask"),
    )


def _check_known(key, valid, where: str) -> None:
    if key not in valid:
        close = difflib.get_close_matches(str(key), valid, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(valid)}"
        raise ConfigError(f"{where}: unknown key {key!r}; {hint}")


def _sub_spec(spec: dict, name: str) -> dict:
    """A time_mask / spec_mask mapping with its defaults filled in; {} when the key is absent or null (off)."""
    value = spec.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        keys = ", ".join(f"{k}: {v}" for k, v in _SUBKEY_DEFAULTS[name].items())
        raise ConfigError(f"{WHERE}.{name} must be a mapping such as {{{keys}}}, got {value!r}")
    for key in value:
        _check_known(key, list(_SUBKEY_DEFAULTS[name]), f"{WHERE}.{name}")
    return {**_SUBKEY_DEFAULTS[name], **value}


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _range(spec: dict, key: str, low: float, high: float) -> tuple[float, float] | None:
    value = spec.get(key)
    if value is None:
        return None
    ok = isinstance(value, list | tuple) and len(value) == 2 and all(_is_number(v) for v in value)
    if not ok or not low <= value[0] <= value[1] <= high:
        raise ConfigError(f"{WHERE}.{key} must be [low, high] with {low} <= low <= high <= {high}, got {value!r}")
    return float(value[0]), float(value[1])


def _probability(spec: dict, key: str) -> float:
    value = spec.get(key, DEFAULT_P)
    if not _is_number(value) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{WHERE}.{key} must be a probability between 0 and 1, got {value!r}")
    return float(value)


def _count(sub: dict, key: str, name: str) -> int:
    value = sub.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{WHERE}.{name}.{key} must be a whole number >= 0, got {value!r}")
    return value


def _number(sub: dict, key: str, name: str) -> float:
    value = sub.get(key, 0.0)
    if not _is_number(value) or value < 0:
        raise ConfigError(f"{WHERE}.{name}.{key} must be a number >= 0, got {value!r}")
    return float(value)


def _noise_files(folder) -> tuple[tuple[str, float], ...]:
    """Audio files under `folder` (recursively) whose header gives a positive duration, with that duration."""
    root = Path(os.path.expanduser(str(folder)))
    if not root.is_dir():
        raise DataError(f"{WHERE}.noise_dir {root} is not a folder; point it at a folder of noise recordings")
    files = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in NOISE_EXTENSIONS and path.is_file():
            seconds = audio_duration(path)
            if seconds:
                files.append((str(path), seconds))
    if not files:
        raise DataError(
            f"{WHERE}.noise_dir {root} holds no readable audio ({', '.join(NOISE_EXTENSIONS)} files soundfile "
            "can open); add noise recordings there, or remove noise_dir to use synthetic noise"
        )
    return tuple(files)
