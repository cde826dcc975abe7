"""What `EmotionRecognizer.predict` returns: a frozen `Prediction` per input, with a `Segment` per classified
stretch of a long recording. Plain data: importing them loads no model code and no torch."""

from __future__ import annotations

from dataclasses import dataclass, field

REPR_DIGITS = 3  # probabilities in reprs; the objects keep full floats


@dataclass(frozen=True, repr=False)
class Segment:
    """One classified stretch of a long recording: start and end in seconds, top label, probabilities."""

    start: float
    end: float
    label: str
    probabilities: dict[str, float]

    def __repr__(self) -> str:
        return (
            f"Segment(start={self.start:.2f}, end={self.end:.2f}, label={self.label!r}, "
            f"probabilities={_rounded(self.probabilities)})"
        )

    def to_dict(self) -> dict:
        return {
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "label": self.label,
            "probabilities": self.probabilities,
        }


@dataclass(frozen=True, repr=False)
class Prediction:
    """One prediction.

    Attributes:
        label: the top label.
        probabilities: a probability per label (summing to 1) from everything given (fused).
        modalities: the modalities used, ("text",), ("audio",) or ("text", "audio").
        per_modality: {"text": probabilities, "audio": probabilities} from the same checkpoint with one
            modality at a time; one entry (equal to `probabilities`) when one modality was given.
        segments: for audio longer than the window, its classified speech segments in time order; else ().
    """

    label: str
    probabilities: dict[str, float]
    modalities: tuple[str, ...]
    per_modality: dict[str, dict[str, float]] = field(default_factory=dict)
    segments: tuple[Segment, ...] = ()

    def __repr__(self) -> str:
        per_modality = {m: _rounded(p) for m, p in self.per_modality.items()}
        segments = f", segments=<{len(self.segments)} segments>" if self.segments else ""
        return (
            f"Prediction(label={self.label!r}, probabilities={_rounded(self.probabilities)}, "
            f"modalities={self.modalities!r}, per_modality={per_modality}{segments})"
        )

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "probabilities": self.probabilities,
            "modalities": list(self.modalities),
            "per_modality": self.per_modality,
            "segments": [s.to_dict() for s in self.segments],
        }


def _rounded(probabilities: dict[str, float]) -> dict[str, float]:
    return {label: round(p, REPR_DIGITS) for label, p in probabilities.items()}
