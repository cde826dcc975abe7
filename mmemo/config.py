"""Configuration: three flat dataclasses (model, data, train) under one `Config`; YAML in, resolved YAML out.

Presets live in `configs/*.yaml`. Everything is checked when the config loads, before any data is read: an
unknown or misspelt key is an error that names the closest valid key, a value of the wrong type names the expected
type, a choice field (typed `Literal[...]`) names its choices and the closest one, a number out of its range
(`CHECKS`, in `mmemo.config_checks`) names the range, and the modality-dropout strategy and the augmentation are
built once as a dry run.

Overrides (`load_config(path, ["train.epochs=3"])`, or `key=value` words on the command line) are parsed as
YAML. A dotted key reaches into a mapping: `model.audio_config.hidden_size=32` sets one key of
`audio_config` and keeps the others; `train.modality_dropout.name=exclusive` switches the strategy and drops
the old strategy's parameters (they would not fit the new one), so give new ones after it
(`train.modality_dropout.p_both=0.6`).

Relative paths, one rule: `data.manifest`, each `data.manifests[i].path`, `data.cache_dir` and
`data.augment.noise_dir` written in a YAML file resolve against that file's folder, so a config can sit next to its data and be run from anywhere. Two exceptions resolve against
the working directory: the presets shipped in `configs/` (their `data/...` paths mean the project you run
them from) and paths given as command-line overrides (they are typed relative to where you are).
`train.output_dir` always stays relative to the working directory: runs go where you run. `load_config`
returns these paths absolute (`~` expanded), so the `config.yaml` a run writes works from any folder, and
`Config.path_origin(key)` says which rule produced a path (for error messages).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from mmemo.config_checks import check_across, check_field, check_fields, check_type, field_types
from mmemo.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class ModelConfig:
    """What to build: encoders, fusion head, label set."""

    # A BERT-family checkpoint (hub id or folder); None builds a BertModel from `text_config`.
    text_encoder: str | None = None
    text_config: dict = field(default_factory=dict)
    # A wav2vec2- or Whisper-family checkpoint (hub id or folder; of Whisper only the encoder is used); None builds
    # a Wav2Vec2Model from `audio_config`, or a Whisper encoder when it says `model_type: whisper`.
    audio_encoder: str | None = None
    audio_config: dict = field(default_factory=dict)
    # Tokenizer checkpoint; None uses the text encoder's, or trains a WordPiece tokenizer when that is None too.
    tokenizer: str | None = None
    tokenizer_vocab_size: int = 2000
    fusion: Literal["cross_attention", "concat"] = "cross_attention"
    fusion_dim: int = 128
    fusion_heads: int = 4
    fusion_layers: int = 1
    # pooling of each stream after fusion; "first" is the text's [CLS] token, the audio's acoustic token (else frame 1)
    text_pooling: Literal["attentive", "mean", "first"] = "attentive"
    audio_pooling: Literal["attentive", "mean", "first"] = "attentive"
    # Average the audio stream's frames in groups of this many before fusion: fewer, coarser audio tokens make the
    # fusion head cheaper (4 turns Whisper's 20 ms frames into 80 ms tokens); 1 keeps every frame.
    audio_downsample: int = 1
    # How the audio tower reaches the fusion head. "frames": its frame states (a learned softmax mix of all hidden
    # layers), projected. "pooled": each of `pooled_layers` mean-pooled over the clip, standardised per dimension
    # (the training clips' statistics, or the speaker's with acoustic_normalization: speaker) and mapped linearly
    # to one audio token: the head for a frozen pretrained tower, whose emotion cues are small shifts of a large
    # offset that every clip shares (docs/pretrained.md); with the tower frozen its states are computed once.
    audio_head: Literal["frames", "pooled"] = "frames"
    # The hidden states the pooled head reads: 0 is the tower's input embeddings, i its layer i; [] reads all.
    pooled_layers: list = field(default_factory=list)
    dropout: float = 0.1
    freeze_feature_encoder: bool = True
    freeze_text_layers: int = 0  # lower N transformer layers (and embeddings) frozen; -1 freezes all
    freeze_audio_layers: int = 0
    # Keep only the first N layers of the pretrained Whisper tower (0: all). Its hidden states keep their numbers
    # (pooled_layers mean the same layers pruned or not) and the saved model has N layers (docs/compression.md).
    audio_layers: int = 0
    max_text_tokens: int = 128
    # Utterance acoustic statistics (mmemo.data.acoustic: pitch, energy, MFCC, voice quality, pauses) of the whole
    # clip, standardised and projected to one extra token at the front of the audio stream.
    acoustic_features: bool = False
    # "global": standardise with the training clips' statistics (saved with the model); "speaker": with each
    # speaker's own (training: the manifest's speaker column; inference: an enrolled SpeakerProfile, else global).
    # It applies to the utterance-level statistics: the acoustic functionals and the pooled head's tower states.
    acoustic_normalization: Literal["global", "speaker"] = "global"
    sampling_rate: int = 16000
    trust_remote_code: bool = False
    labels: list = field(default_factory=list)  # filled from the training data when empty
    # {corpus: {label: shared label or null}}: the label maps of the run's data.manifests, kept with the model
    # (training sets it from data.manifests; a value given here is replaced)
    label_maps: dict = field(default_factory=dict)

    def __post_init__(self):
        check_fields(self, "model")


@dataclass
class DataConfig:
    """Where the data is and how clips are cut."""

    manifest: str = ""
    # Several corpora in one run instead of `manifest`: [{path, name, label_map, weight}] (mmemo/data/pool.py),
    # e.g. [{path: data/iemocap.jsonl, label_map: {excited: happy, frustrated: null}}, {path: data/emodb.jsonl}]
    manifests: list = field(default_factory=list)
    # natural (every row once an epoch), equal (each corpus alike), weighted (by data.manifests[i].weight)
    corpus_sampling: Literal["natural", "equal", "weighted"] = "natural"
    max_audio_seconds: float = 8.0  # longer training clips are randomly cropped, evaluation clips centre-cropped
    batch_size: int = 16
    max_batch_seconds: float = 0.0  # > 0: batches are filled by total audio seconds instead of batch_size
    num_workers: int = 0
    # fail: stop before training on unreadable audio; skip: drop and count such clips
    on_bad_sample: Literal["fail", "skip"] = "fail"
    cache_dir: str = ""  # decoded-audio cache folder (e.g. ~/.cache/mmemo/audio); empty: decode every time
    # Training-time augmentation, e.g. {speed: [0.9, 1.1], noise_snr: [10, 30]}; {} is off. Keys and defaults:
    # mmemo/data/augment.py. Never applied at evaluation.
    augment: dict = field(default_factory=dict)
    # A frozen tower under model.audio_head: pooled: augmented copies of each training clip whose tower states are
    # computed (and cached) besides the clean one's; each epoch draws one of the 1 + N per clip. 0: clean clips
    # only (data.augment then does not apply to that tower's input).
    tower_copies: int = 0

    def __post_init__(self):
        check_fields(self, "data")


@dataclass
class TrainConfig:
    """How to train."""

    output_dir: str = "runs/default"
    overwrite: bool = False
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    epochs: int = 10
    lr: float = 1e-3  # fusion head and classifier
    encoder_lr: float = 5e-5  # both encoders
    layer_decay: float = 1.0  # layer-wise LR decay: encoder layer i of L trains at encoder_lr * layer_decay**(L - i)
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    grad_clip: float = 1.0
    label_smoothing: float = 0.0
    patience: int = 5  # epochs without a better validation UA before stopping; 0 disables early stopping
    monitor: Literal["both", "text", "audio"] = "both"  # the validation condition whose UA picks the best epoch
    # with several corpora, the monitored UA is over all validation rows ("pooled") or the mean of each corpus's
    # UA ("corpus_mean": a large corpus does not pick the checkpoint alone; a corpus without validation rows for
    # the monitored condition has no say)
    monitor_average: Literal["pooled", "corpus_mean"] = "pooled"
    bf16: bool = True  # autocast on CUDA; ignored on CPU
    grad_accum: int = 1  # micro-batches per optimizer step
    gradient_checkpointing: bool = False  # recompute encoder activations in backward: less memory, ~30% slower
    compile: bool = False  # torch.compile the model (SpecAugment masking is turned off: it draws masks on the host)
    modality_dropout: dict = field(default_factory=lambda: {"name": "independent", "p_text": 0.3, "p_audio": 0.3})
    threads: int = 0  # torch CPU threads; 0 leaves torch's default
    # bit-identical weights on one machine: one CPU thread, deterministic kernels (an op without one is an
    # error), CUBLAS_WORKSPACE_CONFIG on CUDA; slower
    deterministic: bool = False
    # Write the training state (weights, optimizer, progress) at each epoch's end, for --resume. Off for runs that
    # are never resumed: each of `mmemo cv`'s, and a refit (a killed one starts again).
    checkpoints: bool = True
    checkpoint_every: int = 0  # also checkpoint every N optimizer steps (0: at epoch ends only)
    progress: bool = True
    # After early stopping has chosen the epoch count on the valid split, train again from the same seed on train
    # + valid for that many epochs and keep the last epoch: more speakers to learn from, the same protocol as a
    # classical baseline fit on all non-test rows (validation scores stay those of the first run).
    refit: bool = False
    # The refit's epochs; 0: the first run's best epoch. Two validation speakers choose that epoch noisily (EmoDB:
    # 5-16 across folds, on a plateau where every epoch scores alike), so a recipe may fix it.
    refit_epochs: int = 0
    # Distillation (`mmemo distil`, mmemo/distil.py): a trained model folder whose probabilities, softened by
    # distil_temperature, the model learns besides the gold labels in each condition; "": the labels alone.
    teacher: str = ""
    distil_temperature: float = 2.0
    distil_weight: float = 0.5  # the teacher's share of the loss, 1 - distil_weight the gold labels'

    def __post_init__(self):
        check_fields(self, "train")


@dataclass
class Config:
    """The whole recipe: `model`, `data` and `train` sections."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # "data.manifest" -> the rule that made it absolute (see the module docstring); not part of the YAML
    origins: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        check_across(self)

    def to_dict(self) -> dict:
        return {name: dataclasses.asdict(getattr(self, name)) for name in _SECTIONS}

    def path_origin(self, key: str) -> str:
        """How the path at `key` (e.g. "data.manifest") was resolved, in words, for error messages."""
        return self.origins.get(key, "used as given (a relative path is relative to the working directory)")

    def to_yaml(self) -> str:
        """The resolved config as YAML text (what `save` writes)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def save(self, path: str | os.PathLike) -> None:
        """Write the resolved config as YAML (atomically: a killed run leaves the previous file whole)."""
        from mmemo.io import atomic_write

        with atomic_write(path, "w", encoding="utf-8") as f:
            f.write(self.to_yaml())


def load_config(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config (a path or a preset name in configs/) and apply `key=value` overrides.

    Args:
        path: a YAML file, or the name of a preset such as "quickstart".
        overrides: strings like "train.epochs=3" or "model.audio_config.hidden_size=32"; values are parsed as
            YAML, and a dotted key reaches into a mapping (see the module docstring).

    Returns:
        The validated Config, with `data.manifest` and `data.cache_dir` made absolute by the rule in the module
        docstring (the YAML file's folder; the working directory for shipped presets and overrides).

    Raises:
        ConfigError: the file is missing or not YAML, a key is unknown (the closest valid key is suggested),
            a value has the wrong type, is not one of a field's choices (the closest is suggested), is out of its
            range, or names a modality-dropout strategy or augmentation that cannot be built; an override's error
            names the override, not the file. Nothing but the YAML file is read.
    """
    path = _resolve_preset(path)
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping with model/data/train sections")
    overridden = {_apply_override(raw, item) for item in overrides}  # each checked alone, its errors name it
    for given, other in (("manifest", "manifests"), ("manifests", "manifest")):
        if f"data.{given}" in overridden and f"data.{other}" not in overridden:  # the override replaces the file's
            raw["data"].pop(other, None)
    cfg = config_from_dict(raw, where=str(path))  # the file's own errors name the file
    if path.resolve().parent == CONFIG_DIR:
        file_base, file_rule = (
            Path.cwd(),
            f"from the preset {path.name} shipped in configs/, so relative to the working directory",
        )
    else:
        file_base, file_rule = path.resolve().parent, f"from {path}, so relative to that file's folder"
    for section, name in PATH_KEYS:
        key = f"{section}.{name}"
        value = getattr(getattr(cfg, section), name)
        if not value:
            continue
        if key in overridden:
            base, rule = Path.cwd(), "from a command-line override, so relative to the working directory"
        else:
            base, rule = file_base, file_rule
        expanded = Path(value).expanduser()
        resolved = (base / expanded).resolve()
        setattr(getattr(cfg, section), name, str(resolved))
        origin = f"{value!r} {rule}" if not expanded.is_absolute() else f"{value!r}, an absolute path"
        if not resolved.exists() and base != Path.cwd() and (Path.cwd() / expanded).exists():
            origin += (
                f"; {value!r} does exist under the working directory: write it relative to {path.parent} or absolute"
            )
        cfg.origins[key] = origin
    noise = cfg.data.augment.get("noise_dir")  # a folder inside data.augment follows the same rule
    if isinstance(noise, str) and noise:
        base = Path.cwd() if "data.augment" in overridden else file_base
        cfg.data.augment = {**cfg.data.augment, "noise_dir": str((base / Path(noise).expanduser()).resolve())}
    base = Path.cwd() if "data.manifests" in overridden else file_base  # and so do the pooled corpora's paths
    if cfg.data.manifests:
        cfg.origins["data.manifests"] = (
            "from a command-line override, so relative to the working directory" if base == Path.cwd() else file_rule
        )
    entries = [{"path": entry} if isinstance(entry, str) else entry for entry in cfg.data.manifests]  # a bare path
    cfg.data.manifests = [
        {**entry, "path": str((base / Path(entry["path"]).expanduser()).resolve())}
        if isinstance(entry, dict) and isinstance(entry.get("path"), str) and entry["path"]
        else entry
        for entry in entries
    ]
    return cfg


# Keys that were once written into every run's config.yaml and are now ignored: a config that has one still loads,
# with a warning (once per key), until the next release removes them. {section class: {key: why it went}}.
RETIRED_KEYS = {DataConfig: {"min_audio_seconds": "it was never read"}}
_WARNED_RETIRED: set[tuple[type, str]] = set()

PATH_KEYS = (("data", "manifest"), ("data", "cache_dir"))
"""The config paths that resolve against the YAML file's folder (see the module docstring)."""


def config_from_dict(raw: dict, where: str = "config") -> Config:
    """Build a Config from nested dicts, checking every key, type and value (`where` names the source in errors)."""
    sections = {}
    for name, value in raw.items():
        cls = _SECTIONS.get(name)
        if cls is None:
            raise ConfigError(_unknown(where, name, _SECTIONS))
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: section {name!r} must be a mapping, got {type(value).__name__}")
        sections[name] = build_section(cls, value, f"{where}: {name}", source=where)
    try:
        return Config(**sections)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def list_presets() -> list[str]:
    """Names of the YAML presets shipped in configs/."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _resolve_preset(path: str | os.PathLike) -> Path:
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    preset = CONFIG_DIR / f"{path}.yaml"
    if preset.is_file():
        return preset
    raise ConfigError(f"config {path} not found; give a YAML file or a preset name ({', '.join(list_presets())})")


def _apply_override(raw: dict, item: str) -> str:
    """Apply one `section.key[.subkey...]=value` override to the raw dict; returns "section.key".

    The section and key are checked against the dataclasses here, so a misspelt override is reported as the
    override (with the closest valid key), not as a problem in the YAML file.
    """
    key, sep, value = item.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) < 2 or not all(parts):
        raise ConfigError(f"override {item!r} must look like section.key=value, e.g. train.epochs=3")
    section, name, *inner = parts
    where = f"override {item!r}"
    if section not in _SECTIONS:
        raise ConfigError(_unknown(where, section, _SECTIONS))
    fields = {f.name: f for f in dataclasses.fields(_SECTIONS[section])}
    if name in RETIRED_KEYS.get(_SECTIONS[section], {}) and not inner:  # build_section warns and drops it
        raw.setdefault(section, {})[name] = value
        return f"{section}.{name}"
    if name not in fields:
        raise ConfigError(_unknown(where, name, fields))
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = value
    raw.setdefault(section, {})
    if not isinstance(raw[section], dict):
        raise ConfigError(f"{where}: section {section!r} is not a mapping")
    if not inner:
        raw[section][name] = check_type(parsed, field_types(_SECTIONS[section])[name], where)
        _check_override(section, name, raw[section][name], where)
        return f"{section}.{name}"
    if name not in raw[section]:  # start from the default mapping, e.g. train.modality_dropout's
        default = fields[name].default_factory() if fields[name].default_factory is not dataclasses.MISSING else None
        raw[section][name] = default
    node = raw[section][name] = copy.deepcopy(raw[section][name])
    path = f"{section}.{name}"
    for part in inner[:-1]:
        if not isinstance(node, dict):
            raise ConfigError(f"{where}: {path} is not a mapping, so it has no key {part!r}")
        node = node.setdefault(part, {})
        path += f".{part}"
    if not isinstance(node, dict):
        raise ConfigError(f"{where}: {path} is not a mapping, so it has no key {inner[-1]!r}")
    if (section, name, inner) == ("train", "modality_dropout", ["name"]) and node.get("name") != parsed:
        node.clear()  # the old strategy's parameters would not fit the new one
    node[inner[-1]] = parsed
    _check_override(section, name, raw[section][name], where)
    return f"{section}.{name}"


def _check_override(section: str, name: str, value, where: str) -> None:
    """An overridden field's value checked on its own, so that its error names the override."""
    try:
        check_field(_SECTIONS[section], f"{section}.{name}", value)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def build_section(cls: type, values: dict, where: str, source: str | None = None):
    """Instantiate one section dataclass from a dict, checking each key, type and value.

    `where` ("c.yaml: model") names the section in key and type errors; `source` ("c.yaml") prefixes the value
    errors of `__post_init__`, which name the key themselves.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = field_types(cls)
    kwargs = {}
    for name, value in values.items():
        if name in RETIRED_KEYS.get(cls, {}):
            _warn_retired(cls, name, where)
            continue
        if name not in fields:
            raise ConfigError(_unknown(where, name, fields))
        kwargs[name] = check_type(value, hints[name], f"{where}.{name}")
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}" if source else str(e)) from None


def _warn_retired(cls: type, name: str, where: str) -> None:
    """Warn, once per key and process, that a retired key is ignored."""
    if (cls, name) not in _WARNED_RETIRED:
        _WARNED_RETIRED.add((cls, name))
        why = RETIRED_KEYS[cls][name]
        warnings.warn(f"{where}.{name} is ignored ({why}) and will be removed in the next release; delete it")


def _unknown(where: str, name: str, valid) -> str:
    close = difflib.get_close_matches(str(name), list(valid), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(valid)}"
    return f"{where}: unknown key {name!r}{hint}"


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}
