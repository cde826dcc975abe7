"""What a config value may be: per field its range or check (`CHECKS`), its type (`check_type`), its `Literal`
choices (`field_choices`), and the checks that read two keys (`check_across`).

`mmemo.config` runs these as the config loads: each section dataclass checks its fields in `__post_init__`
(`check_fields`), `Config` checks across sections, and `load_config` checks an override's value alone so that its
error names the override.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from mmemo.errors import ConfigError, not_one_of

if TYPE_CHECKING:
    from mmemo.config import Config


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
    "model": {
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
    "data": {
        "max_audio_seconds": NON_NEGATIVE,  # 0: clips are never cropped
        "batch_size": AT_LEAST_1,
        "max_batch_seconds": NON_NEGATIVE,
        "num_workers": NON_NEGATIVE,
        "augment": _augment,
        "tower_copies": NON_NEGATIVE,
    },
    "train": {
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
        "refit_epochs": NON_NEGATIVE,
        "distil_temperature": POSITIVE,
        "distil_weight": Range(0, 1),  # 0: the gold labels only, 1: the teacher only
    },
}
"""Per section ("model", "data", "train"), the checks of a field's value beyond its type and `Literal` choices: a
`Range`, or a function `(value, key)` that raises ConfigError naming `key`. A `Literal[...]` field needs no entry:
its choices are checked."""


def field_choices(cls: type, name: str) -> tuple:
    """The values a `Literal[...]` field of section `cls` allows (`Literal[...] | None`: None too), else ()."""
    return tuple(
        c for k in _union(field_types(cls)[name]) if typing.get_origin(k) is Literal for c in typing.get_args(k)
    )


def check_fields(section, name: str) -> None:
    """Check every field of a section dataclass: its `Literal` choices and `CHECKS` (each section's `__post_init__`).

    Args:
        section: a ModelConfig, DataConfig or TrainConfig.
        name: its name in the config ("model", "data" or "train"), which messages and `CHECKS` use.
    """
    for f in dataclasses.fields(section):
        check_field(type(section), f"{name}.{f.name}", getattr(section, f.name))


def check_field(cls: type, key: str, value) -> None:
    """Check one field's value (`key` as "section.field", `cls` the section's dataclass): its `Literal` choices
    and its `CHECKS` entry.

    Raises:
        ConfigError: the value is not one of the choices, or its check refuses it; the message names `key`.
    """
    section, name = key.split(".")
    choices = field_choices(cls, name)
    if choices and value is not None and value not in choices:
        raise not_one_of(key, value, choices)
    check = CHECKS[section].get(name)
    if check is not None:
        check(value, key)


def check_across(cfg: Config) -> None:
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


def check_type(value, hint, where: str):
    """`value` if it has the type `hint` names (an int is a float, a Literal's values have their type), else an error;
    whether a Literal field's value is one of its choices is `check_field`'s question."""
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


@functools.cache
def field_types(cls: type) -> dict:
    """The type hints of a section dataclass's fields, by field name (read once per class)."""
    return typing.get_type_hints(cls)


def _union(hint) -> tuple:
    """The members of `A | B` (or `Optional[A]`); `(hint,)` for anything else."""
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
