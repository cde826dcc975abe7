"""Evaluate a saved model on a manifest split under the three conditions."""

from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader

from mmemo.data.dataset import BucketBatchSampler, EmotionDataset
from mmemo.data.manifest import read_manifest
from mmemo.errors import DataError
from mmemo.inference import EmotionRecognizer
from mmemo.train import evaluate, resolve_device


def evaluate_manifest(model_dir: str | os.PathLike, manifest: str | os.PathLike, split: str = "test",
                      batch_size: int = 16, device: str = "auto") -> dict:
    """Score the model in `model_dir` on one split of `manifest` ("all" for every row).

    Returns:
        {"both": metrics, "text": metrics, "audio": metrics} (see `mmemo.metrics.classification_metrics`).

    Raises:
        DataError: the split is empty, or it holds labels the model does not know.
    """
    recognizer = EmotionRecognizer.from_pretrained(model_dir, device=resolve_device(device))
    rows = [r for r in read_manifest(manifest) if split == "all" or r["split"] == split]
    if not rows:
        raise DataError(f"{manifest}: no rows in split {split!r}; use --split train/valid/test/all")
    unknown = sorted({r["label"] for r in rows} - set(recognizer.labels))
    if unknown:
        raise DataError(f"{manifest}: labels {unknown} are not in the model's label set {recognizer.labels}")
    label_to_id = {label: i for i, label in enumerate(recognizer.labels)}
    dataset = EmotionDataset(rows, label_to_id, recognizer.config.sampling_rate, max_seconds=0)
    sampler = BucketBatchSampler(dataset.durations(), batch_size, shuffle=False)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=recognizer.collator)
    with torch.inference_mode():
        return evaluate(recognizer.model, loader, recognizer.device, len(recognizer.labels))
