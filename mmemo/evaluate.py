"""Evaluation in one place: logits per condition over a loader, their scores, and a saved model on a manifest.

Training's evaluations (each epoch's validation, the final validation and test of a run, calibration's logits, and
through `train` the cross-validation and ablation runs) go through `collect_logits`, which classifies each batch
of a loader with `EmotionModel.logits_by_condition` (encode once, fuse per condition). A saved model scores rows
(`mmemo evaluate`, `row_logits`) through `mmemo.row_scoring.predict_rows`, the loop `mmemo predict-batch` and
`mmemo data audit --model` use too, so the three agree on every clip (long ones are segmented as `predict` does;
that module's docstring says why). The ONNX runtime keeps its own torch-free copy.
"""

from __future__ import annotations

import os
import warnings
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader

from mmemo.config import load_config
from mmemo.data.dataset import move_batch
from mmemo.data.manifest import read_manifest
from mmemo.data.pool import Corpus, corpora_of, is_config, read_corpora, read_lone_manifest, relabel
from mmemo.errors import ConfigError, DataError
from mmemo.inference import EmotionRecognizer
from mmemo.metrics import CONDITIONS, classification_metrics


class ConditionLogits(NamedTuple):
    """One condition's logits over a loader: (N, C) float32 logits, (N,) label ids and the N row ids, on the CPU."""

    logits: torch.Tensor
    labels: torch.Tensor
    ids: list[str]


@torch.inference_mode()
def collect_logits(model, loader: DataLoader, device: torch.device) -> dict[str, ConditionLogits]:
    """Logits, labels and row ids for every row of a loader under each condition it can serve.

    "both" scores every row with whatever it has, "text" the rows with text (text alone), "audio" the rows with
    audio (audio alone). A row without text therefore counts only in "both" and "audio"; one without audio only
    in "both" and "text".

    Args:
        model: an EmotionModel (put in eval mode here).
        loader: yields Collator batch dicts.
        device: where the model is.

    Returns:
        {condition: ConditionLogits}; empty tensors for a condition no row has.
    """
    model.eval()
    logits = {c: [] for c in CONDITIONS}
    labels = {c: [] for c in CONDITIONS}
    ids = {c: [] for c in CONDITIONS}
    for batch in loader:
        if not len(batch["labels"]):  # every clip of the batch was skipped (data.on_bad_sample: skip)
            continue
        batch = move_batch(batch, device)
        by_condition = model.logits_by_condition(
            batch["text"], batch["audio"], batch["text_present"], batch["audio_present"]
        )
        for cond, (cond_logits, rows) in by_condition.items():
            if len(rows):
                logits[cond].append(cond_logits.float().cpu())
                labels[cond].append(batch["labels"][rows].cpu())
                ids[cond] += [batch["ids"][i] for i in rows.tolist()]
    return {
        c: ConditionLogits(
            torch.cat(logits[c]) if logits[c] else torch.empty(0),
            torch.cat(labels[c]) if labels[c] else torch.empty(0, dtype=torch.long),
            ids[c],
        )
        for c in CONDITIONS
    }


def score(logits_by_condition: dict[str, ConditionLogits], num_labels: int) -> dict:
    """Metrics per condition from `collect_logits`' output: {"both": metrics, "text": ..., "audio": ...}."""
    return {
        c: classification_metrics(labels.tolist(), logits.argmax(-1).tolist() if len(labels) else [], num_labels)
        for c, (logits, labels, _) in logits_by_condition.items()
    }


def score_by_corpus(logits_by_condition: dict[str, ConditionLogits], rows: list[dict], num_labels: int) -> dict:
    """`score` per corpus, when `rows` (the scored rows, with their `corpus`) come from several; else {}.

    Returns:
        {corpus: {"both": metrics, "text": ..., "audio": ...}} in corpus-name order.
    """
    corpus_of = {row["id"]: row.get("corpus") or "" for row in rows}
    names = sorted(set(corpus_of.values()))
    if len(names) < 2:
        return {}
    by_corpus = {}
    for name in names:
        subset = {}
        for c, (logits, labels, ids) in logits_by_condition.items():
            keep = [i for i, row_id in enumerate(ids) if corpus_of[row_id] == name]
            subset[c] = ConditionLogits(logits[keep], labels[keep], [ids[i] for i in keep])
        by_corpus[name] = score(subset, num_labels)
    return by_corpus


def monitored_ua(scores: dict, by_corpus: dict, condition: str, average: str = "pooled") -> float:
    """The validation UA that picks the best epoch: `condition`'s UA over all rows ("pooled"), or the mean of its
    per-corpus UAs ("corpus_mean", when `by_corpus` has several; corpora without rows for the condition left out)."""
    uas = [s[condition]["ua"] for s in by_corpus.values() if s[condition]["n"]]
    if average == "corpus_mean" and uas:
        return float(np.mean(uas))
    return scores[condition]["ua"]


def evaluate_manifest(
    model_dir: str | os.PathLike,
    manifest: str | os.PathLike,
    split: str = "test",
    batch_size: int = 16,
    device: str = "auto",
    int8: bool = False,
    progress: bool = True,
    corpus: str | None = None,
    workers: int = 0,
) -> dict:
    """Score the model in `model_dir` on one split of `manifest` ("all" for every row), through `row_logits`.

    `manifest` may also be a YAML config whose `data.manifests` pools several corpora: they are read through
    their label maps, as in training. `corpus` names one of the label maps saved with the model
    (`model.label_maps`) to apply to a manifest that still carries that corpus's own labels. With `int8` the
    model's linear layers are quantized first (CPU only), as `from_pretrained(..., int8=True)`. With `progress`
    a progress bar over rows goes to stderr when stderr is a terminal. `workers` DataLoader processes decode audio.

    Returns:
        {"both": metrics, "text": metrics, "audio": metrics} (see `mmemo.metrics.classification_metrics`), each
        with "labels": the model's label names in label-id order (the order of confusion rows and per_class lists);
        plus "by_corpus": {corpus: {condition: metrics}} when the rows come from several corpora.

    Raises:
        ConfigError: `corpus` is not one of the model's label maps.
        DataError: the split is empty, it holds labels the model does not know, or a row cannot be scored.
    """
    recognizer = EmotionRecognizer.from_pretrained(model_dir, device=device, int8=int8)
    rows = [r for r in _read_rows(manifest, recognizer, corpus) if split == "all" or r["split"] == split]
    if not rows:
        raise DataError(f"{manifest}: no rows in split {split!r}; use --split train/valid/test/all")
    unknown = sorted({r["label"] for r in rows} - set(recognizer.labels))
    if unknown:
        maps = recognizer.config.label_maps
        hint = (
            f"; to map a corpus's own labels, pass --corpus with one of {sorted(maps)}" if maps and not corpus else ""
        )
        raise DataError(f"{manifest}: labels {unknown} are not in the model's label set {recognizer.labels}{hint}")
    logits = row_logits(recognizer, rows, batch_size=batch_size, workers=workers, progress=progress)
    labels = list(recognizer.labels)
    results = {c: {**m, "labels": labels} for c, m in score(logits, len(labels)).items()}
    by_corpus = score_by_corpus(logits, rows, len(labels))
    if by_corpus:
        results["by_corpus"] = {
            name: {c: {**m, "labels": labels} for c, m in scores.items()} for name, scores in by_corpus.items()
        }
    return results


def row_logits(
    recognizer: EmotionRecognizer, rows: list[dict], batch_size: int = 16, workers: int = 0, progress: bool = False
) -> dict[str, ConditionLogits]:
    """`collect_logits`' output for labelled rows, scored by the row-scoring loop (`mmemo.row_scoring.predict_rows`).

    The "logits" are log-probabilities (calibrated, so a softmax gives back the probabilities `predict-batch`
    writes): "both" from each row's fused probabilities, "text" and "audio" from its per-modality ones, for the rows
    that have that modality.

    Raises:
        DataError: a row cannot be scored (its audio does not decode, it has neither text nor audio), naming it;
            a label outside the model's set.
    """
    from mmemo.row_scoring import predict_rows

    label_to_id = {label: i for i, label in enumerate(recognizer.labels)}
    logits = {c: [] for c in CONDITIONS}
    ids = {c: [] for c in CONDITIONS}
    labels = {c: [] for c in CONDITIONS}
    for chunk, results in predict_rows(
        recognizer, rows, batch_size=batch_size, workers=workers, progress=progress, desc="evaluate"
    ):
        for i, result in zip(chunk, results):
            row = rows[i]
            if isinstance(result, str):
                raise DataError(f"row {row['id']}: {result}; `mmemo data check` finds every such row")
            named = {"both": result.probabilities, **result.per_modality}
            for condition, probabilities in named.items():
                logits[condition].append([probabilities[label] for label in recognizer.labels])
                ids[condition].append(row["id"])
                labels[condition].append(label_to_id[row["label"]])
    with np.errstate(divide="ignore"):  # a probability that underflowed to 0 is a log-probability of -inf
        return {
            c: ConditionLogits(
                torch.from_numpy(np.log(np.array(logits[c], dtype=np.float64).reshape(-1, len(label_to_id)))),
                torch.tensor(labels[c], dtype=torch.long),
                ids[c],
            )
            for c in CONDITIONS
        }


def _read_rows(source: str | os.PathLike, recognizer: EmotionRecognizer, corpus: str | None) -> list[dict]:
    """A manifest's rows (through the model's saved label map of `corpus`), or a YAML config's pooled corpora."""
    if is_config(source):
        if corpus:
            raise ConfigError("--corpus maps a manifest's labels; a config's data.manifests bring their own maps")
        corpora = corpora_of(load_config(source).data)
        saved = recognizer.config.label_maps
        # A model trained on pooled corpora knows its maps; scoring a corpus through other ones changes which rows
        # count and what they are called, so say so (a model without maps was not pooled: any map is the user's).
        differ = [c.name for c in corpora if saved and saved.get(c.name, {}) != c.label_map]
        if differ:
            warnings.warn(
                f"{source}: the label maps of {', '.join(differ)} differ from the ones the model was trained with "
                f"({saved}); the scores use the config's. Give the training config to score as trained"
            )
        return read_corpora(corpora)
    if corpus is None:
        return read_lone_manifest(source)
    rows = read_manifest(source)
    maps = recognizer.config.label_maps
    if corpus not in maps:
        raise ConfigError(
            f"--corpus {corpus!r}: the model has no label map by that name; it has "
            + (", ".join(sorted(maps)) if maps else "none (it was not trained on data.manifests with label maps)")
            + "; a corpus whose labels were not mapped in training needs no --corpus"
        )
    # The saved map covers the whole training corpus; a manifest of part of it (one session, the test speakers)
    # may lack some of its labels, which is no typo here: apply the entries its rows carry.
    present = {row["label"] for row in rows}
    return relabel(rows, Corpus(str(source), corpus, {k: v for k, v in maps[corpus].items() if k in present}))
