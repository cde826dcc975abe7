"""The field's metrics: WA (accuracy), UA (balanced accuracy), macro-/weighted-F1 and the confusion matrix."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

CONDITIONS = ("both", "text", "audio")
PER_CLASS = ("precision", "recall", "f1", "support")
CONDITION_NAMES = {"both": "text+audio", "text": "text-only", "audio": "audio-only"}  # for tables and reports


def classification_metrics(y_true, y_pred, num_labels: int) -> dict:
    """Scores for one evaluation condition.

    Args:
        y_true: gold label ids.
        y_pred: predicted label ids.
        num_labels: size of the label set (the confusion matrix is num_labels × num_labels).

    Returns:
        {"wa", "ua", "macro_f1", "weighted_f1", "n", "confusion", "per_class"}: UA averages recall over the
        classes that occur in y_true; confusion rows are gold labels, columns predictions; per_class holds
        {"precision", "recall", "f1", "support"}, each a list by label id (0.0 where a class is never predicted
        or never occurs).
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    ids = list(range(num_labels))
    if y_true.size == 0:
        return {
            "wa": float("nan"),
            "ua": float("nan"),
            "macro_f1": float("nan"),
            "weighted_f1": float("nan"),
            "n": 0,
            "confusion": np.zeros((num_labels, num_labels), dtype=int).tolist(),
            "per_class": {k: [0.0 if k != "support" else 0] * num_labels for k in PER_CLASS},
        }
    present = np.unique(y_true)
    return {
        "wa": float(accuracy_score(y_true, y_pred)),
        "ua": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=present, average="weighted", zero_division=0)),
        "n": int(y_true.size),
        "confusion": confusion_matrix(y_true, y_pred, labels=ids).tolist(),
        "per_class": {
            k: v.tolist()
            for k, v in zip(PER_CLASS, precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0))
        },
    }


def per_class_by_label(metrics: dict, labels: list[str]) -> dict[str, dict]:
    """`metrics["per_class"]` (lists by label id) as {label: {"precision", "recall", "f1", "support"}}."""
    per_class = metrics["per_class"]
    return {label: {k: per_class[k][i] for k in PER_CLASS} for i, label in enumerate(labels)}


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


TABLE_SCORES = (("wa", "WA"), ("ua", "UA"), ("macro_f1", "F1"))  # under each condition in per-run/corpus tables
SCORE_HEADER = [f"{CONDITION_NAMES[c]} {name}" for c in CONDITIONS for _, name in TABLE_SCORES]


def score_cells(scores: dict[str, dict], spread: dict[str, dict] | None = None) -> list[str]:
    """The cells under `SCORE_HEADER`: WA, UA and macro-F1 of each condition, or "mean ± std" with `spread`."""
    cells = []
    for c in CONDITIONS:
        for key, _ in TABLE_SCORES:
            cell = format_score(scores[c][key])
            cells.append(cell if spread is None else f"{cell} ± {format_score(spread[c][key])}")
    return cells


def format_score(value: float | None) -> str:
    """A score with 3 decimals; "–" for none (NaN or None: a condition without rows)."""
    return "–" if value is None or value != value else f"{value:.3f}"


def markdown_table(header: list[str], rows: list[list[str]], text_columns: int = 1, title: str = "") -> str:
    """A Markdown table; the first `text_columns` columns left-aligned, the others (numbers) right-aligned."""
    lines = [title] if title else []
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * text_columns + "---:|" * (len(header) - text_columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def format_by_corpus(by_corpus: dict[str, dict[str, dict]], title: str = "") -> str:
    """A Markdown table with one row per corpus: n, then WA/UA/macro-F1 under each condition."""
    rows = [[corpus, str(scores["both"]["n"]), *score_cells(scores)] for corpus, scores in by_corpus.items()]
    return markdown_table(["corpus", "n", *SCORE_HEADER], rows, title=title)
