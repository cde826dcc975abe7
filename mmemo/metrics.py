"""The field's metrics: WA (accuracy), UA (balanced accuracy), macro-/weighted-F1 and the confusion matrix."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score

CONDITIONS = ("both", "text", "audio")
CONDITION_NAMES = {"both": "text+audio", "text": "text-only", "audio": "audio-only"}  # for tables and reports


def classification_metrics(y_true, y_pred, num_labels: int) -> dict:
    """Scores for one evaluation condition.

    Args:
        y_true: gold label ids.
        y_pred: predicted label ids.
        num_labels: size of the label set (the confusion matrix is num_labels × num_labels).

    Returns:
        {"wa", "ua", "macro_f1", "weighted_f1", "n", "confusion"}: UA averages recall over the classes that
        occur in y_true; confusion rows are gold labels, columns predictions.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.size == 0:
        return {
            "wa": float("nan"),
            "ua": float("nan"),
            "macro_f1": float("nan"),
            "weighted_f1": float("nan"),
            "n": 0,
            "confusion": np.zeros((num_labels, num_labels), dtype=int).tolist(),
        }
    present = np.unique(y_true)
    return {
        "wa": float(accuracy_score(y_true, y_pred)),
        "ua": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=present, average="weighted", zero_division=0)),
        "n": int(y_true.size),
        "confusion": confusion_matrix(y_true, y_pred, labels=list(range(num_labels))).tolist(),
    }


def mean_and_std(scores: list[dict], keys) -> tuple[dict[str, float], dict[str, float]]:
    """Per-key mean and (population) standard deviation over several runs' score dicts."""
    values = {k: np.array([s[k] for s in scores], dtype=float) for k in keys}
    return {k: float(v.mean()) for k, v in values.items()}, {k: float(v.std()) for k, v in values.items()}


def format_table(results: dict[str, dict], title: str = "") -> str:
    """A Markdown table of WA/UA/F1 per condition (rows in CONDITIONS order, others after)."""
    lines = [title] if title else []
    lines += ["| condition | n | WA | UA | macro-F1 | weighted-F1 |", "|---|---:|---:|---:|---:|---:|"]
    for cond in sorted(results, key=lambda c: CONDITIONS.index(c) if c in CONDITIONS else len(CONDITIONS)):
        m = results[cond]
        lines.append(
            f"| {CONDITION_NAMES.get(cond, cond)} | {m['n']} | {m['wa']:.3f} | {m['ua']:.3f} | "
            f"{m['macro_f1']:.3f} | {m['weighted_f1']:.3f} |"
        )
    return "\n".join(lines)
