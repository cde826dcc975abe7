"""The training recipe in plain PyTorch: setup → loss step → train → evaluate → save.

`train(cfg)` writes a run folder:

    runs/NAME/
      config.yaml            the resolved config
      metrics.jsonl          one line per epoch: train loss, validation scores per condition
      model/                 the best checkpoint (by validation UA on `train.monitor`), loadable with from_pretrained
      report.md              test scores for text+audio, text-only and audio-only
      confusion_matrix.png   test confusion matrix, text+audio
      training_curves.png    loss and validation UA per epoch
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import random
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mmemo.calibration import calibrate, logits_by_condition
from mmemo.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from mmemo.config import Config
from mmemo.data.audio import audio_duration
from mmemo.data.dataset import BucketBatchSampler, Collator, EmotionDataset, padding_ratio
from mmemo.data.manifest import label_set, read_manifest
from mmemo.data.text import train_wordpiece
from mmemo.errors import ConfigError, DataError
from mmemo.inference import EmotionRecognizer, move_batch
from mmemo.metrics import CONDITION_NAMES, CONDITIONS, classification_metrics, format_table
from mmemo.modality_dropout import as_views, build_strategy
from mmemo.model import EmotionModel, build_encoders, count_parameters, cross_entropy
from mmemo.model_card import ModelCard


@dataclass
class Run:
    """Everything `setup` builds for one training run."""

    cfg: Config
    recognizer: EmotionRecognizer
    loaders: dict[str, DataLoader]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    strategy: object
    device: torch.device
    out_dir: Path
    generator: torch.Generator
    forward: torch.nn.Module  # what the loss step calls: the model, or its DDP / compiled wrapper
    rank: int = 0
    world_size: int = 1

    @property
    def model(self) -> EmotionModel:
        return self.recognizer.model

    @property
    def main(self) -> bool:
        """Rank 0: the process that logs, saves checkpoints and writes the run folder."""
        return self.rank == 0


def setup(cfg: Config, resume: bool = False) -> Run:
    """Read the data, build tokenizer, feature extractor, model, loaders, optimizer and schedule.

    Raises:
        ConfigError: an invalid setting, or the output folder exists and neither `train.overwrite` nor
            `resume` is set.
        DataError: the manifest is invalid, a split is empty, valid/test hold labels that train lacks, a row
            has neither text nor audio, or (with `data.on_bad_sample: fail`) audio files are unreadable.
    """
    _check_settings(cfg, resume)
    rank, world_size = init_distributed(cfg.train.device)
    seed_everything(cfg.train.seed)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device, rank if world_size > 1 else None)
    out_dir = Path(cfg.train.output_dir)

    splits = load_splits(cfg)
    if resume:  # the run's own tokenizer, label set and weights from its latest checkpoint
        recognizer = EmotionRecognizer.from_pretrained(latest_checkpoint(out_dir / "checkpoints") / "model", device)
    else:
        recognizer = build_recognizer(cfg.model, splits, device)
    labels = recognizer.labels
    for name, split_rows in splits.items():
        unknown = sorted({r["label"] for r in split_rows} - set(labels))
        if unknown:
            raise DataError(
                f"{cfg.data.manifest}: {name} split has labels {unknown} that are not in the label set "
                f"{labels}; fix the rows or set model.labels"
            )

    label_to_id = {label: i for i, label in enumerate(labels)}
    loaders = {
        name: make_loader(
            split_rows,
            label_to_id,
            cfg,
            recognizer.collator,
            train=name == "train",
            device=device,
            rank=rank,
            world_size=world_size,
        )
        for name, split_rows in splits.items()
        if split_rows
    }
    model = recognizer.model
    optimizer = make_optimizer(model, cfg, device)
    total_steps = cfg.train.epochs * math.ceil(len(loaders["train"]) / cfg.train.grad_accum)
    scheduler = _warmup_linear_decay(optimizer, int(cfg.train.warmup_ratio * total_steps), total_steps)
    # Each rank drops different modalities; the seed offset keeps rank 0 identical to a one-process run.
    generator = torch.Generator().manual_seed(cfg.train.seed + 1000 * rank)
    return Run(
        cfg,
        recognizer,
        loaders,
        optimizer,
        scheduler,
        build_strategy(cfg.train.modality_dropout),
        device,
        out_dir,
        generator,
        wrap_model(model, cfg, device, world_size),
        rank,
        world_size,
    )


def _check_settings(cfg: Config, resume: bool) -> None:
    if not cfg.data.manifest:
        raise ConfigError("data.manifest is empty; set it in the config or pass data.manifest=PATH")
    if cfg.train.monitor not in CONDITIONS:
        raise ConfigError(f"train.monitor must be one of {', '.join(CONDITIONS)}, got {cfg.train.monitor!r}")
    if cfg.data.on_bad_sample not in ("fail", "skip"):
        raise ConfigError(f"data.on_bad_sample must be 'fail' or 'skip', got {cfg.data.on_bad_sample!r}")
    if cfg.train.grad_accum < 1:
        raise ConfigError(f"train.grad_accum must be at least 1, got {cfg.train.grad_accum}")
    out_dir = Path(cfg.train.output_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (cfg.train.overwrite or resume):
        raise ConfigError(
            f"output folder {out_dir} already exists; resume it with --resume, pass "
            "train.overwrite=true to replace its contents, or choose another train.output_dir=..."
        )


def load_splits(cfg: Config) -> dict[str, list[dict]]:
    """The manifest's rows by split, after the bad-audio check; train and valid must not be empty."""
    rows = drop_unreadable(read_manifest(cfg.data.manifest), cfg)
    empty = [r["id"] for r in rows if not r["audio"] and not r["text"].strip()]
    if empty:
        raise DataError(
            f"{cfg.data.manifest}: {len(empty)} row(s) have neither text nor audio ({', '.join(empty[:5])}"
            f"{', ...' if len(empty) > 5 else ''}); give each row a transcript or an audio file"
        )
    splits = {name: [r for r in rows if r["split"] == name] for name in ("train", "valid", "test")}
    for name in ("train", "valid"):
        if not splits[name]:
            raise DataError(f"{cfg.data.manifest}: the {name} split is empty; every run needs train and valid rows")
    return splits


def build_recognizer(model_cfg, splits: dict[str, list[dict]], device: torch.device) -> EmotionRecognizer:
    """A fresh recognizer: label set (config or training labels), tokenizer, feature extractor and model."""
    model_cfg = copy.deepcopy(model_cfg)
    model_cfg.labels = list(model_cfg.labels) or label_set(splits["train"])
    tokenizer = load_tokenizer(model_cfg, [r["text"] for r in splits["train"]])
    feature_extractor = load_feature_extractor(model_cfg)
    text_model, audio_model = build_encoders(model_cfg, vocab_size=len(tokenizer))
    model = EmotionModel(model_cfg, len(model_cfg.labels), text_model, audio_model).to(device)
    return EmotionRecognizer(model, tokenizer, feature_extractor, model_cfg)


def loss_step(run: Run, batch: dict, progress: float) -> torch.Tensor:
    """Apply modality dropout, run the model on one batch and return the cross-entropy loss.

    A strategy that answers with several views of the batch gets the weighted mean of their losses.
    """
    views = as_views(run.strategy(batch["text_present"], batch["audio_present"], progress, run.generator))
    batch = move_batch(batch, run.device, non_blocking=True)
    any_text, any_audio = (any(bool(view[i].any()) for view in views) for i in (0, 1))
    (keep_text, keep_audio, _), *others = views
    with _autocast(run):
        out = run.forward(
            batch["text"] if any_text else None,
            batch["audio"] if any_audio else None,
            keep_text,
            keep_audio,
            views=[(t, a) for t, a, _ in others],
        )
    losses = [
        cross_entropy(logits, batch["labels"], run.cfg.train.label_smoothing)
        for logits in (out["logits"], *out.get("view_logits", ()))
    ]
    weights = [weight for _, _, weight in views]
    return sum(w * loss for w, loss in zip(weights, losses)) / sum(weights)


def train(cfg: Config, resume: bool = False) -> dict:
    """Train, keep the best checkpoint by validation UA, evaluate it on test and write the run folder.

    Args:
        cfg: the recipe.
        resume: continue the run in `cfg.train.output_dir` from its latest checkpoint (same config).

    Returns:
        {"out_dir", "model_dir", "best_epoch", "valid": scores, "test": scores or None, "skipped": bad clips
        skipped, "calibration": temperature and ECE}; scores map condition ("both", "text", "audio") → metrics.
    """
    run = setup(cfg, resume=resume)
    model_dir = run.out_dir / "model"
    log_path = run.out_dir / "metrics.jsonl"
    state = TrainState()
    if resume:
        target = latest_checkpoint(run.out_dir / "checkpoints")
        state = TrainState(**load_checkpoint(target, run.optimizer, run.scheduler, run.generator))
        if run.main:
            log_path.write_text(
                "".join(json.dumps(record) + "\n" for record in state.history)
            )  # drop unfinished epochs
            tqdm.write(f"resuming from epoch {state.epoch + 1}, batch {state.batch} (step {state.step})")
    elif run.main:
        run.out_dir.mkdir(parents=True, exist_ok=True)
        cfg_to_save = copy.deepcopy(cfg)
        cfg_to_save.model = run.recognizer.config
        cfg_to_save.save(run.out_dir / "config.yaml")
        log_path.write_text("")
    if run.main:
        _print_header(run)

    while state.epoch < cfg.train.epochs and not state.stopped:
        start = time.time()
        train_loss = train_epoch(run, state)
        end_epoch(run, state, train_loss, time.time() - start)

    _barrier(run)  # rank 0 has written the best model
    best = EmotionRecognizer.from_pretrained(model_dir, device=run.device)
    run.model.load_state_dict(best.model.state_dict())
    # Every rank holds the whole validation split, so all fit the same temperature.
    calibration = calibrate(run.recognizer, run.loaders["valid"])
    valid = evaluate(run.model, run.loaders["valid"], run.device, len(run.recognizer.labels))
    test = (
        evaluate(run.model, run.loaders["test"], run.device, len(run.recognizer.labels))
        if "test" in run.loaders
        else None
    )
    if run.main:
        # config.json gains the temperature, README.md the test scores and calibration
        card = _model_card(run, test or valid, "test" if test else "valid", calibration)
        run.recognizer.save_pretrained(model_dir, card=card)
        tqdm.write(
            f"calibration: temperature {calibration['temperature']:.3f}, validation ECE "
            f"{calibration['ece_before']:.3f} -> {calibration['ece_after']:.3f}"
        )
        write_report(run.out_dir, cfg, run.recognizer.labels, state.history, state.best_epoch, valid, test, calibration)
    _barrier(run)
    return {
        "out_dir": run.out_dir,
        "model_dir": model_dir,
        "best_epoch": state.best_epoch,
        "valid": valid,
        "test": test,
        "skipped": state.skipped,
        "calibration": calibration,
    }


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint so a killed run resumes exactly."""

    epoch: int = 0  # epochs finished
    batch: int = 0  # batches finished in the current epoch
    step: int = 0  # batches trained in all (micro-batches when accumulating gradients)
    epoch_loss: float = 0.0
    epoch_batches: int = 0
    best_ua: float = -1.0
    best_epoch: int = 0
    stale: int = 0
    stopped: bool = False
    skipped: int = 0  # bad clips skipped (data.on_bad_sample: skip) or samples dropped after running out of memory
    history: list = field(default_factory=list)


def end_epoch(run: Run, state: TrainState, train_loss: float, seconds: float) -> None:
    """Validate, log the epoch, keep the model if it is the best so far, decide on early stopping, checkpoint.

    Every rank evaluates the whole validation split with the same weights, so all reach the same decisions.
    """
    cfg = run.cfg
    valid = evaluate(run.model, run.loaders["valid"], run.device, len(run.recognizer.labels))
    record = {
        "epoch": state.epoch + 1,
        "train_loss": train_loss,
        "seconds": round(seconds, 2),
        "lr": run.scheduler.get_last_lr()[-1],
        "skipped": state.skipped,
        **{f"valid_{c}_{k}": valid[c][k] for c in valid for k in ("ua", "wa", "macro_f1")},
    }
    state.history.append(record)
    score = valid[cfg.train.monitor]["ua"]
    improved = score > state.best_ua
    if run.main:
        tqdm.write(
            f"epoch {state.epoch + 1}: loss {train_loss:.4f}  valid UA both {valid['both']['ua']:.3f} "
            f"text {valid['text']['ua']:.3f} audio {valid['audio']['ua']:.3f}{'  *' if improved else ''}"
        )
    if improved:
        state.best_ua, state.best_epoch, state.stale = score, state.epoch + 1, 0
        if run.main:
            run.recognizer.save_pretrained(run.out_dir / "model", card=_model_card(run))
    else:
        state.stale += 1
        if cfg.train.patience and state.stale >= cfg.train.patience:
            state.stopped = True
            if run.main:
                tqdm.write(f"early stop: no better validation UA for {state.stale} epochs")
    if run.main:
        with open(run.out_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
    state.epoch, state.batch, state.epoch_loss, state.epoch_batches = state.epoch + 1, 0, 0.0, 0
    _checkpoint(run, state)


def train_epoch(run: Run, state: TrainState) -> float:
    """Train from `state.batch` to the end of epoch `state.epoch`; returns the epoch's mean loss.

    Gradients of `train.grad_accum` consecutive batches are summed before each optimizer step (under DDP
    only the last of them synchronises); checkpoints fall on optimizer-step boundaries.
    """
    run.model.train()
    loader = run.loaders["train"]
    loader.batch_sampler.set_epoch(state.epoch, start=state.batch)
    loader.dataset.set_epoch(state.epoch)
    batches = len(loader.batch_sampler)
    total = run.cfg.train.epochs * batches
    accum, every = run.cfg.train.grad_accum, run.cfg.train.checkpoint_every
    bar = tqdm(
        loader,
        desc=f"epoch {state.epoch + 1}/{run.cfg.train.epochs}",
        leave=False,
        initial=state.batch,
        total=batches,
        disable=not (run.cfg.train.progress and run.main),
    )
    run.optimizer.zero_grad(set_to_none=True)
    for batch in bar:
        state.skipped += batch.pop("skipped", 0)
        boundary = (state.batch + 1) % accum == 0 or state.batch + 1 == batches
        with _no_sync(run, skip=not boundary):
            loss = _accumulate(run, batch, state.step / max(1, total), state, 1.0 / accum)
        if loss is not None:
            state.epoch_loss, state.epoch_batches = state.epoch_loss + loss * accum, state.epoch_batches + 1
            bar.set_postfix(loss=f"{state.epoch_loss / state.epoch_batches:.3f}")
        if boundary:
            _apply_gradients(run)
        state.batch, state.step = state.batch + 1, state.step + 1
        if boundary and every and state.step % every == 0 and state.batch < batches:
            _checkpoint(run, state)
    return state.epoch_loss / max(state.epoch_batches, 1)


def _optimizer_step(run: Run, batch: dict, progress: float, state: TrainState) -> float | None:
    """One optimizer step on one batch (no accumulation); returns its loss, or None if nothing trained."""
    run.optimizer.zero_grad(set_to_none=True)
    loss = _accumulate(run, batch, progress, state, 1.0)
    _apply_gradients(run)
    return loss


def _accumulate(run: Run, batch: dict, progress: float, state: TrainState, weight: float) -> float | None:
    """Add one batch's gradients (scaled by `weight`); None for an empty batch or one lost to memory."""
    if not batch["labels"].numel():
        return None
    return _backward_splitting(run, batch, progress, state, weight)


def _apply_gradients(run: Run) -> None:
    if run.cfg.train.grad_clip:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.train.grad_clip)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)


def _backward_splitting(run: Run, batch: dict, progress: float, state: TrainState, weight: float) -> float | None:
    """Backward one batch; on out-of-memory split it in halves (down to single samples, skipped with a warning
    and counted) and accumulate their gradients, so no sample is silently lost."""
    try:
        loss = loss_step(run, batch, progress)
        (loss * weight).backward()
        return loss.item() * weight
    except torch.OutOfMemoryError:
        size = len(batch["ids"])
        if run.device.type == "cuda":
            torch.cuda.empty_cache()
        if size == 1:
            warnings.warn(f"out of memory on a single sample ({batch['ids'][0]}); skipped it")
            state.skipped += 1
            return None
        warnings.warn(f"out of memory on a batch of {size}; retrying it as two halves")
        halves = [split_batch(batch, part) for part in (slice(0, size // 2), slice(size // 2, size))]
        losses = [_backward_splitting(run, half, progress, state, weight * len(half["ids"]) / size) for half in halves]
        kept = [loss for loss in losses if loss is not None]
        return sum(kept) if kept else None


def split_batch(batch: dict, part: slice) -> dict:
    """The samples `part` of a collated batch (tensors, nested dicts and lists sliced along the batch axis)."""

    def cut(value):
        if isinstance(value, dict):
            return {k: cut(v) for k, v in value.items()}
        if isinstance(value, (torch.Tensor, list)):
            return value[part]
        return value

    return cut(batch)


def _model_card(
    run: Run, scores: dict | None = None, split: str = "test", calibration: dict | None = None
) -> ModelCard:
    """The model card's fields: the data summary of this run's splits, and the final scores once known."""
    splits = {name: loader.dataset.rows for name, loader in run.loaders.items()}
    return ModelCard.from_splits(
        splits, manifest=run.cfg.data.manifest, test=scores, test_split=split, calibration=calibration
    )


def _checkpoint(run: Run, state: TrainState) -> None:
    if run.main:
        save_checkpoint(
            run.out_dir / "checkpoints",
            state.step,
            run.recognizer,
            run.optimizer,
            run.scheduler,
            run.generator,
            dataclasses.asdict(state),
        )
    _barrier(run)


def evaluate(model: EmotionModel, loader: DataLoader, device: torch.device, num_labels: int) -> dict:
    """Score a loader under three conditions: text+audio, text-only and audio-only.

    Each batch is encoded once and fused three ways. A row without text counts only in "both" and
    "audio"; a row without audio only in "both" and "text".

    Returns:
        {"both": metrics, "text": metrics, "audio": metrics}, each from `classification_metrics`.
    """
    return {
        c: classification_metrics(labels.tolist(), logits.argmax(-1).tolist() if len(labels) else [], num_labels)
        for c, (logits, labels) in logits_by_condition(model, loader, device).items()
    }


def drop_unreadable(rows: list[dict], cfg: Config) -> list[dict]:
    """Check every audio file exists and has a readable header before training starts.

    With `data.on_bad_sample: fail` (the default) any bad file is a DataError listing them; with `skip` the
    rows are dropped with a warning (and clips that fail to decode later are skipped and counted).
    """
    bad = [
        (row, "missing file" if not Path(row["audio"]).is_file() else "unreadable audio")
        for row in rows
        if row["audio"] and not audio_duration(row["audio"])
    ]
    if not bad:
        return rows
    listing = "; ".join(f"{row['id']} ({why}: {row['audio']})" for row, why in bad[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    if cfg.data.on_bad_sample == "fail":
        raise DataError(
            f"{cfg.data.manifest}: {len(bad)} row(s) with bad audio: {listing}{more}. Run `mmemo data "
            "check` to list them (and --write-clean a fixed manifest), or set data.on_bad_sample=skip"
        )
    warnings.warn(f"skipping {len(bad)} row(s) with bad audio: {listing}{more}")
    bad_ids = {row["id"] for row, _ in bad}
    return [row for row in rows if row["id"] not in bad_ids]


def make_loader(
    rows: list[dict],
    label_to_id: dict,
    cfg: Config,
    collator: Collator,
    train: bool,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """A DataLoader over length-bucketed batches (shuffled for training, sorted for evaluation).

    Under DDP each rank trains on its own share of the training batches; evaluation loaders are not sharded.
    """
    dataset = EmotionDataset(
        rows,
        label_to_id,
        cfg.model.sampling_rate,
        cfg.data.max_audio_seconds,
        train=train,
        seed=cfg.train.seed,
        skip_bad=cfg.data.on_bad_sample == "skip",
        cache_dir=cfg.data.cache_dir or None,
    )
    sampler = BucketBatchSampler(
        dataset.durations(),
        cfg.data.batch_size,
        cfg.data.max_batch_seconds,
        shuffle=train,
        seed=cfg.train.seed,
        rank=rank if train else 0,
        world_size=world_size if train else 1,
    )
    workers = cfg.data.num_workers
    # Its own generator: a DataLoader otherwise draws from the global RNG each epoch, which would make a
    # resumed run's dropout masks differ from an uninterrupted run's.
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collator,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(cfg.train.seed),
    )


def make_optimizer(model: EmotionModel, cfg: Config, device: torch.device) -> torch.optim.AdamW:
    """AdamW: the head at `lr`, encoder layers at `encoder_lr` scaled by `layer_decay` per layer below the top
    (embeddings and the CNN front end count as layer 0); no weight decay on biases and norms."""
    depths = {
        "text_encoder": len(model.text_encoder.model.encoder.layer),
        "audio_encoder": len(model.audio_encoder.model.encoder.layers),
    }
    groups = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr = cfg.train.lr
        tower = name.split(".")[0]
        if name.startswith(("text_encoder.model.", "audio_encoder.model.")):
            depth = depths[tower]
            lr = cfg.train.encoder_lr * cfg.train.layer_decay ** (depth - _layer_index(name, depth))
        decay = cfg.train.weight_decay if param.ndim > 1 and "norm" not in name.lower() else 0.0
        groups.setdefault((lr, decay), {"params": [], "lr": lr, "weight_decay": decay})["params"].append(param)
    return torch.optim.AdamW(list(groups.values()), fused=device.type == "cuda")


def _layer_index(name: str, depth: int) -> int:
    """1..depth for transformer layer i (0-based i-1), 0 below them, depth for anything above (final norms)."""
    match = re.search(r"\.encoder\.layers?\.(\d+)\.", name)
    if match:
        return int(match.group(1)) + 1
    below = ("embeddings", "feature_extractor", "feature_projection", "masked_spec_embed", "pos_conv_embed")
    return 0 if any(part in name for part in below) else depth


def load_tokenizer(cfg, train_texts: list[str]):
    """The configured tokenizer, the text encoder's own, or a WordPiece trained on the training transcripts."""
    name = cfg.tokenizer or cfg.text_encoder
    if name:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(name, trust_remote_code=cfg.trust_remote_code)
    return train_wordpiece(train_texts, cfg.tokenizer_vocab_size)


def load_feature_extractor(cfg):
    """The audio encoder's feature extractor, or a standard wav2vec2 one (normalise, zero-pad) at the model rate."""
    from transformers import AutoFeatureExtractor, Wav2Vec2FeatureExtractor

    if cfg.audio_encoder:
        return AutoFeatureExtractor.from_pretrained(cfg.audio_encoder, trust_remote_code=cfg.trust_remote_code)
    return Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=cfg.sampling_rate,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=True,
    )


def write_report(
    out_dir: Path,
    cfg: Config,
    labels: list[str],
    history: list[dict],
    best_epoch: int,
    valid: dict,
    test: dict | None,
    calibration: dict,
) -> None:
    """report.md, confusion_matrix.png and training_curves.png in the run folder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    final = test or valid
    split = "test" if test else "valid"
    lines = [
        f"# mmemo run: {out_dir.name}",
        "",
        f"Manifest: `{cfg.data.manifest}`; labels: {', '.join(labels)}; "
        f"best epoch {best_epoch} of {len(history)} (by validation UA, {CONDITION_NAMES[cfg.train.monitor]}).",
        "",
        format_table(valid, "## Validation"),
        "",
        format_table(final, f"## {split.capitalize()}") if test else "",
        "",
        f"Calibration (temperature scaling on validation, text+audio): T = "
        f"{calibration['temperature']:.3f}, expected calibration error {calibration['ece_before']:.3f} → "
        f"{calibration['ece_after']:.3f}.",
        "",
        "![confusion matrix](confusion_matrix.png)",
        "",
        "![training curves](training_curves.png)",
        "",
    ]
    (out_dir / "report.md").write_text("\n".join(lines), encoding="utf-8")

    fig, ax = plt.subplots(figsize=(5, 4.5))
    ConfusionMatrixDisplay(np.array(final["both"]["confusion"]), display_labels=labels).plot(ax=ax, colorbar=False)
    ax.set_title(f"{split}, text+audio (UA {final['both']['ua']:.3f})")
    fig.tight_layout()
    fig.savefig(out_dir / "confusion_matrix.png", dpi=120)
    plt.close(fig)

    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(epochs, [h["train_loss"] for h in history], marker="o")
    left.set(title="training loss", xlabel="epoch")
    for cond in CONDITIONS:
        right.plot(epochs, [h[f"valid_{cond}_ua"] for h in history], marker="o", label=cond)
    right.set(title="validation UA", xlabel="epoch", ylim=(0, 1))
    right.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "training_curves.png", dpi=120)
    plt.close(fig)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """ "auto" → cuda when available, else cpu; anything else as given (checked). Under torchrun, a "cuda" or
    "auto" device becomes this process's GPU (LOCAL_RANK)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and local_rank is not None:
        name = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but no CUDA device is available; use train.device=cpu")
    return device


def init_distributed(device: str) -> tuple[int, int]:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1); returns (rank, world size).

    NCCL on GPUs, gloo on CPUs. A one-process run does nothing.
    """
    import os

    import torch.distributed as dist

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1
    if not dist.is_initialized():
        gpu = device != "cpu" and torch.cuda.is_available()
        dist.init_process_group("nccl" if gpu else "gloo")
    return dist.get_rank(), world_size


def wrap_model(model: EmotionModel, cfg: Config, device: torch.device, world_size: int) -> torch.nn.Module:
    """Apply gradient checkpointing, torch.compile and DDP as configured; returns what the loss step calls.

    DDP needs `find_unused_parameters`: modality dropout (a whole tower unused in a step) and wav2vec2's
    layerdrop leave parameters without gradients.
    """
    if cfg.train.gradient_checkpointing:
        model.text_encoder.model.gradient_checkpointing_enable()
        model.audio_encoder.model.gradient_checkpointing_enable()
    forward = model
    if cfg.train.compile:
        model.audio_encoder.model.config.mask_time_prob = 0.0  # host-side SpecAugment masks break the graph
        model.audio_encoder.model.config.mask_feature_prob = 0.0
        forward = torch.compile(model)
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(
            forward, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    return forward


def _no_sync(run: Run, skip: bool):
    """DDP's no_sync() for micro-batches before an accumulation boundary; a no-op otherwise."""
    import contextlib

    return run.forward.no_sync() if skip and run.world_size > 1 else contextlib.nullcontext()


def _barrier(run: Run) -> None:
    if run.world_size > 1:
        import torch.distributed as dist

        dist.barrier()


def _autocast(run: Run):
    enabled = run.device.type == "cuda" and run.cfg.train.bf16
    return torch.autocast(device_type=run.device.type, dtype=torch.bfloat16, enabled=enabled)


def _warmup_linear_decay(optimizer, warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _print_header(run: Run) -> None:
    sizes = {name: len(loader.dataset) for name, loader in run.loaders.items()}
    sampler = run.loaders["train"].batch_sampler
    pad = padding_ratio(sampler.batches(), sampler.durations)
    tqdm.write(
        f"mmemo train: {sizes} rows, labels {run.recognizer.labels}, "
        f"{count_parameters(run.model) / 1e6:.2f}M parameters "
        f"({count_parameters(run.model, trainable_only=True) / 1e6:.2f}M trainable), device {run.device}, "
        f"padding ratio {pad:.2f}, modality dropout {run.cfg.train.modality_dropout}"
    )
