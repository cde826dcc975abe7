"""Evaluation in one place: logits per condition over a loader, their scores, and a saved model on a manifest.

Every evaluation (each epoch's validation, the final validation and test of a run, calibration's logits,
`mmemo evaluate`, and through `train` the cross-validation and ablation runs) goes through `collect_logits`,
which classifies each batch with `EmotionModel.logits_by_condition` (encode once, fuse per condition).
The ONNX runtime keeps its own torch-free copy.
"""

from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mmemo.builders import make_loader
from mmemo.config import Config, DataConfig
from mmemo.data.manifest import read_manifest
from mmemo.errors import DataError
from mmemo.inference import EmotionRecognizer, move_batch
from mmemo.metrics import CONDITIONS, classification_metrics


@torch.inference_mode()
def collect_logits(model, loader: DataLoader, device: torch.device) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Logits and labels for every row of a loader under each condition it can serve.

    "both" scores every row with whatever it has, "text" the rows with text (text alone), "audio" the rows with
    audio (audio alone). A row without text therefore counts only in "both" and "audio"; one without audio only
    in "both" and "text".

    Args:
        model: an EmotionModel (put in eval mode here).
        loader: yields Collator batch dicts.
        device: where the model is.

    Returns:
        {condition: (logits (N, C) float32 on the CPU, labels (N,) long)}; empty tensors for a condition no row has.
    """
    model.eval()
    logits = {c: [] for c in CONDITIONS}
    labels = {c: [] for c in CONDITIONS}
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
    return {
        c: (
            torch.cat(logits[c]) if logits[c] else torch.empty(0),
            torch.cat(labels[c]) if labels[c] else torch.empty(0, dtype=torch.long),
        )
        for c in CONDITIONS
    }


def score(logits_by_condition: dict[str, tuple[torch.Tensor, torch.Tensor]], num_labels: int) -> dict:
    """Metrics per condition from `collect_logits`' output: {"both": metrics, "text": ..., "audio": ...}."""
    return {
        c: classification_metrics(labels.tolist(), logits.argmax(-1).tolist() if len(labels) else [], num_labels)
        for c, (logits, labels) in logits_by_condition.items()
    }


def evaluate(model, loader: DataLoader, device: torch.device, num_labels: int) -> dict:
    """Score a loader under three conditions: text+audio, text-only and audio-only (see `collect_logits`).

    Returns:
        {"both": metrics, "text": metrics, "audio": metrics}, each from `classification_metrics`.
    """
    return score(collect_logits(model, loader, device), num_labels)


def evaluate_manifest(
    model_dir: str | os.PathLike,
    manifest: str | os.PathLike,
    split: str = "test",
    batch_size: int = 16,
    device: str = "auto",
    int8: bool = False,
    progress: bool = True,
) -> dict:
    """Score the model in `model_dir` on one split of `manifest` ("all" for every row).

    With `int8` the model's linear layers are quantized first (CPU only), as `from_pretrained(..., int8=True)`.
    With `progress` a progress bar over batches goes to stderr when stderr is a terminal.

    Returns:
        {"both": metrics, "text": metrics, "audio": metrics} (see `mmemo.metrics.classification_metrics`), each
        with "labels": the model's label names in label-id order (the order of confusion rows and per_class lists).

    Raises:
        DataError: the split is empty, or it holds labels the model does not know.
    """
    recognizer = EmotionRecognizer.from_pretrained(model_dir, device=device, int8=int8)
    rows = [r for r in read_manifest(manifest) if split == "all" or r["split"] == split]
    if not rows:
        raise DataError(f"{manifest}: no rows in split {split!r}; use --split train/valid/test/all")
    unknown = sorted({r["label"] for r in rows} - set(recognizer.labels))
    if unknown:
        raise DataError(f"{manifest}: labels {unknown} are not in the model's label set {recognizer.labels}")
    label_to_id = {label: i for i, label in enumerate(recognizer.labels)}
    # Whole clips (no crop), sorted by length, as the training run's evaluation loader but for the crop.
    cfg = Config(
        model=recognizer.config, data=DataConfig(manifest=str(manifest), batch_size=batch_size, max_audio_seconds=0.0)
    )
    loader = make_loader(rows, label_to_id, cfg, recognizer.collator, train=False, device=recognizer.device)
    # disable=None: tqdm stays silent when stderr is not a terminal (a log file, a pipe, CI)
    batches = tqdm(loader, desc="evaluate", unit="batch", leave=False, disable=None if progress else True)
    results = evaluate(recognizer.model, batches, recognizer.device, len(recognizer.labels))
    return {c: {**m, "labels": list(recognizer.labels)} for c, m in results.items()}
