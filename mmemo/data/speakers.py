"""Per-speaker statistics: a `SpeakerProfile` (mean and std of the acoustic functionals, and of a pooled-head
model's tower states) enrolled from a few unlabelled clips of one speaker, and the floored statistics that
speaker normalisation standardises with.

    profile = SpeakerProfile.enrol(np.stack([functionals(clip, 16000) for clip in clips]))
    z = profile.normalise(functionals(wave, 16000))
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from mmemo.data.acoustic import FEATURE_NAMES, FEATURES_VERSION
from mmemo.errors import DataError

STD_FLOOR_REL = 0.05  # a speaker's std is at least 5% of |mean| ...
STD_FLOOR_ABS = 1e-3  # ... and at least this, in the feature's own unit
# An audio tower's pooled states carry their emotion cues in deviations smaller than 5 % of the offset all clips
# share, so their speaker stds get the absolute floor only (EmoDB probe: 0.961 UA, 0.958 with the relative floor).
POOLED_STD_FLOOR_REL = 0.0
Z_CLIP = 10.0  # normalised values are clipped here: a profile from one or two clips cannot explode a feature
POOLED_KEYS = ("pooled_mean", "pooled_std")


@dataclasses.dataclass(frozen=True, eq=False)
class SpeakerProfile:
    """Per-speaker mean and std of the functionals, enrolled from a few unlabelled clips of that speaker.

    `normalise` z-scores clips against the profile: (x - mean) / std, with std floored at
    `STD_FLOOR_REL · |mean| + STD_FLOOR_ABS` (a constant feature, or a profile from one clip, has std 0) and the
    result clipped to ±`Z_CLIP`. Five or more clips give usable stds; one clip only centres.
    """

    names: tuple[str, ...]
    version: int
    n_clips: int
    mean: np.ndarray  # (F,)
    std: np.ndarray  # (F,) floored
    # For a model with the pooled audio head: the speaker's mean and (floored) std of its tower's pooled states
    # (layers, D), and which tower and layers they belong to (`pooled_key`); None / "" otherwise.
    pooled_mean: np.ndarray | None = None
    pooled_std: np.ndarray | None = None
    pooled_key: str = ""

    @classmethod
    def enrol(cls, features: np.ndarray, pooled: np.ndarray | None = None, pooled_key: str = "") -> SpeakerProfile:
        """A profile from an (N, F) array of `functionals` (N ≥ 1 clips of one speaker, labels unused), and for a
        pooled-head model the same clips' pooled tower states (N, layers, D) with the key naming that tower.

        Raises:
            DataError: `features` is not (N, len(FEATURE_NAMES)) with N ≥ 1, or holds NaN/inf.
        """
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[0] < 1 or features.shape[1] != len(FEATURE_NAMES):
            raise DataError(
                f"SpeakerProfile.enrol: expected an (N, {len(FEATURE_NAMES)}) array of functionals with N ≥ 1, "
                f"got shape {features.shape}"
            )
        if not np.isfinite(features).all():
            raise DataError("SpeakerProfile.enrol: features contain NaN or inf")
        mean, std = floored_statistics(features)
        pooled_mean = pooled_std = None
        if pooled is not None:
            pooled = np.asarray(pooled, dtype=np.float64)
            flat_mean, flat_std = floored_statistics(pooled.reshape(len(pooled), -1), POOLED_STD_FLOOR_REL)
            pooled_mean, pooled_std = flat_mean.reshape(pooled.shape[1:]), flat_std.reshape(pooled.shape[1:])
        return cls(
            FEATURE_NAMES, FEATURES_VERSION, int(features.shape[0]), mean, std, pooled_mean, pooled_std, pooled_key
        )

    def normalise(self, features: np.ndarray) -> np.ndarray:
        """Z-score one (F,) vector or an (N, F) array against this speaker; float32, clipped to ±Z_CLIP."""
        features = np.asarray(features, dtype=np.float64)
        if features.shape[-1] != self.mean.size:
            raise DataError(
                f"SpeakerProfile.normalise: features have {features.shape[-1]} values, the profile {self.mean.size}"
            )
        return np.clip((features - self.mean) / self.std, -Z_CLIP, Z_CLIP).astype(np.float32)

    def references(self, pooled_key: str | None = None) -> dict[str, np.ndarray]:
        """The profile as the references a model standardises against, float32: {"reference": (2, F) functionals
        mean and std}, plus "pooled_reference": (2, layers, D) for a pooled-head model whose tower and layers
        `pooled_key` names (`EmotionRecognizer.pooled_key`; None for any other model).

        Raises:
            DataError: the profile has no pooled statistics, or those of another tower (re-enrol with this model).
        """
        reference = {"reference": np.stack([self.mean, self.std]).astype(np.float32)}
        if pooled_key is None:
            return reference
        if self.pooled_key != pooled_key:
            made = "has no audio-tower statistics" if not self.pooled_key else "was enrolled with another"
            raise DataError(
                f"this speaker profile {made} audio tower than this model's; enrol the speaker again with this "
                "model (`mmemo enrol MODEL CLIPS -o profile.json` or enrol_speaker)"
            )
        pooled = np.stack([self.pooled_mean, self.pooled_std]).astype(np.float32)
        return {**reference, "pooled_reference": pooled}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the profile as JSON (names, version, n_clips, mean, std); returns the path."""
        from mmemo.io import atomic_write

        path = Path(path)
        data = {
            "names": list(self.names),
            "version": self.version,
            "n_clips": self.n_clips,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
        }
        if self.pooled_mean is not None:
            data.update(
                pooled_key=self.pooled_key, pooled_mean=self.pooled_mean.tolist(), pooled_std=self.pooled_std.tolist()
            )
        with atomic_write(path, "w", encoding="utf-8") as f:
            f.write(json.dumps(data) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> SpeakerProfile:
        """Read a profile written by `save`.

        Raises:
            DataError: the file is missing or not a profile, or it was made by another feature version or
                feature list (re-enrol the speaker with the current `functionals`).
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            names, version = tuple(data["names"]), int(data["version"])
            mean, std = np.asarray(data["mean"], dtype=np.float64), np.asarray(data["std"], dtype=np.float64)
            n_clips = int(data["n_clips"])
            pooled = [np.asarray(data[key], dtype=np.float64) if key in data else None for key in POOLED_KEYS]
            pooled_key = str(data.get("pooled_key", ""))
        except FileNotFoundError:
            raise DataError(f"speaker profile {path} does not exist") from None
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"speaker profile {path} is not a SpeakerProfile JSON file ({e})") from None
        if version != FEATURES_VERSION or names != FEATURE_NAMES:
            raise DataError(
                f"speaker profile {path} was made with feature version {version} ({len(names)} features); this "
                f"mmemo computes version {FEATURES_VERSION} ({len(FEATURE_NAMES)} features): re-enrol the speaker"
            )
        if mean.shape != (len(names),) or std.shape != (len(names),):
            raise DataError(f"speaker profile {path}: mean/std do not have one value per feature name")
        if (pooled[0] is None) != (pooled[1] is None) or (pooled[0] is not None and pooled[0].shape != pooled[1].shape):
            raise DataError(f"speaker profile {path}: pooled_mean and pooled_std must come together, of one shape")
        return cls(names, version, n_clips, mean, std, *pooled, pooled_key)


def floored_statistics(features: np.ndarray, relative_floor: float = STD_FLOOR_REL) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over the rows of `features` (N, F), the std floored at `relative_floor · |mean| +
    STD_FLOOR_ABS` (a constant feature, or one clip, has std 0)."""
    mean, std = features.mean(axis=0), features.std(axis=0)
    return mean, np.maximum(std, relative_floor * np.abs(mean) + STD_FLOOR_ABS)


def speaker_statistics(
    speakers: list[str], features: np.ndarray, relative_floor: float = STD_FLOOR_REL
) -> dict[str, np.ndarray]:
    """{speaker: (2, F) floored mean and std} over the rows of `features` (N, F) that carry each speaker."""
    return {
        speaker: np.stack(floored_statistics(np.asarray(features[rows], np.float64), relative_floor))
        for speaker, rows in _rows_by_speaker(speakers).items()
    }


def enrol_speakers(speakers: list[str], features: np.ndarray) -> dict[str, SpeakerProfile]:
    """One `SpeakerProfile` per distinct value of `speakers`, enrolled from the rows of `features` (N, F) that
    carry it (labels never used)."""
    return {speaker: SpeakerProfile.enrol(features[rows]) for speaker, rows in _rows_by_speaker(speakers).items()}


def _rows_by_speaker(speakers: list[str]) -> dict[str, list[int]]:
    rows_of: dict[str, list[int]] = {}
    for i, speaker in enumerate(speakers):
        rows_of.setdefault(speaker, []).append(i)
    return rows_of
