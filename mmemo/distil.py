"""Knowledge distillation: a student learns a trained teacher's temperature-softened probabilities besides the
gold labels, in every condition the teacher scores (text+audio, text alone, audio alone).

`mmemo distil TEACHER_DIR CONFIG` is `mmemo train CONFIG train.teacher=TEACHER_DIR`: the student is CONFIG's model
(the from-scratch recipe's small tower and acoustic token, a pruned pretrained tower, anything), trained and saved
as an ordinary model folder. Before training, the teacher scores every training row once, the way `mmemo evaluate`
scores a manifest (whole clips; its own tokenizer, feature extractor and statistics; a frozen pooled tower's states
from the tower cache in `data.cache_dir`), each row as given, text alone and audio alone (`collect_logits`).
A training step then asks, for each sample of each modality-dropout view, which modalities the view left it and
takes the teacher's logits for that condition. Per sample, with T = `train.distil_temperature` and
w = `train.distil_weight`:

    loss = (1 - w) · CE(student, gold label) + w · T² · KL(softmax(teacher / T) ‖ softmax(student / T))

(T² keeps the soft term's gradients on the scale of the hard one's, Hinton et al. 2015). The teacher's
calibration temperature is not used: the soft targets are its raw logits over T.

The teacher must not have trained on the student's test speakers. `check_teacher` reads the teacher's run folder
(the model folder's parent: `config.yaml` and the manifest it names) and refuses a teacher that trained or
validated on a test row or speaker of the student's; `mmemo cv CONFIG --teacher TEACHER_CV_DIR` takes each fold's
teacher from the same fold of the teacher's cross-validation and checks that every row has the same split in both.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mmemo.config import Config, DataConfig, TrainConfig
from mmemo.errors import ConfigError, DataError
from mmemo.model import cross_entropy

CONDITION_INDEX = {"both": 0, "text": 1, "audio": 2}  # the teacher's logits table: (rows, conditions, labels)


def check_distillation(cfg: TrainConfig) -> None:
    """Check that the teacher named is a folder, before any data is read (the temperature and weight are checked
    when the config loads).

    Raises:
        ConfigError: the teacher folder is missing.
    """
    if not cfg.teacher:
        return
    if not Path(cfg.teacher).is_dir():
        raise ConfigError(
            f"train.teacher: {Path(cfg.teacher).resolve()} is not a folder; give a trained model folder "
            "(e.g. runs/NAME/model)"
        )


class Distillation:
    """The teacher's logits per training row and condition, and the mixed loss the training step uses.

    Args:
        ids: the rows' ids, in the order of `logits`.
        logits: (N, 3, C) the teacher's logits per row for text+audio, text alone and audio alone (NaN where the
            row lacks that modality), columns in the student's label order.
        temperature: T, softening both distributions.
        weight: w, the teacher's share of the loss (1 - w is the gold labels').
    """

    def __init__(self, ids: list[str], logits: np.ndarray, temperature: float, weight: float):
        self.index = {row_id: i for i, row_id in enumerate(ids)}
        self.logits = torch.as_tensor(logits, dtype=torch.float32)
        self.temperature, self.weight = temperature, weight

    def loss(
        self, logits: torch.Tensor, batch: dict, keep_text: torch.Tensor, keep_audio: torch.Tensor, smoothing: float
    ) -> torch.Tensor:
        """The mixed loss of one view of a batch: student logits (B, C), the batch (`ids`, `labels`) and the
        view's masks (B,) of the modalities each sample keeps."""
        try:
            rows = torch.tensor([self.index[row_id] for row_id in batch["ids"]])
        except KeyError as e:
            raise DataError(f"distillation: the teacher has no logits for row {e.args[0]!r}") from None
        text, audio = keep_text.cpu().bool(), keep_audio.cpu().bool()
        condition = torch.where(text & audio, 0, torch.where(text, 1, 2))  # (B,)
        teacher = self.logits[rows, condition].to(logits.device)  # (B, C)
        if torch.isnan(teacher).any():
            raise DataError("distillation: a sample kept a modality its row does not have (the teacher has no logits)")
        t = self.temperature
        soft = F.kl_div(
            F.log_softmax(logits.float() / t, dim=-1),
            F.log_softmax(teacher / t, dim=-1),
            reduction="batchmean",
            log_target=True,
        )
        hard = cross_entropy(logits, batch["labels"], smoothing) if self.weight < 1 else logits.new_zeros(())
        return (1 - self.weight) * hard + self.weight * t * t * soft


def build_distillation(cfg: Config, rows: list[dict], labels: list[str], device: torch.device) -> Distillation:
    """The teacher's logits for `rows` (the student's training rows) in the student's label order.

    Raises:
        DataError: the teacher's label set differs from the student's, or it trained on the student's test data
            (`check_teacher`).
    """
    logits, ids, teacher_labels = teacher_logits(cfg.train.teacher, rows, cfg.data, device)
    if sorted(teacher_labels) != sorted(labels):
        raise DataError(
            f"train.teacher {cfg.train.teacher} classifies {teacher_labels}, the student {labels}; a teacher must "
            "have the student's label set (set model.labels, or map the corpus's labels to the teacher's)"
        )
    order = [teacher_labels.index(label) for label in labels]
    return Distillation(ids, logits[:, :, order], cfg.train.distil_temperature, cfg.train.distil_weight)


def teacher_logits(
    teacher: str | os.PathLike, rows: list[dict], data: DataConfig, device: torch.device
) -> tuple[np.ndarray, list[str], list[str]]:
    """Score `rows` with the model in `teacher` in every condition, as `mmemo evaluate` does (whole clips).

    Returns:
        (logits (N, 3, C) in CONDITION_INDEX order, NaN where a row lacks that condition; the N row ids; the
        teacher's labels in logit order).
    """
    from mmemo.builders import make_loader, pooled_tables
    from mmemo.evaluate import collect_logits
    from mmemo.inference import EmotionRecognizer

    recognizer = EmotionRecognizer.from_pretrained(teacher, device=device)
    model = recognizer.model
    cfg = Config(
        model=recognizer.config,
        data=DataConfig(
            batch_size=16, max_audio_seconds=0.0, cache_dir=data.cache_dir, on_bad_sample=data.on_bad_sample
        ),
        train=TrainConfig(progress=False),
    )
    frozen = model.audio_head == "pooled" and not any(p.requires_grad for p in model.audio_encoder.parameters())
    pooled = pooled_tables(recognizer, {"train": rows}, cfg, None, set_statistics=False) if frozen else {}
    label_to_id = {label: i for i, label in enumerate(recognizer.labels)}
    loader = make_loader(rows, label_to_id, cfg, recognizer.collator, False, device, pooled=pooled.get("train"))
    by_condition = collect_logits(model, loader, device)
    ids = [row["id"] for row in rows]
    index = {row_id: i for i, row_id in enumerate(ids)}
    table = np.full((len(rows), len(CONDITION_INDEX), len(recognizer.labels)), np.nan, dtype=np.float32)
    for condition, (logits, _, condition_ids) in by_condition.items():
        for row_id, row_logits in zip(condition_ids, logits.numpy()):
            table[index[row_id], CONDITION_INDEX[condition]] = row_logits
    return table, ids, list(recognizer.labels)


def teacher_rows(teacher: str | os.PathLike) -> list[dict] | None:
    """The rows (with their splits) of the run that trained the model folder `teacher`, read from the run folder's
    config.yaml (the model folder's parent); None when there is no such run folder or its data is gone."""
    from mmemo.config import load_config
    from mmemo.data.pool import corpora_of, read_corpora

    config = Path(teacher).resolve().parent / "config.yaml"
    if not config.is_file():
        return None
    try:
        return read_corpora(corpora_of(load_config(config).data))
    except (ConfigError, DataError, OSError):
        return None


def check_teacher(teacher: str | os.PathLike, splits: dict[str, list[dict]]) -> None:
    """Refuse a teacher that trained (or validated) on a test row or test speaker of the student's `splits`.

    A teacher whose run folder cannot be read is used with a warning: nothing shows what it trained on.

    Raises:
        DataError: the teacher's training or validation rows include student test rows or speakers.
    """
    test = splits.get("test") or []
    if not test:
        return
    seen = teacher_rows(teacher)
    if seen is None:
        warnings.warn(
            f"train.teacher {teacher}: no run folder beside it (config.yaml and its manifest), so nothing shows "
            "which speakers it trained on; the student's test scores are only fair if none of them is a test speaker"
        )
        return
    trained = [row for row in seen if row["split"] in ("train", "valid")]  # a refit trains on valid rows too
    rows = sorted({row["id"] for row in trained} & {row["id"] for row in test})
    speakers = sorted(
        {r["speaker"] for r in trained if r.get("speaker")} & {r["speaker"] for r in test if r.get("speaker")}
    )
    if rows or speakers:
        what = f"{len(rows)} of the student's test rows (e.g. {rows[0]})" if rows else f"test speakers {speakers}"
        raise DataError(
            f"train.teacher {teacher} trained on {what}: its probabilities would carry the test set into the "
            "student. Use a teacher trained without these speakers (with `mmemo cv --teacher`, the same fold of a "
            "teacher cross-validated on the same folds)"
        )


def fold_teacher(teacher_cv: str | os.PathLike, fold: str, seed: int, fold_rows: list[dict]) -> Path:
    """The model of fold `fold` in the teacher's cross-validation folder (seed `seed`, else its lowest seed; an
    absolute path), checked to have been trained on exactly this fold's split.

    Raises:
        DataError: the folder has no such fold or trained model, or a row's split differs between the teacher's
            fold and the student's (other folds, another manifest).
    """
    fold_dir = Path(teacher_cv) / f"fold-{fold}"
    runs = sorted(fold_dir.glob("seed-*/model/config.json"), key=lambda p: int(p.parent.parent.name[5:]))
    if not runs:
        raise DataError(
            f"--teacher {teacher_cv}: no trained model in {fold_dir}/seed-*/model; cross-validate the teacher on "
            "the same manifest and folds first (mmemo cv TEACHER_CONFIG MANIFEST --out-dir ...)"
        )
    chosen = next((p for p in runs if p.parent.parent.name == f"seed-{seed}"), runs[0]).parent.resolve()
    seen = teacher_rows(chosen)
    if seen is None:
        raise DataError(f"--teacher: {chosen.parent}/config.yaml or the manifest it names cannot be read")
    theirs = {row["id"]: row["split"] for row in seen}
    differ = [row["id"] for row in fold_rows if theirs.get(row["id"]) != row["split"]]
    if differ or len(theirs) != len(fold_rows):
        example = f" (e.g. {differ[0]}: {theirs.get(differ[0], 'absent')} there)" if differ else ""
        raise DataError(
            f"--teacher: fold {fold} of {teacher_cv} was not split like this fold: {len(differ)} row(s) differ"
            f"{example}, {len(theirs)} rows there and {len(fold_rows)} here; cross-validate the teacher on the "
            "same manifest with the same --folds"
        )
    return chosen
