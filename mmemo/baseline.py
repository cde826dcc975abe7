"""The classical reference: acoustic functionals and TF-IDF n-grams into a logistic regression, on cv's folds.

    results = run_baseline("data/emodb.jsonl")                    # the manifest's `fold` column, like `mmemo cv`
    results = run_baseline("data/emodb.jsonl", speaker_norm=True) # per-speaker z-scored functionals
    results = run_baseline("data/iemocap.jsonl", split="test")    # train on train+valid, score test
    results = run_baseline(rows=cv_rows(cfg), folds="corpus")     # a config's pooled corpora, leave one out
    labels, probs = out_of_fold_probabilities(rows, folds="speaker") # each row scored by the other folds' model

What the field reports next to a neural model: if it cannot beat this, it has not learned much. Per condition:
- audio-only: `mmemo.data.acoustic.functionals` of each clip → StandardScaler (fit on the training rows) →
  LogisticRegression;
- text-only: TF-IDF of word 1-2-grams and char_wb 2-5-grams → LogisticRegression;
- text+audio: both blocks side by side in one LogisticRegression (a row without text has an all-zero TF-IDF
  block; a row without audio the training mean of the scaled functionals, i.e. zeros).
Every LogisticRegression: C = 1.0 (chosen once, not tuned per corpus), balanced class weights, lbfgs with up
to 5000 iterations: deterministic. As in `mmemo.train`'s evaluation, a row without text is scored only in
text+audio and audio-only, a row without audio only in text+audio and text-only; a condition trains on the
training rows that have its modality.

Folds are `mmemo.cv`'s (`fold_plan`): fold f is tested once; the model trains on every other row (cv's train
and valid folds together: nothing here needs early stopping). With `folds="corpus"` (leave one corpus out) that
is every row of the other corpora. `split="test"` instead trains on the manifest's train and valid rows and
scores its test rows. Pooled rows (`rows=`, e.g. `mmemo.cv.cv_rows` of a config with `data.manifests`) carry
their corpus; when a fold's test rows span several corpora its run also has `test_by_corpus`, and the results
`corpus_means` / `corpus_std`, as in `cross_validate`.

`speaker_norm=True` z-scores each clip's functionals with its own speaker's `SpeakerProfile` before the global
scaler, enrolled from ALL of that speaker's clips in the manifest, test clips included, labels never used. It is
transductive per speaker (the field's usual speaker normalisation, which assumes some unlabelled speech of each
test speaker is at hand), so report it as such, next to the plain figure.

`out_of_fold_probabilities` trains the same model once per fold on all other folds and returns every row's
class probabilities (what `mmemo data audit` ranks label suspects by).

The results dict has `mmemo.cv.cross_validate`'s shape (one run per fold, seed 0), so `mmemo.cv`'s table and
JSON writers print and save it.
"""

from __future__ import annotations

import os
import time

import numpy as np
import scipy.sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_union
from sklearn.preprocessing import StandardScaler

from mmemo.cv import assign_folds, condition_summary, corpus_summary, fold_order, fold_plan
from mmemo.data.acoustic import FEATURE_NAMES
from mmemo.data.manifest import label_set
from mmemo.data.pool import corpus_names, read_lone_manifest
from mmemo.data.speakers import enrol_speakers
from mmemo.errors import ConfigError, DataError
from mmemo.metrics import CONDITIONS, classification_metrics

C = 1.0
MAX_ITER = 5000
_MIN_PARALLEL_CLIPS = 200  # each worker imports torch (via mmemo.data.audio): seconds that only a corpus repays
MODEL = f"functionals/TF-IDF + StandardScaler + LogisticRegression(C={C}, class_weight=balanced)"


def run_baseline(
    manifest: str | os.PathLike | None = None,
    folds: str | int | None = None,
    split: str | None = None,
    speaker_norm: bool = False,
    cache_dir: str | os.PathLike | None = None,
    n_jobs: int = 2,
    rows: list[dict] | None = None,
) -> dict:
    """Score the classical baseline on every cross-validation fold, or on the manifest's test split.

    Args:
        manifest: the manifest to score (or give `rows`).
        folds: see `mmemo.cv.assign_folds` (None: the `fold` column when every row has one, else speakers).
        split: "test" to train on the manifest's train+valid rows and score its test rows instead of folds.
        speaker_norm: z-score functionals per speaker first (transductive; see the module docstring).
        cache_dir: an `AudioCache` folder for decoded clips and their functionals (None: no cache).
        n_jobs: processes extracting functionals.
        rows: manifest rows to score instead of `manifest`'s, e.g. several corpora pooled (`mmemo.cv.cv_rows`).

    Returns:
        `mmemo.cv.cross_validate`'s dict (runs, fold_means, mean, std, confusion, per corpus ...) with seeds
        [0], plus "model", "speaker_norm" and "seconds" (wall time, extraction included).

    Raises:
        ConfigError: both or neither of `manifest` and `rows`, both `folds` and `split` given, or `split` is
            not "test".
        DataError: see `mmemo.cv.fold_plan`; an audio file cannot be decoded; a split or fold has no training rows.
    """
    started = time.perf_counter()
    if (manifest is None) == (rows is None):
        raise ConfigError("give the baseline a manifest or rows, one of them")
    if split is not None and folds is not None:
        raise ConfigError("give --folds or --split, not both")
    if split not in (None, "test"):
        raise ConfigError(f"--split must be 'test' (train on train+valid, score test), got {split!r}")
    rows = read_lone_manifest(manifest) if rows is None else rows  # speakers kept per corpus
    labels = label_set(rows)
    plans = fold_plan(rows, folds) if split is None else [("test", "valid", rows)]  # fold errors before decoding
    audio = extract_functionals(rows, cache_dir=cache_dir, n_jobs=n_jobs)
    if speaker_norm:
        audio = normalise_per_speaker(rows, audio)

    runs = [_score_fold(fold, valid_fold, fold_rows, audio, labels) for fold, valid_fold, fold_rows in plans]
    order = [run["fold"] for run in runs]
    if split is None and str(folds) == "corpus":  # record the held-out corpus, as cross_validate does
        for run in runs:
            del run["test_speakers"]
            run["held_out_corpus"] = run["fold"]
    corpora = corpus_names(rows)

    mean, std = condition_summary([r["test"] for r in runs])
    return {
        "manifest": str(manifest) if manifest is not None else "",
        "corpora": corpora if len(corpora) > 1 else [],
        "folds_by": "split" if split else str(folds),
        "folds": order,
        "seeds": [0],
        "labels": labels,
        "runs": runs,
        "fold_means": {r["fold"]: r["test"] for r in runs},
        "mean": mean,
        "std": std,
        "confusion": {c: np.sum([r["confusion"][c] for r in runs], axis=0).tolist() for c in CONDITIONS},
        **corpus_summary(runs),
        "model": MODEL,
        "speaker_norm": speaker_norm,
        "seconds": round(time.perf_counter() - started, 2),
    }


def extract_functionals(
    rows: list[dict], cache_dir: str | os.PathLike | None = None, n_jobs: int = 2
) -> dict[str, np.ndarray]:
    """Row id → `functionals` of its decoded clip (16 kHz), for every row with audio, over `n_jobs` processes."""
    from concurrent.futures import ProcessPoolExecutor

    with_audio = [r for r in rows if r["audio"]]
    cache = os.fspath(cache_dir) if cache_dir else None
    args = [(r["audio"], r.get("start"), r.get("end"), cache) for r in with_audio]
    if n_jobs > 1 and len(args) >= _MIN_PARALLEL_CLIPS:
        with ProcessPoolExecutor(max_workers=n_jobs) as pool:
            values = list(pool.map(_clip_functionals, *zip(*args), chunksize=16))
    else:
        values = [_clip_functionals(*a) for a in args]
    return {r["id"]: v for r, v in zip(with_audio, values)}


def normalise_per_speaker(rows: list[dict], audio: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each clip's functionals z-scored by a `SpeakerProfile` enrolled from all of its speaker's clips."""
    scored = [r for r in rows if r["id"] in audio]
    profiles = enrol_speakers([r["speaker"] for r in scored], np.stack([audio[r["id"]] for r in scored]))
    return {r["id"]: profiles[r["speaker"]].normalise(audio[r["id"]]) for r in scored}


def _clip_functionals(path: str, start: float | None, end: float | None, cache_dir: str | None) -> np.ndarray:
    from mmemo.data.cache import AudioCache, clip_functionals

    return clip_functionals(path, start, end, AudioCache(cache_dir) if cache_dir else None, 16000)


def _score_fold(fold: str, valid_fold: str, rows: list[dict], audio: dict, labels: list[str]) -> dict:
    """Train on the rows not in the test split, score the test rows; one cv-shaped run dict."""
    train = [r for r in rows if r["split"] != "test"]
    test = [r for r in rows if r["split"] == "test"]
    if not train or not test:
        raise DataError(f"fold {fold}: {len(train)} training and {len(test)} test rows; both must be non-empty")
    speakers = {s: {r["speaker"] for r in rows if r["split"] == s} for s in ("train", "valid", "test")}
    index = {label: i for i, label in enumerate(labels)}
    test_corpora = corpus_names(test)
    scores, by_corpus = {}, {name: {} for name in test_corpora}
    for condition in CONDITIONS:
        has = _has(condition, audio)
        fit_rows, score_rows = [r for r in train if has(r)], [r for r in test if has(r)]
        if fit_rows and score_rows:
            features, model = _fit(condition, audio, fit_rows, index)
            y_true, y_pred = [index[r["label"]] for r in score_rows], model.predict(features.transform(score_rows))
        else:
            score_rows, y_true, y_pred = [], [], []
        scores[condition] = classification_metrics(y_true, y_pred, len(labels))
        for name in test_corpora:
            mine = [i for i, r in enumerate(score_rows) if (r.get("corpus") or "") == name]
            by_corpus[name][condition] = classification_metrics(
                [y_true[i] for i in mine], [y_pred[i] for i in mine], len(labels)
            )
    return {
        "fold": fold,
        "seed": 0,
        "valid_fold": valid_fold,
        "test_speakers": sorted(speakers["test"]),
        "shared_speakers": sorted(speakers["test"] & (speakers["train"] | speakers["valid"])),
        "n": {s: sum(r["split"] == s for r in rows) for s in ("train", "valid", "test")},
        "best_epoch": None,
        "run_dir": None,
        "test": _headline(scores),
        "confusion": {c: m["confusion"] for c, m in scores.items()},
        # as in cross_validate: per corpus when the rows are pooled (one test corpus: its scores are the test's)
        **({"test_by_corpus": {n: _headline(m) for n, m in by_corpus.items()}} if _pooled(rows) else {}),
    }


def _headline(scores: dict) -> dict:
    """{condition: metrics} without the confusion matrix (what results keep per run)."""
    return {c: {k: v for k, v in m.items() if k != "confusion"} for c, m in scores.items()}


def _pooled(rows: list[dict]) -> bool:
    return len(corpus_names(rows)) > 1


def out_of_fold_probabilities(
    rows: list[dict],
    folds: str | int | None = None,
    condition: str = "both",
    speaker_norm: bool = False,
    cache_dir: str | os.PathLike | None = None,
    n_jobs: int = 2,
) -> tuple[list[str], np.ndarray]:
    """Each row's class probabilities from the baseline trained on the other folds (never on the row's own fold).

    With speaker folds no row is scored by a model that heard its speaker, so a row's probabilities say what
    the rest of the corpus implies about it: the input that label-noise audits (`mmemo data audit`) rank.

    Args:
        rows: manifest rows (from `read_manifest`); their `split` is ignored.
        folds: see `mmemo.cv.assign_folds` (None: the `fold` column when every row has one, else speakers).
        condition: "both" (text+audio), "audio" or "text": which features the model sees.
        speaker_norm: z-score functionals per speaker first (transductive; see the module docstring).
        cache_dir: an `AudioCache` folder for decoded clips and their functionals (None: no cache).
        n_jobs: processes extracting functionals.

    Returns:
        (labels, probabilities): the sorted label set, and a (len(rows), len(labels)) array in row order. A row
        the condition cannot score (no audio for "audio", no text for "text", neither for "both") is all NaN;
        a class absent from a fold's training rows gets probability 0 in that fold.

    Raises:
        ConfigError: `condition` is not one of `CONDITIONS`.
        DataError: see `assign_folds`; an audio file cannot be decoded; a fold has no row to train on.
    """
    if condition not in CONDITIONS:
        raise ConfigError(f"condition must be one of {', '.join(CONDITIONS)}, got {condition!r}")
    labels = label_set(rows)
    index = {label: i for i, label in enumerate(labels)}
    audio = extract_functionals(rows, cache_dir=cache_dir, n_jobs=n_jobs) if condition != "text" else {}
    if speaker_norm:
        audio = normalise_per_speaker(rows, audio)
    has = _has(condition, audio)
    fold_of = assign_folds(rows, folds)
    probabilities = np.full((len(rows), len(labels)), np.nan)
    for fold in fold_order(fold_of.values()):
        fit_rows = [r for r in rows if fold_of[r["id"]] != fold and has(r)]
        scored = [i for i, r in enumerate(rows) if fold_of[r["id"]] == fold and has(r)]
        if not scored:
            continue
        if not fit_rows:
            raise DataError(f"fold {fold}: no row outside it has the {condition!r} inputs to train on")
        features, model = _fit(condition, audio, fit_rows, index)
        fold_probs = np.zeros((len(scored), len(labels)))
        fold_probs[:, model.classes_] = model.predict_proba(features.transform([rows[i] for i in scored]))
        probabilities[scored] = fold_probs
    return labels, probabilities


def _fit(condition: str, audio: dict, rows: list[dict], index: dict[str, int]):
    """(features, LogisticRegression) fitted on `rows` for one condition; classes are `index`'s numbers."""
    features = _Features(condition, audio).fit(rows)
    model = LogisticRegression(C=C, class_weight="balanced", max_iter=MAX_ITER)
    model.fit(features.transform(rows), [index[r["label"]] for r in rows])
    return features, model


def _has(condition: str, audio: dict):
    """Which rows a condition trains and scores on (the rule `mmemo.train.evaluate` follows)."""
    if condition == "audio":
        return lambda r: r["id"] in audio
    if condition == "text":
        return lambda r: bool(r["text"].strip())
    return lambda r: r["id"] in audio or bool(r["text"].strip())


class _Features:
    """The feature matrix of one condition: scaled functionals, TF-IDF n-grams, or both side by side."""

    def __init__(self, condition: str, audio: dict):
        self.audio = audio
        self.use_audio, self.use_text = condition in ("audio", "both"), condition in ("text", "both")

    def fit(self, rows: list[dict]) -> _Features:
        texts = [r["text"] for r in rows if r["text"].strip()]
        self.use_audio = self.use_audio and any(r["id"] in self.audio for r in rows)
        self.use_text = self.use_text and bool(texts)
        if self.use_audio:
            self.scaler = StandardScaler().fit(np.stack([self.audio[r["id"]] for r in rows if r["id"] in self.audio]))
        if self.use_text:
            self.tfidf = make_union(
                TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True),
                TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True),
            )
            self.tfidf.fit(texts)
        return self

    def transform(self, rows: list[dict]):
        blocks = []
        if self.use_audio:
            missing = np.full(len(FEATURE_NAMES), np.nan)  # → 0 after scaling: the training mean
            raw = np.stack([self.audio.get(r["id"], missing) for r in rows])
            blocks.append(scipy.sparse.csr_matrix(np.nan_to_num(self.scaler.transform(raw))))
        if self.use_text:
            blocks.append(self.tfidf.transform([r["text"] for r in rows]))
        return scipy.sparse.hstack(blocks, format="csr") if len(blocks) > 1 else blocks[0]
