"""Label-noise audit: rank the rows whose label the rest of the corpus disagrees with (confident learning).

    report = audit_manifest("data/emodb.jsonl")                            # the baseline, out of fold
    report = audit_manifest("data/emodb.jsonl", model_dir="runs/x/model")  # a trained model: NOT out of fold
    report = audit_manifest("pooled.yaml", folds="corpus")  # data.manifests pooled through their label maps
    print(format_summary(report))
    write_audit(report, "audit.csv")                # every scored row, most suspect first
    write_clean(report, "data/emodb.clean.jsonl")   # the manifest without the suspects

Acted corpora have lines listeners hear as another emotion, and crowd labels disagree; this finds the rows to
listen to first. Every row gets class probabilities p(x) from one of two sources:
- the classical baseline (`mmemo.baseline.out_of_fold_probabilities`, the default): trained once per fold on
  all other folds (speaker-grouped by default, `mmemo.cv.assign_folds`), so no row is scored by a model that
  saw it, or its speaker when folds are speakers;
- a trained mmemo model (`EmotionRecognizer.predict`): stronger, but it has seen the rows it trained on and
  fits their labels, noisy ones included, so on those rows it hides exactly what an audit looks for. Use it on
  rows it did not train on, or read its ranking of its own training rows as a lower bound.

Confident learning (Northcutt et al., 2021) turns probabilities into suspects with per-class thresholds:
t_j = the mean of p_j(x) over the rows labelled j (how sure the model is about class j on its own rows). A row
labelled y is a *suspect* when p_y(x) < t_y and some other class k has p_k(x) >= t_k. Rows are ranked by
self-confidence p_y(x), lowest first (the default), or by the margin max_{k != y} p_k(x) - p_y(x), highest
first. The ranking covers every scored row; `suspect` is a separate flag.

A YAML config audits the pool of its `data.manifests` (`mmemo.data.pool.read_corpora`): labels mapped into the
shared set, ids and speakers "corpus/...", and the baseline trained across corpora, so a corpus whose label
means something else than the pool's (its "neutral" heard as "sad") shows up in the summary's per-corpus
section. Every record carries its `corpus`.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmemo.config import load_config
from mmemo.data.manifest import read_manifest, write_manifest
from mmemo.data.pool import corpora_of, corpus_names, is_config, read_corpora, read_lone_manifest, warn_partial_labels
from mmemo.errors import ConfigError, DataError
from mmemo.io import atomic_write, check_output

RANK_BY = ("self_confidence", "margin")
AUDIT_SUFFIXES = (".csv", ".jsonl")
# `corpus` is always written (a lone manifest's is its `corpus` column or its file's name), last so the other
# columns keep their places: one schema for every audit, so a script reading audits needs no case for pools.
COLUMNS = (
    "rank",
    "id",
    "label",
    "label_prob",
    "predicted",
    "predicted_prob",
    "margin",
    "suspect",
    "out_of_fold",
    "audio",
    "text",
    "corpus",
)


@dataclass(frozen=True)
class AuditReport:
    """What `audit_manifest` found.

    Attributes:
        manifest: the audited manifest, or the YAML config whose `data.manifests` were pooled.
        source: what produced the probabilities ("baseline: ..." or "model: DIR").
        out_of_fold: True when no row was scored by a model trained on it (the baseline), False for a model.
        rank_by: "self_confidence" or "margin".
        labels: the classes, in probability order.
        thresholds: per-class threshold t_j (NaN for a class no scored row is labelled with).
        ranked: one record per scored row (the keys of `COLUMNS`), most suspect first.
        unscored: ids of rows without probabilities (no usable input, or a label the model does not know).
        rows: a manifest's rows as read (audio paths absolute), in file order, for `write_clean`; for a config
            the pooled rows (labels mapped, ids "corpus/id").
        corpora: the corpus names of the scored rows, sorted (one for a manifest that names one corpus).
    """

    manifest: Path
    source: str
    out_of_fold: bool
    rank_by: str
    labels: tuple[str, ...]
    thresholds: dict[str, float]
    ranked: tuple[dict, ...]
    unscored: tuple[str, ...]
    rows: tuple[dict, ...]
    corpora: tuple[str, ...] = ()

    @property
    def suspects(self) -> list[dict]:
        """The ranked records flagged as suspects, in rank order."""
        return [r for r in self.ranked if r["suspect"]]


def audit_manifest(
    manifest: str | os.PathLike,
    model_dir: str | os.PathLike | None = None,
    folds: str | int | None = None,
    rank_by: str = "self_confidence",
    condition: str = "both",
    cache_dir: str | os.PathLike | None = None,
    n_jobs: int = 2,
    device: str = "auto",
    batch_size: int = 16,
) -> AuditReport:
    """Score every row of a manifest, or of a config's pooled corpora, and rank the rows whose label looks wrong.

    Args:
        manifest: the manifest to audit, or a YAML config (.yaml/.yml) whose `data.manifests` (or
            `data.manifest`) are read through their label maps as in training. Read only, never written.
        model_dir: a trained mmemo model folder; None uses the classical baseline out of fold.
        folds: baseline only: see `mmemo.cv.assign_folds` (None: the `fold` column when every row has one,
            else one fold per speaker; "corpus": leave one corpus out, for a pool).
        rank_by: "self_confidence" (given label's probability, lowest first) or "margin" (best other class's
            probability minus the given label's, highest first).
        condition: baseline only: "both" (text+audio features), "audio" or "text".
        cache_dir: baseline only: an `AudioCache` folder for decoded clips and their functionals.
        n_jobs: baseline only: processes extracting functionals.
        device: model only: where the model runs ("auto", "cpu", "cuda", ...).
        batch_size: model only: inputs per forward pass.

    Returns:
        An `AuditReport`.

    Raises:
        ConfigError: unknown `rank_by`, or `folds`/`condition` given with `model_dir`; as `load_config`,
            `corpora_of` and `read_corpora` for a config.
        DataError: as `read_manifest`, `mmemo.baseline.out_of_fold_probabilities` or `load_audio`; no row could
            be scored.
    """
    if rank_by not in RANK_BY:
        raise ConfigError(f"rank_by must be one of {', '.join(RANK_BY)}, got {rank_by!r}")
    rows, scored_rows = _read_source(manifest)
    if model_dir is None:
        from mmemo.baseline import MODEL, out_of_fold_probabilities
        from mmemo.cv import fold_scheme

        folds_by = fold_scheme(scored_rows, folds)
        labels, probabilities = out_of_fold_probabilities(
            scored_rows, folds=folds_by, condition=condition, cache_dir=cache_dir, n_jobs=n_jobs
        )
        source = f"baseline ({condition}): {MODEL}, out of fold by {folds_by}"
        out_of_fold = True
    else:
        if folds is not None or condition != "both":
            raise ConfigError("--folds and --modality apply to the baseline; drop them with --model")
        labels, probabilities = model_probabilities(scored_rows, model_dir, device=device, batch_size=batch_size)
        source = f"model: {model_dir}"
        out_of_fold = False
    ranked, thresholds, unscored = rank_label_issues(scored_rows, labels, probabilities, rank_by=rank_by)
    if not ranked:
        raise DataError(f"{manifest}: no row could be scored (rows need audio or text, and a label the model knows)")
    for record in ranked:
        record["out_of_fold"] = out_of_fold
    return AuditReport(
        manifest=Path(manifest),
        source=source,
        out_of_fold=out_of_fold,
        rank_by=rank_by,
        labels=tuple(labels),
        thresholds=thresholds,
        ranked=tuple(ranked),
        unscored=tuple(unscored),
        rows=tuple(rows),
        corpora=tuple(corpus_names(scored_rows)),
    )


def _read_source(source: str | os.PathLike) -> tuple[list[dict], list[dict]]:
    """(the rows `write_clean` keeps, the rows to score) of a manifest or a config.

    A manifest's rows are scored with its speakers kept apart per corpus when its `corpus` column names several
    (as `mmemo baseline` and `mmemo cv` read it); the clean manifest keeps them as written. A config's rows are
    its pooled corpora, both times.
    """
    if is_config(source):
        rows = read_corpora(corpora_of(load_config(source).data))
        warn_partial_labels(rows)  # a label only one corpus has: often a missing map, and a sure "suspect" there
        return rows, rows
    return read_manifest(source), read_lone_manifest(source)


def rank_label_issues(
    rows: list[dict], labels: list[str], probabilities: np.ndarray, rank_by: str = "self_confidence"
) -> tuple[list[dict], dict[str, float], list[str]]:
    """Confident-learning thresholds, suspect flags and a ranking of rows from their class probabilities.

    Args:
        rows: manifest rows (`id`, `label`, `audio`, `text` and, when present, `corpus` are used).
        labels: the class names, in `probabilities`' column order.
        probabilities: (len(rows), len(labels)); a row of NaN is not scored.
        rank_by: "self_confidence" or "margin" (see the module docstring).

    Returns:
        (ranked records, {label: threshold}, ids of the unscored rows). Ties keep file order.
    """
    index = {label: i for i, label in enumerate(labels)}
    probabilities = np.asarray(probabilities, dtype=float)
    scored = [i for i, r in enumerate(rows) if r["label"] in index and np.isfinite(probabilities[i]).all()]
    scored_set = set(scored)
    unscored = [r["id"] for i, r in enumerate(rows) if i not in scored_set]
    given = np.array([index[rows[i]["label"]] for i in scored], dtype=int)
    probs = probabilities[scored]
    # A class no scored row is labelled with has no threshold; NaN never compares true, so it flags nothing.
    thresholds = np.array([probs[given == j, j].mean() if (given == j).any() else np.nan for j in range(len(labels))])

    rows_at = np.arange(len(scored))
    given_prob = probs[rows_at, given]
    others = probs.copy()
    others[rows_at, given] = -np.inf
    margin = others.max(axis=1) - given_prob
    above = probs >= thresholds  # (n, classes): confidently in class k
    above[rows_at, given] = False
    suspect = (given_prob < thresholds[given]) & above.any(axis=1)
    predicted = probs.argmax(axis=1)

    score = given_prob if rank_by == "self_confidence" else -margin
    order = np.argsort(score, kind="stable")
    ranked = []
    for rank, k in enumerate(order, 1):
        row = rows[scored[k]]
        ranked.append(
            {
                "rank": rank,
                "id": row["id"],
                "label": row["label"],
                "label_prob": round(float(given_prob[k]), 6),
                "predicted": labels[predicted[k]],
                "predicted_prob": round(float(probs[k, predicted[k]]), 6),
                "margin": round(float(margin[k]), 6),
                "suspect": bool(suspect[k]),
                "audio": row["audio"],
                "text": row["text"],
                "corpus": row.get("corpus") or "",
            }
        )
    return ranked, {label: float(t) for label, t in zip(labels, thresholds)}, unscored


def model_probabilities(
    rows: list[dict], model_dir: str | os.PathLike, device: str = "auto", batch_size: int = 16
) -> tuple[list[str], np.ndarray]:
    """Class probabilities of every row from a trained model (fused text+audio, whatever the row has), scored by
    the row-scoring loop `mmemo.row_scoring.predict_rows`, as `mmemo predict-batch` and `mmemo evaluate` score it.

    Not out of fold: rows the model trained on get the probabilities of a model that fitted their labels.

    Args:
        rows: manifest rows.
        model_dir: the model folder (`EmotionRecognizer.from_pretrained`).
        device: where the model runs.
        batch_size: inputs per forward pass.

    Returns:
        (the model's labels, a (len(rows), len(labels)) array); a row that cannot be scored (neither audio nor
        text, or audio that does not decode) is all NaN, so the audit lists it as not scored.
    """
    from mmemo.inference import EmotionRecognizer
    from mmemo.prediction import Prediction
    from mmemo.row_scoring import predict_rows

    recognizer = EmotionRecognizer.from_pretrained(model_dir, device=device)
    probabilities = np.full((len(rows), len(recognizer.labels)), np.nan)
    for chunk, results in predict_rows(recognizer, rows, batch_size=batch_size):
        for i, result in zip(chunk, results):
            if isinstance(result, Prediction):
                probabilities[i] = [result.probabilities[label] for label in recognizer.labels]
    return list(recognizer.labels), probabilities


def write_audit(report: AuditReport, output: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write the ranked records as CSV (`.csv`) or JSON Lines (`.jsonl`), atomically.

    Raises:
        DataError: another suffix, `output` is the audited manifest, or it exists and `overwrite` is false.
    """
    output = check_output(output, report.manifest, overwrite=overwrite, suffixes=AUDIT_SUFFIXES, what="audit")
    with atomic_write(output, "w", encoding="utf-8", newline="") as f:
        if output.suffix.lower() == ".jsonl":
            for record in report.ranked:
                f.write(json.dumps({k: record[k] for k in COLUMNS}, ensure_ascii=False) + "\n")
        else:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows({k: record[k] for k in COLUMNS} for record in report.ranked)
    return output


def check_clean_output(source: str | os.PathLike, output: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse a `--write-clean` target before the scoring: a config source, the audited manifest, an existing file.

    A config pools several manifests, so which file a clean copy replaces is ambiguous; audit each corpus's own
    manifest to write a clean one (its suspects are those of that corpus alone, its labels its own).

    Raises:
        ConfigError: `source` is a YAML config.
        DataError: as `mmemo.io.check_output`.
    """
    if is_config(source):
        raise ConfigError(
            f"--write-clean: {source} is a config pooling several manifests, so which one to clean is ambiguous; "
            "audit the pool without --write-clean to see its suspects, then run `mmemo data audit MANIFEST "
            "--write-clean OUT` on each corpus's own manifest (data.manifests[i].path)"
        )
    return check_output(output, source, overwrite=overwrite, what="clean manifest")


def write_clean(
    report: AuditReport, output: str | os.PathLike, threshold: float | None = None, overwrite: bool = False
) -> tuple[Path, int]:
    """Write the audited manifest without its suspect rows (`mmemo.data.manifest.write_manifest`).

    Args:
        report: the audit of a manifest (not of a config: see `check_clean_output`).
        output: the new manifest (JSONL, or CSV for .csv); never the audited one.
        threshold: drop the rows whose score is beyond it instead of the flagged suspects: with
            rank_by="self_confidence" the rows whose given-label probability is below it, with "margin" the rows
            whose margin is above it. Unscored rows are always kept (nothing speaks against them).
        overwrite: replace an existing `output`.

    Returns:
        (the path written, the number of rows dropped).

    Raises:
        ConfigError: the report audited a config.
        DataError: `output` is the audited manifest, exists without `overwrite`, or every row would be dropped.
    """
    output = check_clean_output(report.manifest, output, overwrite=overwrite)
    if threshold is None:
        dropped = {r["id"] for r in report.suspects}
    elif report.rank_by == "self_confidence":
        dropped = {r["id"] for r in report.ranked if r["label_prob"] < threshold}
    else:
        dropped = {r["id"] for r in report.ranked if r["margin"] > threshold}
    kept = [r for r in report.rows if r["id"] not in dropped]
    if not kept:
        raise DataError(f"every row of {report.manifest} would be dropped; choose a less strict --threshold")
    return write_manifest(kept, output), len(dropped)


def format_summary(report: AuditReport, top: int = 10, pairs_per_corpus: int = 3) -> str:
    """The audit for the terminal: suspect count, per-class thresholds, given → predicted pairs, per corpus when
    the rows come from several (rows, suspects, suspect rate, their `pairs_per_corpus` commonest pairs), the top
    rows."""
    n, suspects = len(report.ranked), report.suspects
    lines = [f"# audit of {report.manifest}: {n} rows scored, {len(suspects)} suspect(s) ({len(suspects) / n:.1%})"]
    lines.append(f"probabilities: {report.source}")
    if not report.out_of_fold:
        lines.append(
            "note: NOT out of fold: the model has seen the rows it trained on and fitted their labels, so those rows "
            "look cleaner than they are; audit rows it did not train on, or use --baseline"
        )
    if report.unscored:
        lines.append(
            f"{len(report.unscored)} row(s) not scored (no audio or text, audio that does not decode, or a label "
            "the model lacks)"
        )
    by_label = Counter(r["label"] for r in report.ranked)
    suspects_by_label = Counter(r["label"] for r in suspects)
    lines += ["", "## Per-class thresholds (mean probability of the class over the rows labelled with it)", ""]
    lines += ["| label | rows | threshold | suspects |", "|---|---:|---:|---:|"]
    for label in report.labels:
        t = report.thresholds[label]
        shown = "–" if t != t else f"{t:.3f}"
        lines.append(f"| {label} | {by_label[label]} | {shown} | {suspects_by_label[label]} |")
    pairs = Counter((r["label"], r["predicted"]) for r in suspects)
    lines += ["", "## Suspects: given label (rows) → predicted label (columns)", ""]
    lines += ["| given \\ predicted | " + " | ".join(report.labels) + " |", "|---|" + "---:|" * len(report.labels)]
    for g in report.labels:
        lines.append(f"| {g} | " + " | ".join(str(pairs[g, p] or "·") for p in report.labels) + " |")
    if len(report.corpora) > 1:
        lines += ["", *_corpus_section(report, pairs_per_corpus)]
    what = "lowest given-label probability" if report.rank_by == "self_confidence" else "highest margin"
    lines += ["", f"## Top {min(top, n)} rows ({what} first)", ""]
    lines += [
        "| rank | id | given | p(given) | predicted | p(predicted) | margin | suspect |",
        "|---:|---|---|---:|---|---:|---:|---|",
    ]
    for r in report.ranked[:top]:
        lines.append(
            f"| {r['rank']} | {r['id']} | {r['label']} | {r['label_prob']:.3f} | {r['predicted']} | "
            f"{r['predicted_prob']:.3f} | {r['margin']:+.3f} | {'yes' if r['suspect'] else ''} |"
        )
    return "\n".join(lines)


def _corpus_section(report: AuditReport, pairs_per_corpus: int) -> list[str]:
    """Summary lines: per corpus its rows, suspects, suspect rate and commonest given → predicted suspect pairs.

    A pair reads "neutral → sad 8/30": 8 of the corpus's 30 rows labelled neutral are suspects the pool hears as
    sad, which is how a label that means something else in one corpus shows up.
    """
    lines = ["## Per corpus: suspects and their commonest given → predicted pairs (suspects / rows with that label)"]
    lines += ["", "| corpus | rows | suspects | rate | top pairs |", "|---|---:|---:|---:|---|"]
    for name in report.corpora:
        ranked = [r for r in report.ranked if r["corpus"] == name]
        suspects = [r for r in ranked if r["suspect"]]
        by_label = Counter(r["label"] for r in ranked)
        pairs = Counter((r["label"], r["predicted"]) for r in suspects).most_common(pairs_per_corpus)
        shown = ", ".join(f"{g} → {p} {k}/{by_label[g]}" for (g, p), k in pairs) or "–"
        rate = len(suspects) / len(ranked) if ranked else 0.0
        lines.append(f"| {name} | {len(ranked)} | {len(suspects)} | {rate:.1%} | {shown} |")
    return lines
