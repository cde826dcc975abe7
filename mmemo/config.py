"""Configuration: three flat dataclasses (model, data, train) under one `Config`; YAML in, resolved YAML out.

Presets live in `configs/*.yaml`. Everything is checked when the config loads, before any data is read: an
unknown or misspelt key is an error that names the closest valid key, a value of the wrong type names the expected
type, a choice field (typed `Literal[...]`) names its choices and the closest one, a number out of its range
(`CHECKS`) names the range, and the modality-dropout strategy and the augmentation are built once as a dry run.

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
import functools
import os
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from mmemo.errors import ConfigError, not_one_of

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
        check_fields(self)


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
        check_fields(self)


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
    checkpoint_every: int = 0  # also checkpoint every N optimizer steps (0: at epoch ends only)
    progress: bool = True
    # After early stopping has chosen the epoch count on the valid split, train again from the same seed on train
    # + valid for that many epochs and keep the last epoch: more speakers to learn from, the same protocol as a
    # classical baseline fit on all non-test rows (validation scores stay those of the first run).
    refit: bool = False
    # Distillation (`mmemo distil`, mmemo/distil.py): a trained model folder whose probabilities, softened by
    # distil_temperature, the model learns besides the gold labels in each condition; "": the labels alone.
    teacher: str = ""
    distil_temperature: float = 2.0
    distil_weight: float = 0.5  # the teacher's share of the loss, 1 - distil_weight the gold labels'

    def __post_init__(self):
        check_fields(self)


@dataclass
class Config:
    """The whole recipe: `model`, `data` and `train` sections."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # "data.manifest" -> the rule that made it absolute (see the module docstring); not part of the YAML
    origins: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        _check_across(self)

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
        raw[section][name] = _check_type(parsed, _hints(_SECTIONS[section])[name], where)
        _check_override(_SECTIONS[section], name, raw[section][name], where)
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
    _check_override(_SECTIONS[section], name, raw[section][name], where)
    return f"{section}.{name}"


def _check_override(cls: type, name: str, value, where: str) -> None:
    """An overridden field's value checked on its own, so that its error names the override."""
    try:
        _check_field(cls, name, value)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def build_section(cls: type, values: dict, where: str, source: str | None = None):
    """Instantiate one section dataclass from a dict, checking each key, type and value.

    `where` ("c.yaml: model") names the section in key and type errors; `source` ("c.yaml") prefixes the value
    errors of `__post_init__`, which name the key themselves.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = _hints(cls)
    kwargs = {}
    for name, value in values.items():
        if name in RETIRED_KEYS.get(cls, {}):
            _warn_retired(cls, name, where)
            continue
        if name not in fields:
            raise ConfigError(_unknown(where, name, fields))
        kwargs[name] = _check_type(value, hints[name], f"{where}.{name}")
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


def _check_type(value, hint, where: str):
    """`value` if it has the type `hint` names (an int is a float, a Literal's values have their type), else an error;
    whether a Literal field's value is one of its choices is `_check_field`'s question."""
    allowed = _union(hint)
    allowed = tuple(type(typing.get_args(k)[0]) if typing.get_origin(k) is Literal else k for k in allowed)
    if value is None and type(None) in allowed:
        return None
    for kind in allowed:
        kind = typing.get_origin(kind) or kind
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if kind is float and isinstance(value, str):
            try:  # YAML 1.1 reads "5e-4" (no dot) as a string
                return float(value)
            except ValueError:
                pass
        if kind is bool and not isinstance(value, bool):
            continue
        if kind is not bool and isinstance(value, bool):
            continue
        if kind is not type(None) and isinstance(value, kind):
            return value
    names = " or ".join("null" if k is type(None) else (typing.get_origin(k) or k).__name__ for k in allowed)
    raise ConfigError(f"{where} must be {names}, got {type(value).__name__} {value!r}")


def _unknown(where: str, name: str, valid) -> str:
    close = difflib.get_close_matches(str(name), list(valid), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(valid)}"
    return f"{where}: unknown key {name!r}{hint}"


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}
_SECTION_NAMES = {cls: name for name, cls in _SECTIONS.items()}


# --- values: every field's choices and range, checked whenever a section is built ----------------------------


@dataclass(frozen=True)
class Range:
    """The numbers a field allows: from `low` to `high` (None: no bound), each end excluded when open."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __call__(self, value, key: str) -> None:
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        above = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if below or above or value != value:  # NaN is in no range
            raise ConfigError(f"{key} must be {self}, got {value!r}")

    def __str__(self) -> str:
        low, high = _number(self.low), _number(self.high)
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {low}"
        return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"


def _number(x) -> str:
    return str(int(x)) if x is not None and float(x).is_integer() else str(x)


AT_LEAST_1, NON_NEGATIVE, POSITIVE = Range(1), Range(0), Range(0, low_open=True)
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")  # for messages: any torch device name is accepted


def _labels(labels: list, key: str) -> None:
    if not all(isinstance(x, str) and x.strip() for x in labels) or len(set(labels)) != len(labels):
        raise ConfigError(f"{key} must be distinct, non-empty label names, got {labels!r}")


def _layer_indices(layers: list, key: str) -> None:
    """Distinct hidden-state indices >= 0; that they exist in the tower is checked where it is built."""
    indices = all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in layers)
    if not indices or len(set(layers)) != len(layers):
        raise ConfigError(f"{key} must be distinct hidden-state indices >= 0 (0: the input embeddings), got {layers!r}")


def _not_empty(value: str, key: str) -> None:
    if not value.strip():
        raise ConfigError(f"{key} must be a folder name, got {value!r}")


def _device(name: str, key: str) -> None:
    import torch

    if name == "auto":
        return
    try:
        torch.device(name)
    except RuntimeError:
        raise not_one_of(key, name, DEVICES) from None


def _strategy(spec: dict, key: str) -> None:
    """The modality-dropout strategy built once, a dry run: its name and parameters checked (its errors name
    `train.modality_dropout`). A strategy registered with `@register` must be registered before the config loads."""
    from mmemo.modality_dropout import build_strategy

    build_strategy(spec)


def _augment(spec: dict, key: str) -> None:
    """The augmentation built once, a dry run (its errors name `data.augment.KEY`); `noise_dir` is read at use."""
    from mmemo.data.augment import build_augmenter

    build_augmenter(spec, scan_noise=False)


CHECKS = {
    ModelConfig: {
        "tokenizer_vocab_size": AT_LEAST_1,
        "fusion_dim": AT_LEAST_1,
        "fusion_heads": AT_LEAST_1,
        "fusion_layers": NON_NEGATIVE,
        "audio_downsample": AT_LEAST_1,
        "dropout": Range(0, 1, high_open=True),
        "freeze_text_layers": Range(-1),  # -1: all
        "freeze_audio_layers": Range(-1),
        "audio_layers": NON_NEGATIVE,  # 0: all of a pretrained tower's layers
        "max_text_tokens": Range(2),  # [CLS] and [SEP]
        "sampling_rate": AT_LEAST_1,
        "labels": _labels,
        "pooled_layers": _layer_indices,
    },
    DataConfig: {
        "max_audio_seconds": NON_NEGATIVE,  # 0: clips are never cropped
        "batch_size": AT_LEAST_1,
        "max_batch_seconds": NON_NEGATIVE,
        "num_workers": NON_NEGATIVE,
        "augment": _augment,
        "tower_copies": NON_NEGATIVE,
    },
    TrainConfig: {
        "output_dir": _not_empty,
        "seed": Range(0, 2**32 - 1),  # NumPy's seeds
        "device": _device,
        "epochs": AT_LEAST_1,
        "lr": POSITIVE,
        "encoder_lr": NON_NEGATIVE,
        "layer_decay": POSITIVE,
        "weight_decay": NON_NEGATIVE,
        "warmup_ratio": Range(0, 1),
        "grad_clip": NON_NEGATIVE,  # 0: no clipping
        "label_smoothing": Range(0, 1, high_open=True),
        "patience": NON_NEGATIVE,
        "grad_accum": AT_LEAST_1,
        "modality_dropout": _strategy,
        "threads": NON_NEGATIVE,
        "checkpoint_every": NON_NEGATIVE,
        "distil_temperature": POSITIVE,
        "distil_weight": Range(0, 1),  # 0: the gold labels only, 1: the teacher only
    },
}
"""Per section, the checks of a field's value beyond its type and `Literal` choices: a `Range`, or a function
`(value, key)` that raises ConfigError naming `key`. A `Literal[...]` field needs no entry: its choices are checked."""


def field_choices(cls: type, name: str) -> tuple:
    """The values a `Literal[...]` field of section `cls` allows (`Literal[...] | None`: None too), else ()."""
    return tuple(c for k in _union(_hints(cls)[name]) if typing.get_origin(k) is Literal for c in typing.get_args(k))


def check_fields(section) -> None:
    """Check every field of a section dataclass: its `Literal` choices and `CHECKS` (each section's `__post_init__`)."""
    for f in dataclasses.fields(section):
        _check_field(type(section), f.name, getattr(section, f.name))


def _check_field(cls: type, name: str, value) -> None:
    key = f"{_SECTION_NAMES[cls]}.{name}"
    choices = field_choices(cls, name)
    if choices and value is not None and value not in choices:
        raise not_one_of(key, value, choices)
    check = CHECKS[cls].get(name)
    if check is not None:
        check(value, key)


def _check_across(cfg: Config) -> None:
    """The checks that read two keys (`Config.__post_init__`); the data's corpora are parsed, no file is read."""
    model = cfg.model
    if model.fusion == "cross_attention" and model.fusion_dim % model.fusion_heads:
        raise ConfigError(
            f"model.fusion_dim must be divisible by model.fusion_heads, got {model.fusion_dim} and "
            f"{model.fusion_heads}; change one of them"
        )
    if cfg.data.tower_copies and not cfg.data.augment:
        raise ConfigError(
            f"data.tower_copies={cfg.data.tower_copies} augments copies of each clip with data.augment, which is "
            "empty; give data.augment (e.g. {speed: [0.9, 1.1], gain_db: [-6, 6]}) or set data.tower_copies=0"
        )
    if cfg.data.manifest or cfg.data.manifests:
        from mmemo.data.pool import corpora_of

        corpora_of(cfg.data)


@functools.cache
def _hints(cls: type) -> dict:
    return typing.get_type_hints(cls)


def _union(hint) -> tuple:
    """The members of `A | B` (or `Optional[A]`); `(hint,)` for anything else."""
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
