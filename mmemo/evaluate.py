"""Evaluate a saved model on a manifest split under the three conditions."""

from __future__ import annotations

import os

import torch
from tqdm.auto import tqdm

from mmemo.config import Config, DataConfig
from mmemo.data.manifest import read_manifest
from mmemo.errors import DataError
from mmemo.inference import EmotionRecognizer
from mmemo.train import evaluate, make_loader


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
    with torch.inference_mode():
        results = evaluate(recognizer.model, batches, recognizer.device, len(recognizer.labels))
    return {c: {**m, "labels": list(recognizer.labels)} for c, m in results.items()}
