"""The training recipe in plain PyTorch: setup → loss step → train → evaluate → save.

`train(cfg)` writes a run folder:

    runs/NAME/
      config.yaml            the resolved config
      metrics.jsonl          one line per epoch: train loss, validation scores per condition
      model/                 the best checkpoint (by validation UA on text+audio), loadable with from_pretrained
      report.md              test scores for text+audio, text-only and audio-only
      confusion_matrix.png   test confusion matrix, text+audio
      training_curves.png    loss and validation UA per epoch
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mmemo.config import Config
from mmemo.data.dataset import BucketBatchSampler, Collator, EmotionDataset, padding_ratio
from mmemo.data.manifest import label_set, read_manifest
from mmemo.data.text import train_wordpiece
from mmemo.errors import ConfigError, DataError
from mmemo.inference import EmotionRecognizer, move_batch
from mmemo.metrics import CONDITIONS, classification_metrics, format_table
from mmemo.modality_dropout import build_strategy
from mmemo.model import EmotionModel, build_encoders, count_parameters, cross_entropy


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

    @property
    def model(self) -> EmotionModel:
        return self.recognizer.model


def setup(cfg: Config) -> Run:
    """Read the data, build tokenizer, feature extractor, model, loaders, optimizer and schedule.

    Raises:
        ConfigError: no manifest is configured, or the output folder exists and `train.overwrite` is false.
        DataError: the manifest is invalid, a split is empty, or valid/test hold labels that train lacks.
    """
    if not cfg.data.manifest:
        raise ConfigError("data.manifest is empty; set it in the config or pass data.manifest=PATH")
    out_dir = Path(cfg.train.output_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not cfg.train.overwrite:
        raise ConfigError(f"output folder {out_dir} already exists; pass train.overwrite=true to replace its "
                          "contents or choose another train.output_dir=...")
    seed_everything(cfg.train.seed)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)

    rows = read_manifest(cfg.data.manifest)
    splits = {name: [r for r in rows if r["split"] == name] for name in ("train", "valid", "test")}
    for name in ("train", "valid"):
        if not splits[name]:
            raise DataError(f"{cfg.data.manifest}: the {name} split is empty; every run needs train and valid rows")
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.labels = list(model_cfg.labels) or label_set(splits["train"])
    for name, split_rows in splits.items():
        unknown = sorted({r["label"] for r in split_rows} - set(model_cfg.labels))
        if unknown:
            raise DataError(f"{cfg.data.manifest}: {name} split has labels {unknown} that are not in the label set "
                            f"{model_cfg.labels}; fix the rows or set model.labels")

    tokenizer = load_tokenizer(model_cfg, [r["text"] for r in splits["train"]])
    feature_extractor = load_feature_extractor(model_cfg)
    text_model, audio_model = build_encoders(model_cfg, vocab_size=len(tokenizer))
    model = EmotionModel(model_cfg, len(model_cfg.labels), text_model, audio_model).to(device)
    recognizer = EmotionRecognizer(model, tokenizer, feature_extractor, model_cfg)

    label_to_id = {label: i for i, label in enumerate(model_cfg.labels)}
    collator = Collator(tokenizer, feature_extractor, model_cfg.max_text_tokens)
    loaders = {name: make_loader(split_rows, label_to_id, cfg, collator, train=name == "train", device=device)
               for name, split_rows in splits.items() if split_rows}

    optimizer = make_optimizer(model, cfg, device)
    total_steps = cfg.train.epochs * len(loaders["train"])
    scheduler = _warmup_linear_decay(optimizer, int(cfg.train.warmup_ratio * total_steps), total_steps)
    generator = torch.Generator().manual_seed(cfg.train.seed)
    return Run(cfg, recognizer, loaders, optimizer, scheduler, build_strategy(cfg.train.modality_dropout), device,
               out_dir, generator)


def loss_step(run: Run, batch: dict, progress: float) -> torch.Tensor:
    """Apply modality dropout, run the model on one batch and return the cross-entropy loss."""
    keep_text, keep_audio = run.strategy(batch["text_present"], batch["audio_present"], progress, run.generator)
    batch = move_batch(batch, run.device, non_blocking=True)
    with _autocast(run):
        logits = run.model(
            batch["text"] if keep_text.any() else None, batch["audio"] if keep_audio.any() else None,
            keep_text, keep_audio,
        )["logits"]
    return cross_entropy(logits, batch["labels"], run.cfg.train.label_smoothing)


def train(cfg: Config) -> dict:
    """Train, keep the best checkpoint by validation UA, evaluate it on test and write the run folder.

    Returns:
        {"out_dir", "model_dir", "best_epoch", "valid": scores, "test": scores or None}; scores map
        condition ("both", "text", "audio") → metrics.
    """
    run = setup(cfg)
    run.out_dir.mkdir(parents=True, exist_ok=True)
    cfg_to_save = copy.deepcopy(cfg)
    cfg_to_save.model = run.recognizer.config
    cfg_to_save.save(run.out_dir / "config.yaml")
    log_path = run.out_dir / "metrics.jsonl"
    log_path.write_text("")
    model_dir = run.out_dir / "model"
    _print_header(run)

    best_ua, best_epoch, best_state, history, stale = -1.0, -1, None, [], 0
    steps_per_epoch = len(run.loaders["train"])
    for epoch in range(cfg.train.epochs):
        start = time.time()
        train_loss = train_epoch(run, epoch, steps_per_epoch)
        valid = evaluate(run.model, run.loaders["valid"], run.device, len(run.recognizer.labels))
        record = {"epoch": epoch + 1, "train_loss": train_loss, "seconds": round(time.time() - start, 2),
                  "lr": run.scheduler.get_last_lr()[-1],
                  **{f"valid_{c}_{k}": valid[c][k] for c in valid for k in ("ua", "wa", "macro_f1")}}
        history.append(record)
        with open(log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        improved = valid["both"]["ua"] > best_ua
        tqdm.write(f"epoch {epoch + 1}: loss {train_loss:.4f}  valid UA both {valid['both']['ua']:.3f} "
                   f"text {valid['text']['ua']:.3f} audio {valid['audio']['ua']:.3f}{'  *' if improved else ''}")
        if improved:
            best_ua, best_epoch, stale = valid["both"]["ua"], epoch + 1, 0
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in run.model.state_dict().items()}
            run.recognizer.save_pretrained(model_dir)
        else:
            stale += 1
            if cfg.train.patience and stale >= cfg.train.patience:
                tqdm.write(f"early stop: no better validation UA for {stale} epochs")
                break

    run.model.load_state_dict(best_state)
    valid = evaluate(run.model, run.loaders["valid"], run.device, len(run.recognizer.labels))
    test = evaluate(run.model, run.loaders["test"], run.device, len(run.recognizer.labels)) if "test" in run.loaders else None
    write_report(run.out_dir, cfg, run.recognizer.labels, history, best_epoch, valid, test)
    return {"out_dir": run.out_dir, "model_dir": model_dir, "best_epoch": best_epoch, "valid": valid, "test": test}


def train_epoch(run: Run, epoch: int, steps_per_epoch: int) -> float:
    """One pass over the training loader; returns the mean loss."""
    run.model.train()
    loader = run.loaders["train"]
    loader.batch_sampler.set_epoch(epoch)
    loader.dataset.set_epoch(epoch)
    total, count = 0.0, 0
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{run.cfg.train.epochs}", leave=False, disable=not run.cfg.train.progress)
    for step, batch in enumerate(bar):
        progress = (epoch * steps_per_epoch + step) / max(1, run.cfg.train.epochs * steps_per_epoch)
        loss = loss_step(run, batch, progress)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if run.cfg.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.train.grad_clip)
        run.optimizer.step()
        run.scheduler.step()
        total, count = total + loss.item(), count + 1
        bar.set_postfix(loss=f"{total / count:.3f}")
    return total / max(count, 1)


@torch.inference_mode()
def evaluate(model: EmotionModel, loader: DataLoader, device: torch.device, num_labels: int) -> dict:
    """Score a loader under three conditions: text+audio, text-only and audio-only.

    Each batch is encoded once and fused three ways. A row without text counts only in "both" and
    "audio"; a row without audio only in "both" and "text".

    Returns:
        {"both": metrics, "text": metrics, "audio": metrics}, each from `classification_metrics`.
    """
    model.eval()
    gold = {c: [] for c in CONDITIONS}
    pred = {c: [] for c in CONDITIONS}
    for batch in loader:
        batch = move_batch(batch, device)
        text_enc = model.encode_text(batch["text"]) if batch["text"] is not None else None
        audio_enc = model.encode_audio(batch["audio"]) if batch["audio"] is not None else None
        tp, ap = batch["text_present"], batch["audio_present"]
        views = {"both": (text_enc, audio_enc, tp, ap, tp | ap),
                 "text": (text_enc, None, tp, None, tp), "audio": (None, audio_enc, None, ap, ap)}
        for cond, (t, a, t_present, a_present, rows) in views.items():
            if not rows.any():
                continue
            keep = rows.nonzero().squeeze(1)
            t = None if t is None else (t[0][keep], t[1][keep])
            a = None if a is None else (a[0][keep], a[1][keep])
            logits = model.fuse(t, a, None if t_present is None else t_present[keep],
                                None if a_present is None else a_present[keep])
            gold[cond] += batch["labels"][keep].tolist()
            pred[cond] += logits.argmax(-1).tolist()
    return {c: classification_metrics(gold[c], pred[c], num_labels) for c in CONDITIONS}


def make_loader(rows: list[dict], label_to_id: dict, cfg: Config, collator: Collator, train: bool,
                device: torch.device) -> DataLoader:
    """A DataLoader over length-bucketed batches (shuffled for training, sorted for evaluation)."""
    dataset = EmotionDataset(rows, label_to_id, cfg.model.sampling_rate, cfg.data.max_audio_seconds, train=train,
                             seed=cfg.train.seed)
    sampler = BucketBatchSampler(dataset.durations(), cfg.data.batch_size, cfg.data.max_batch_seconds,
                                 shuffle=train, seed=cfg.train.seed)
    workers = cfg.data.num_workers
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collator, num_workers=workers,
                      pin_memory=device.type == "cuda", persistent_workers=workers > 0)


def make_optimizer(model: EmotionModel, cfg: Config, device: torch.device) -> torch.optim.AdamW:
    """AdamW with the encoders at `encoder_lr` and the head at `lr`; no weight decay on biases and norms."""
    groups = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        encoder = name.startswith(("text_encoder.model.", "audio_encoder.model."))
        decay = param.ndim > 1 and "norm" not in name.lower()
        key = (encoder, decay)
        groups.setdefault(key, {"params": [], "lr": cfg.train.encoder_lr if encoder else cfg.train.lr,
                                "weight_decay": cfg.train.weight_decay if decay else 0.0})["params"].append(param)
    return torch.optim.AdamW(list(groups.values()), fused=device.type == "cuda")


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
    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=cfg.sampling_rate, padding_value=0.0,
                                    do_normalize=True, return_attention_mask=True)


def write_report(out_dir: Path, cfg: Config, labels: list[str], history: list[dict], best_epoch: int,
                 valid: dict, test: dict | None) -> None:
    """report.md, confusion_matrix.png and training_curves.png in the run folder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    final = test or valid
    split = "test" if test else "valid"
    lines = [f"# mmemo run: {out_dir.name}", "", f"Manifest: `{cfg.data.manifest}`; labels: {', '.join(labels)}; "
             f"best epoch {best_epoch} of {len(history)} (by validation UA, text+audio).", "",
             format_table(valid, "## Validation"), "", format_table(final, f"## {split.capitalize()}")
             if test else "", "", "![confusion matrix](confusion_matrix.png)", "",
             "![training curves](training_curves.png)", ""]
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


def resolve_device(name: str) -> torch.device:
    """"auto" → cuda when available, else cpu; anything else as given (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but no CUDA device is available; use train.device=cpu")
    return device


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
    tqdm.write(f"mmemo train: {sizes} rows, labels {run.recognizer.labels}, "
               f"{count_parameters(run.model) / 1e6:.2f}M parameters "
               f"({count_parameters(run.model, trainable_only=True) / 1e6:.2f}M trainable), device {run.device}, "
               f"padding ratio {pad:.2f}, modality dropout {run.cfg.train.modality_dropout}")
