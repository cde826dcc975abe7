"""Evaluate a saved model on a manifest split under the three conditions."""

from __future__ import annotations

import os

import torch

from mmemo.builders import make_loader
from mmemo.config import Config, DataConfig
from mmemo.data.manifest import read_manifest
from mmemo.distributed import resolve_device
from mmemo.errors import DataError
from mmemo.inference import EmotionRecognizer
from mmemo.train import evaluate


def evaluate_manifest(
    model_dir: str | os.PathLike,
    manifest: str | os.PathLike,
    split: str = "test",
    batch_size: int = 16,
    device: str = "auto",
    int8: bool = False,
) -> dict:
    """Score the model in `model_dir` on one split of `manifest` ("all" for every row).

    With `int8` the model's linear layers are quantized first (CPU only), as `from_pretrained(..., int8=True)`.

    Returns:
        {"both": metrics, "text": metrics, "audio": metrics} (see `mmemo.metrics.classification_metrics`).

    Raises:
        DataError: the split is empty, or it holds labels the model does not know.
    """
    recognizer = EmotionRecognizer.from_pretrained(
        model_dir, device="cpu" if int8 else resolve_device(device), int8=int8
    )
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
    with torch.inference_mode():
        return evaluate(recognizer.model, loader, recognizer.device, len(recognizer.labels))
