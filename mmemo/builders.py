"""Builders for a training run: the recipe's settings check, data splits, recognizer, loaders, optimizer, schedule.

`mmemo.train.setup` calls these in order; evaluation (`mmemo.evaluate`) and the training benchmark
(`mmemo bench train`) call the same ones so that they load, batch and optimise exactly as training does.
"""

from __future__ import annotations

import copy
import hashlib
import os
import random
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from mmemo.config import Config
from mmemo.data.audio import audio_duration
from mmemo.data.augment import Augmenter
from mmemo.data.dataset import BucketBatchSampler, Collator, EmotionDataset
from mmemo.data.manifest import label_set
from mmemo.data.pool import corpora_of, corpus_shares, read_corpora, warn_partial_labels
from mmemo.data.text import train_wordpiece
from mmemo.distil import check_distillation
from mmemo.encoders import build_encoders
from mmemo.errors import ConfigError, DataError, ModelLoadError
from mmemo.inference import EmotionRecognizer
from mmemo.model import EmotionModel


def check_settings(cfg: Config, resume: bool) -> None:
    """Refuse a missing manifest or an existing run folder before any data is read (every value was checked when
    the config loaded)."""
    for corpus in corpora_of(cfg.data):
        if not Path(corpus.path).is_file():
            key = "data.manifest" if cfg.data.manifest else "data.manifests"
            which = f" (corpus {corpus.name!r}):" if corpus.name else ""
            raise DataError(
                f"{key}{which} {Path(corpus.path).resolve()} does not exist ({cfg.path_origin(key)}); "
                "fix the path, or make the manifest with `mmemo synth` or `mmemo prepare`"
            )
    check_distillation(cfg.train)
    out_dir = Path(cfg.train.output_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (cfg.train.overwrite or resume):
        raise ConfigError(
            f"output folder {out_dir} already exists; resume it with --resume, pass "
            "train.overwrite=true to replace its contents, or choose another train.output_dir=..."
        )


def load_splits(cfg: Config) -> dict[str, list[dict]]:
    """The corpora's rows (label-mapped, see `mmemo.data.pool`) by split, after the bad-audio check; train and
    valid must not be empty."""
    rows = drop_unreadable(read_corpora(corpora_of(cfg.data)), cfg)
    where = data_name(cfg)
    empty = [r["id"] for r in rows if not r["audio"] and not r["text"].strip()]
    if empty:
        raise DataError(
            f"{where}: {len(empty)} row(s) have neither text nor audio ({', '.join(empty[:5])}"
            f"{', ...' if len(empty) > 5 else ''}); give each row a transcript or an audio file"
        )
    splits = {name: [r for r in rows if r["split"] == name] for name in ("train", "valid", "test")}
    for name in ("train", "valid"):
        if not splits[name]:
            raise DataError(f"{where}: the {name} split is empty; every run needs train and valid rows")
    if not cfg.model.labels:
        warn_partial_labels(rows)
    return splits


def data_name(cfg: Config) -> str:
    """The run's data in words for messages and reports: the manifest, or the pooled corpora's names."""
    return cfg.data.manifest or "corpora " + ", ".join(c.name for c in corpora_of(cfg.data))


def label_maps(cfg: Config) -> dict[str, dict]:
    """{corpus: label map} of the corpora that map labels: what `model.label_maps` keeps with the model."""
    return {c.name: dict(c.label_map) for c in corpora_of(cfg.data) if c.label_map}


def build_recognizer(
    model_cfg, splits: dict[str, list[dict]], device: torch.device, label_maps: dict | None = None
) -> EmotionRecognizer:
    """A fresh recognizer: label set (config or training labels), label maps (`label_maps`, the corpora's),
    tokenizer, feature extractor and model."""
    model_cfg = copy.deepcopy(model_cfg)
    model_cfg.labels = list(model_cfg.labels) or label_set(splits["train"])
    # Always the maps the data was read with: a `model.label_maps` in the config (a run's saved config.yaml run
    # again with other maps or one manifest) would claim maps this training never applied.
    model_cfg.label_maps = dict(label_maps or {})
    tokenizer = load_tokenizer(model_cfg, [r["text"] for r in splits["train"]])
    feature_extractor = load_feature_extractor(model_cfg)
    text_model, audio_model = build_encoders(model_cfg, vocab_size=len(tokenizer))
    model = EmotionModel(model_cfg, len(model_cfg.labels), text_model, audio_model).to(device)
    return EmotionRecognizer(model, tokenizer, feature_extractor, model_cfg)


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
            f"{data_name(cfg)}: {len(bad)} row(s) with bad audio: {listing}{more}. Run `mmemo data "
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
    augmenter: Augmenter | None = None,
    pooled: np.ndarray | None = None,
) -> DataLoader:
    """A DataLoader over length-bucketed batches (shuffled for training, sorted for evaluation).

    Under DDP each rank trains on its own share of the training batches; evaluation loaders are not sharded.
    `augmenter` (training loaders only) augments the clips and, for a log-mel tower, masks their features.
    `pooled`: a frozen tower's pooled states of these rows (`pooled_tables`), used instead of decoding audio.
    """
    augmenter = augmenter if train else None
    dataset = EmotionDataset(
        rows,
        label_to_id,
        cfg.model.sampling_rate,
        cfg.data.max_audio_seconds,
        train=train,
        seed=cfg.train.seed,
        skip_bad=cfg.data.on_bad_sample == "skip",
        cache_dir=cfg.data.cache_dir or None,
        acoustic=cfg.model.acoustic_normalization if cfg.model.acoustic_features else None,
        augment=augmenter,
        pooled=pooled,
        pooled_speaker=pooled is not None and cfg.model.acoustic_normalization == "speaker",
    )
    groups = shares = None
    if train and cfg.data.corpus_sampling != "natural":
        groups, shares = corpus_shares(rows, corpora_of(cfg.data), cfg.data.corpus_sampling)
    # A frozen tower's pooled clip is one token: nothing to pad, so no length buckets. Sorted by duration, a batch
    # would gather the long emotions (sad, bored) or the short ones (angry): EmoDB 0.928 against 0.934 audio-only UA.
    durations = dataset.durations() if pooled is None else [0.0] * len(rows)  # all equal: the jitter shuffles
    sampler = BucketBatchSampler(
        durations,
        cfg.data.batch_size,
        cfg.data.max_batch_seconds if pooled is None else 0.0,
        shuffle=train,
        seed=cfg.train.seed,
        rank=rank if train else 0,
        world_size=world_size if train else 1,
        groups=groups,
        shares=shares,
    )
    workers = cfg.data.num_workers
    # Its own generator: a DataLoader otherwise draws from the global RNG each epoch, which would make a
    # resumed run's dropout masks differ from an uninterrupted run's.
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collator.for_training(augmenter) if augmenter is not None else collator,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(cfg.train.seed),
    )


def set_acoustic_statistics(model: EmotionModel, train_set) -> None:
    """The training clips' functionals mean and std become the model's reference for unknown speakers."""
    from mmemo.data.speakers import SpeakerProfile

    usable = train_set.has_functionals()
    if not len(usable):
        raise ConfigError(
            "model.acoustic_features needs training rows with readable audio, and the training split has none; "
            "turn model.acoustic_features off for a text-only corpus"
        )
    population = SpeakerProfile.enrol(train_set.functionals[usable])
    model.set_acoustic_statistics(torch.from_numpy(population.mean).float(), torch.from_numpy(population.std).float())


def pooled_tables(
    recognizer: EmotionRecognizer,
    splits: dict[str, list[dict]],
    cfg: Config,
    augmenter: Augmenter | None,
    set_statistics: bool = True,
) -> dict[str, np.ndarray]:
    """The pooled head's tower states per split, computed once per clip (`mmemo.data.tower_cache`).

    A frozen tower's states serve training and evaluation instead of running it (`data.tower_copies` augmented
    copies of the training clips besides the clean ones); `set_statistics` stores the clean training states'
    mean and std in the model. A tower that trains (partial fine-tuning) runs live: only its training clips' states
    under the starting weights are computed, for those statistics, and no table is returned.

    Returns:
        {split: (copies, N, layers, D)} for a frozen tower; {} otherwise (or for the frames head).
    """
    from mmemo.data.speakers import POOLED_STD_FLOOR_REL, floored_statistics
    from mmemo.data.tower_cache import pooled_table, tower_digest

    model = recognizer.model
    if model.audio_head != "pooled":
        return {}
    tower = model.audio_encoder
    frozen = not any(p.requires_grad for p in tower.parameters())
    extractor = recognizer.feature_extractor.to_json_string()
    settings = {"tower": tower_digest(tower.model, tower.hf_config.to_dict()), "layers": model.pooled_layers}
    settings["features"] = hashlib.blake2b(extractor.encode(), digest_size=16).hexdigest()

    def table(rows: list[dict], copies: int) -> np.ndarray:
        return pooled_table(
            rows,
            recognizer.pooled_states,
            settings,
            sampling_rate=cfg.model.sampling_rate,
            max_seconds=cfg.data.max_audio_seconds,
            cache_dir=cfg.data.cache_dir or None,
            copies=copies,
            augment=augmenter,
            skip_bad=cfg.data.on_bad_sample == "skip",
            progress=cfg.train.progress,
        )

    if frozen:
        tables = {name: table(rows, cfg.data.tower_copies * (name == "train")) for name, rows in splits.items() if rows}
    else:
        tables = {"train": table(splits["train"], 0)}
    if set_statistics:
        clean = tables["train"][0]
        clean = clean[np.isfinite(clean).all(axis=(1, 2))]
        mean, std = floored_statistics(clean.reshape(len(clean), -1).astype(np.float64), POOLED_STD_FLOOR_REL)
        model.set_pooled_statistics(
            torch.from_numpy(mean.reshape(clean.shape[1:])).float(),
            torch.from_numpy(std.reshape(clean.shape[1:])).float(),
        )
    return tables if frozen else {}


def make_optimizer(model: EmotionModel, cfg: Config, device: torch.device) -> torch.optim.AdamW:
    """AdamW: the head at `lr`, encoder layers at `encoder_lr` scaled by `layer_decay` per layer below the top
    (embeddings and the CNN front end count as layer 0); no weight decay on biases and norms."""
    encoders = {"text_encoder": model.text_encoder, "audio_encoder": model.audio_encoder}
    groups = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr = cfg.train.lr
        tower, _, inner = name.partition(".")
        layer = encoders[tower].layer_of(inner) if tower in encoders else None
        if layer is not None:
            lr = cfg.train.encoder_lr * cfg.train.layer_decay ** (encoders[tower].num_layers - layer)
        decay = cfg.train.weight_decay if param.ndim > 1 and "norm" not in name.lower() else 0.0
        groups.setdefault((lr, decay), {"params": [], "lr": lr, "weight_decay": decay})["params"].append(param)
    return torch.optim.AdamW(list(groups.values()), fused=device.type == "cuda")


def load_tokenizer(cfg, train_texts: list[str]):
    """The configured tokenizer, the text encoder's own, or a WordPiece trained on the training transcripts."""
    name = cfg.tokenizer or cfg.text_encoder
    if name:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(name, trust_remote_code=cfg.trust_remote_code)
    return train_wordpiece(train_texts, cfg.tokenizer_vocab_size)


def load_feature_extractor(cfg):
    """The audio encoder's feature extractor, or for a tower built from a config a standard one at the model rate:
    Whisper's log-mel front end (`num_mel_bins` bins) or wav2vec2's (normalise, zero-pad)."""
    from transformers import AutoFeatureExtractor, Wav2Vec2FeatureExtractor, WhisperFeatureExtractor

    if cfg.audio_encoder and not _lacks_preprocessor(cfg.audio_encoder):
        return AutoFeatureExtractor.from_pretrained(cfg.audio_encoder, trust_remote_code=cfg.trust_remote_code)
    if cfg.audio_encoder:  # converted and encoder-only checkpoints often lack one: derive it from the model config
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(cfg.audio_encoder, trust_remote_code=cfg.trust_remote_code)
        if config.model_type == "whisper":
            return WhisperFeatureExtractor(feature_size=config.num_mel_bins, sampling_rate=cfg.sampling_rate)
        if config.model_type in WAVEFORM_TOWERS:
            return Wav2Vec2FeatureExtractor(
                feature_size=1,
                sampling_rate=cfg.sampling_rate,
                padding_value=0.0,
                do_normalize=True,
                return_attention_mask=getattr(config, "feat_extract_norm", "layer") == "layer",
            )
        raise ModelLoadError(
            f"{cfg.audio_encoder} has no preprocessor_config.json, and a {config.model_type} model's feature "
            "extractor cannot be derived from its config: save one beside it (AutoFeatureExtractor.from_pretrained"
            "(<the original checkpoint>).save_pretrained(folder)) or use a checkpoint that has it"
        )
    if cfg.audio_config.get("model_type") == "whisper":
        return WhisperFeatureExtractor(
            feature_size=cfg.audio_config.get("num_mel_bins", 80), sampling_rate=cfg.sampling_rate
        )
    return Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=cfg.sampling_rate,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=True,
    )


# Waveform towers whose feature extractor is Wav2Vec2FeatureExtractor (normalise, zero-pad).
WAVEFORM_TOWERS = ("wav2vec2", "wav2vec2-conformer", "hubert", "wavlm", "data2vec-audio", "unispeech", "unispeech-sat")


def _lacks_preprocessor(name: str) -> bool:
    """A local checkpoint folder without preprocessor_config.json (hub ids are asked for theirs as usual)."""
    folder = Path(name).expanduser()
    return folder.is_dir() and not (folder / "preprocessor_config.json").is_file()


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_threads(cfg: Config) -> None:
    """torch's CPU threads: one, with deterministic kernels, under `train.deterministic`; else `train.threads`."""
    if cfg.train.deterministic:
        use_deterministic_algorithms()
    elif cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)


def check_labels(splits: dict[str, list[dict]], labels: list[str], where: str) -> None:
    """Every split's labels must be in the model's label set; with several corpora the error names each corpus's."""
    for name, split_rows in splits.items():
        unknown: dict[str, set] = {}
        for row in split_rows:
            if row["label"] not in labels:
                unknown.setdefault(row.get("corpus") or "", set()).add(row["label"])
        if not unknown:
            continue
        found = sorted(set().union(*unknown.values()))
        by_corpus = ""
        if len({row.get("corpus") for row in split_rows}) > 1:
            by_corpus = " (" + "; ".join(f"{sorted(v)} in corpus {k!r}" for k, v in sorted(unknown.items())) + ")"
        raise DataError(
            f"{where}: {name} split has labels {found} that are not in the label set {labels}{by_corpus}; rename or "
            "drop them with the corpus's label_map in data.manifests (e.g. label_map: {excited: happy, bored: null}), "
            "fix the rows, or set model.labels"
        )


def use_deterministic_algorithms() -> None:
    """Make training bit-reproducible on one machine (`train.deterministic`): one CPU thread (a different thread
    count changes how sums are split), deterministic kernels only, and the fixed cuBLAS workspace that CUDA needs
    for them (set before cuBLAS starts). Seeds are set by `seed_everything`."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def warmup_linear_decay(optimizer, warmup: int, total: int):
    """Linear warm-up over `warmup` optimizer steps, then linear decay to 0 at `total`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
