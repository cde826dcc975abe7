"""The training recipe in plain PyTorch: setup → loss step → train → evaluate → save.

`train(cfg)` writes a run folder:

    runs/NAME/
      config.yaml            the resolved config (of the last resume, when --resume changed it)
      config.original.yaml   the config the run started with, kept when a resume changed it
      metrics.jsonl          one line per epoch: train loss, validation scores per condition
      model/                 the best checkpoint (by validation UA on `train.monitor`), loadable with from_pretrained
      report.md              test scores for text+audio, text-only and audio-only
      confusion_matrix.png   test confusion matrix, text+audio
      training_curves.png    loss and validation UA per epoch
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mmemo.backward import backward_splitting
from mmemo.builders import (
    build_recognizer,
    check_labels,
    check_settings,
    data_name,
    label_maps,
    load_splits,
    make_loader,
    make_optimizer,
    pooled_tables,
    seed_everything,
    set_acoustic_statistics,
    set_threads,
    warmup_linear_decay,
)
from mmemo.calibration import calibrate
from mmemo.checkpoint import TrainState, latest_checkpoint, load_checkpoint, save_state
from mmemo.config import Config
from mmemo.data.augment import build_augmenter
from mmemo.data.dataset import move_batch
from mmemo.device import resolve_device
from mmemo.distil import Distillation, build_distillation, check_teacher
from mmemo.distributed import barrier, init_distributed, no_sync, wrap_model
from mmemo.evaluate import collect_logits, monitored_ua, score, score_by_corpus
from mmemo.inference import EmotionRecognizer
from mmemo.modality_dropout import as_views, build_strategy
from mmemo.model import EmotionModel, cross_entropy
from mmemo.model_card import ModelCard
from mmemo.progress import progress_bar
from mmemo.refit import adopt_refit, check_resumable, refit_config
from mmemo.report import print_epoch, print_header, save_results, save_run_config


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
    refit: bool = False  # training on train + valid for a fixed number of epochs: the last epoch is kept
    distillation: Distillation | None = None  # the teacher's logits and the mixed loss (train.teacher)

    @property
    def model(self) -> EmotionModel:
        return self.recognizer.model

    @property
    def main(self) -> bool:
        """Rank 0: the process that logs, saves checkpoints and writes the run folder."""
        return self.rank == 0


def setup(cfg: Config, resume: bool = False, refit: bool = False) -> Run:
    """Read the data, build tokenizer, feature extractor, model, loaders, optimizer and schedule.

    With `refit` the training loader also holds the valid rows (see `train.refit`).

    Raises:
        ConfigError: an invalid setting, or the output folder exists and neither `train.overwrite` nor
            `resume` is set.
        DataError: the manifest is invalid, a split is empty, valid/test hold labels that train lacks, a row
            has neither text nor audio, or (with `data.on_bad_sample: fail`) audio files are unreadable.
    """
    check_settings(cfg, resume)
    augmenter = build_augmenter(cfg.data.augment)
    rank, world_size = init_distributed(cfg.train.device)
    seed_everything(cfg.train.seed)
    set_threads(cfg)
    local_rank = int(os.environ.get("LOCAL_RANK", rank)) if world_size > 1 else None  # the GPU on this node
    device = resolve_device(cfg.train.device, local_rank=local_rank)
    out_dir = Path(cfg.train.output_dir)

    splits = load_splits(cfg)
    if refit:
        splits["train"] = splits["train"] + splits["valid"]
    if resume:  # the run's own tokenizer, label set and weights from its latest checkpoint
        recognizer = EmotionRecognizer.from_pretrained(latest_checkpoint(out_dir / "checkpoints") / "model", device)
    else:
        recognizer = build_recognizer(cfg.model, splits, device, label_maps(cfg))
    check_labels(splits, recognizer.labels, data_name(cfg))
    distillation = None
    if cfg.train.teacher:
        check_teacher(cfg.train.teacher, splits)
        distillation = build_distillation(cfg, splits["train"], recognizer.labels, device)
    label_to_id = {label: i for i, label in enumerate(recognizer.labels)}
    pooled = pooled_tables(recognizer, splits, cfg, augmenter, set_statistics=not resume)
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
            augmenter=augmenter,  # make_loader uses it for the training split only
            pooled=pooled.get(name),
        )
        for name, split_rows in splits.items()
        if split_rows
    }
    model = recognizer.model
    if cfg.model.acoustic_features and not resume:
        set_acoustic_statistics(model, loaders["train"].dataset)
    optimizer = make_optimizer(model, cfg, device)
    total_steps = cfg.train.epochs * math.ceil(len(loaders["train"]) / cfg.train.grad_accum)
    scheduler = warmup_linear_decay(optimizer, int(cfg.train.warmup_ratio * total_steps), total_steps)
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
        refit,
        distillation,
    )


def loss_step(run: Run, batch: dict, progress: float) -> torch.Tensor:
    """Apply modality dropout, run the model on one batch and return the cross-entropy loss (mixed with the
    teacher's when distilling, `mmemo.distil`).

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
    outputs, smoothing = (out["logits"], *out.get("view_logits", ())), run.cfg.train.label_smoothing
    if run.distillation is not None:
        losses = [run.distillation.loss(y, batch, t, a, smoothing) for y, (t, a, _) in zip(outputs, views)]
    else:
        losses = [cross_entropy(logits, batch["labels"], smoothing) for logits in outputs]
    weights = [weight for _, _, weight in views]
    return sum(w * loss for w, loss in zip(weights, losses)) / sum(weights)


def train(cfg: Config, resume: bool = False, refit_of: dict | None = None) -> dict:
    """Train, keep the best checkpoint by validation UA, evaluate it on test and write the run folder.

    With `train.refit`, a second run in `<output_dir>/refit/` then trains from the same seed on train + valid for
    the best epoch count and keeps its last epoch; its model replaces `<output_dir>/model` and its test scores
    are the result's (the validation scores stay the first run's: the refit trains on those rows).

    Args:
        cfg: the recipe.
        resume: continue the run in `cfg.train.output_dir` from its latest checkpoint. A larger
            `train.epochs` extends the run: the LR schedule is rebuilt for the new total and continues from the
            resumed step; config.yaml is rewritten (the original kept as config.original.yaml). A killed refit
            starts again from its beginning; a run whose refit has finished is not resumed (`check_resumable`).
        refit_of: the first run's result when this is its refit (train + valid, the last epoch kept, the first
            run's calibration temperature: the valid rows were trained on).

    Returns:
        {"out_dir", "model_dir", "best_epoch", "valid": scores, "test": scores or None, "skipped": bad clips
        skipped, "calibration": temperature and ECE, "refit_epochs": epochs of the refit or None}; scores map
        condition ("both", "text", "audio") → metrics.
    """
    if resume:
        check_resumable(cfg.train.output_dir)
    run = setup(cfg, resume=resume, refit=refit_of is not None)
    model_dir = run.out_dir / "model"
    log_path = run.out_dir / "metrics.jsonl"
    state = TrainState()
    if resume:
        target = latest_checkpoint(run.out_dir / "checkpoints")
        state = TrainState(**load_checkpoint(target, run.optimizer, run.scheduler, run.generator))
        if run.main:  # drop unfinished epochs from the log
            log_path.write_text("".join(json.dumps(record) + "\n" for record in state.history))
            tqdm.write(f"resuming from epoch {state.epoch + 1}, batch {state.batch} (step {state.step})")
    elif run.main:
        run.out_dir.mkdir(parents=True, exist_ok=True)
        log_path.write_text("")
    if run.main:
        save_run_config(run.out_dir, run.cfg, run.recognizer.config, resume)
        print_header(run)

    while state.epoch < cfg.train.epochs and not state.stopped:
        start = time.time()
        train_loss = train_epoch(run, state)
        end_epoch(run, state, train_loss, time.time() - start)

    if refit_of is None:  # back to the best epoch, which rank 0 has written
        barrier(run.world_size)
        best = EmotionRecognizer.from_pretrained(model_dir, device=run.device)
        run.model.load_state_dict(best.model.state_dict())
    # Every rank holds the whole validation split, so all fit the same temperature. One pass gives the logits for
    # both calibration and the validation scores (the temperature changes no argmax).
    num_labels = len(run.recognizer.labels)
    if refit_of is None:
        valid_logits = collect_logits(run.model, run.loaders["valid"], run.device)
        calibration = calibrate(run.recognizer, valid_logits["both"].logits, valid_logits["both"].labels)
        valid = score(valid_logits, num_labels)
        by_corpus = {"valid": score_by_corpus(valid_logits, run.loaders["valid"].dataset.rows, num_labels)}
    else:  # the refit trained on the valid rows: the first run's temperature and scores on them stand
        calibration = refit_of["calibration"]
        run.recognizer.temperature = calibration["temperature"]
        valid, by_corpus = refit_of["valid"], {"valid": refit_of["valid_by_corpus"]}
    test = None
    if "test" in run.loaders:
        test_logits = collect_logits(run.model, run.loaders["test"], run.device)
        test = score(test_logits, num_labels)
        by_corpus["test"] = score_by_corpus(test_logits, run.loaders["test"].dataset.rows, num_labels)
    if run.main:
        first_best = refit_of["best_epoch"] if refit_of else None
        save_results(run, state, valid, test, calibration, by_corpus, first_best)
    barrier(run.world_size)
    result = {
        "out_dir": run.out_dir,
        "model_dir": model_dir,
        "best_epoch": state.best_epoch,
        "valid": valid,
        "test": test,
        "valid_by_corpus": by_corpus["valid"],
        "test_by_corpus": by_corpus.get("test", {}),
        "skipped": state.skipped,
        "calibration": calibration,
        "refit_epochs": None,
    }
    if cfg.train.refit and refit_of is None:  # train again on train + valid for the best (or a set) epoch count
        epochs = cfg.train.refit_epochs or state.best_epoch
        refit_cfg = refit_config(cfg, epochs)
        if run.main:
            tqdm.write(f"refit: training on train + valid for {epochs} epochs in {refit_cfg.train.output_dir}")
        result = adopt_refit(result, train(refit_cfg, refit_of=result), run.main, epochs)
        barrier(run.world_size)  # rank 0 has moved the refit's model into model/
    return result


def end_epoch(run: Run, state: TrainState, train_loss: float, seconds: float) -> None:
    """Validate, log the epoch, keep the model if it is the best so far, decide on early stopping, checkpoint.

    Every rank evaluates the whole validation split with the same weights, so all reach the same decisions.
    """
    cfg = run.cfg
    logits = collect_logits(run.model, run.loaders["valid"], run.device)
    valid = score(logits, len(run.recognizer.labels))
    by_corpus = score_by_corpus(logits, run.loaders["valid"].dataset.rows, len(run.recognizer.labels))
    record = {
        "epoch": state.epoch + 1,
        "train_loss": train_loss,
        "seconds": round(seconds, 2),
        "lr": run.scheduler.get_last_lr()[-1],
        "skipped": state.skipped,
        **{f"valid_{c}_{k}": valid[c][k] for c in valid for k in ("ua", "wa", "macro_f1")},
        **{f"valid_{name}_{c}_ua": scores[c]["ua"] for name, scores in by_corpus.items() for c in scores},
    }
    state.history.append(record)
    monitored = monitored_ua(valid, by_corpus, cfg.train.monitor, cfg.train.monitor_average)
    improved = run.refit or monitored > state.best_ua  # a refit keeps its last epoch
    if run.main:
        print_epoch(state.epoch + 1, train_loss, valid, by_corpus, cfg.train.monitor, improved)
    if improved:
        state.best_ua, state.best_epoch, state.stale = monitored, state.epoch + 1, 0
        if run.main and not run.refit:  # a refit keeps its last epoch, which it holds: save_results writes it
            run.recognizer.save_pretrained(
                run.out_dir / "model", card=ModelCard.from_loaders(run.loaders, data_name(run.cfg))
            )
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
    save_state(run, state)


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
    bar = progress_bar(
        loader,
        enabled=run.cfg.train.progress and run.main,
        desc=f"epoch {state.epoch + 1}/{run.cfg.train.epochs}",
        leave=False,
        initial=state.batch,
        total=batches,
    )
    run.optimizer.zero_grad(set_to_none=True)
    for batch in bar:
        state.skipped += batch.pop("skipped", 0)
        boundary = (state.batch + 1) % accum == 0 or state.batch + 1 == batches
        with no_sync(run.forward, run.world_size, skip=not boundary):
            loss = _accumulate(run, batch, state.batches_seen / max(1, total), state, 1.0 / accum)
        if loss is not None:
            state.epoch_loss, state.epoch_batches = state.epoch_loss + loss * accum, state.epoch_batches + 1
            bar.set_postfix(loss=f"{state.epoch_loss / state.epoch_batches:.3f}")
        if boundary:
            _apply_gradients(run)
            state.step += 1
        state.batch, state.batches_seen = state.batch + 1, state.batches_seen + 1
        if boundary and every and state.step % every == 0 and state.batch < batches:
            save_state(run, state)
    return state.epoch_loss / max(state.epoch_batches, 1)


def optimizer_step(run: Run, batch: dict, progress: float, state: TrainState) -> float | None:
    """One optimizer step on one batch (no accumulation); returns its loss, or None if nothing trained."""
    run.optimizer.zero_grad(set_to_none=True)
    loss = _accumulate(run, batch, progress, state, 1.0)
    _apply_gradients(run)
    return loss


def _accumulate(run: Run, batch: dict, progress: float, state: TrainState, weight: float) -> float | None:
    """Add one batch's gradients (scaled by `weight`); None for an empty batch or one lost to memory."""
    if not batch["labels"].numel():
        return None
    loss, skipped = backward_splitting(lambda part: loss_step(run, part, progress), batch, weight, run.device)
    state.skipped += skipped
    return loss


def _apply_gradients(run: Run) -> None:
    if run.cfg.train.grad_clip:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.train.grad_clip)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)


def _autocast(run: Run):
    enabled = run.device.type == "cuda" and run.cfg.train.bf16
    return torch.autocast(device_type=run.device.type, dtype=torch.bfloat16, enabled=enabled)
