"""Modality dropout: during training, hide text or audio for some samples so one checkpoint serves
text-only, audio-only and text+audio input.

A strategy is a callable `(text_present, audio_present, progress, generator) -> (keep_text, keep_audio)`:
it gets the (B,) bool masks of what each sample really has, the fraction of training done (0–1) and a
seeded torch.Generator, and returns the masks to feed the model. It must never hide both modalities of a
sample that has both, nor the only modality of a sample that has one. A strategy may instead return several
views of the batch, a list of `(keep_text, keep_audio, weight)`: the encoders still run once, the fusion head
runs once per view, and the loss is the weighted mean of the views' losses (`all_subsets` does this).

Select one in the config, `train.modality_dropout: {name: independent, p_text: 0.3, p_audio: 0.3}`. Add your
own without touching mmemo, either with the decorator

    from mmemo.modality_dropout import register

    @register("my_strategy")
    class MyStrategy:
        def __init__(self, p: float = 0.5): ...
        def __call__(self, text_present, audio_present, progress, generator): ...

(imported before training starts), or by a dotted import path: `{name: my_package.module.MyStrategy, p: 0.5}`.
"""

from __future__ import annotations

import importlib

import torch

from mmemo.errors import ConfigError, not_one_of

STRATEGIES: dict[str, type] = {}
KEY = "train.modality_dropout"  # where a config sets the strategy, for messages


def register(name: str):
    """Class decorator that adds a strategy to the registry under `name`."""

    def add(cls):
        STRATEGIES[name] = cls
        return cls

    return add


def build_strategy(spec: dict | None):
    """Instantiate the strategy a config names: `{"name": ..., **parameters}` (None or {} means `none`).

    Loading a config builds it once (a dry run), so its errors come before any data is read.

    Raises:
        ConfigError: the name is neither registered nor an importable dotted path (the closest registered name is
            suggested), a parameter is unknown, or a parameter's value is out of its range.
    """
    spec = dict(spec or {"name": "none"})
    name = spec.pop("name", "none")
    cls = STRATEGIES.get(name) or _import(name)
    try:
        return cls(**spec)
    except TypeError as e:
        raise ConfigError(f"{KEY}: bad parameters for strategy {name!r}: {e}") from None


def _import(path):
    module, _, attr = str(path).rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError):
        error = not_one_of(f"{KEY}.name", path, sorted(STRATEGIES))
        raise ConfigError(f"{error} (or a dotted import path to your own strategy class)") from None


def _check_range(low: float, high: float | None = None, **values) -> None:
    """Each parameter in [low, high] (high None: no bound); the error names `train.modality_dropout.NAME`."""
    for name, value in values.items():
        if not (value >= low and (high is None or value <= high)):
            bound = f"in [{low:g}, {high:g}]" if high is not None else f">= {low:g}"
            raise ConfigError(f"{KEY}.{name} must be {bound}, got {value!r}")


def as_views(masks) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
    """A strategy's answer as a list of (keep_text, keep_audio, weight) views; one pair of masks is one view.

    Raises:
        ConfigError: the answer is neither a pair of masks nor a non-empty list of such triples with
            non-negative weights summing to more than zero.
    """
    if len(masks) == 2 and all(isinstance(m, torch.Tensor) for m in masks):
        return [(masks[0], masks[1], 1.0)]
    try:
        views = [(keep_text, keep_audio, float(weight)) for keep_text, keep_audio, weight in masks]
    except (TypeError, ValueError):
        views = []
    if not views or min(w for _, _, w in views) < 0 or sum(w for _, _, w in views) <= 0:
        raise ConfigError(
            "train.modality_dropout: a strategy must return (keep_text, keep_audio) or a non-empty "
            "list of (keep_text, keep_audio, weight) with non-negative weights and a positive sum; "
            f"got {type(masks).__name__} of length {len(masks)}"
        )
    return views


def _never_both(keep_text, keep_audio, text_present, audio_present):
    """Give a sample that dropout left with nothing back what it really has (text first)."""
    nothing = ~(keep_text | keep_audio)
    return keep_text | (nothing & text_present), keep_audio | (nothing & audio_present & ~text_present)


@register("none")
class NoDropout:
    """Every sample keeps what it has."""

    def __call__(self, text_present, audio_present, progress, generator):
        return text_present, audio_present


@register("independent")
class IndependentDropout:
    """Drop text with p_text and audio with p_audio, independently; never both."""

    def __init__(self, p_text: float = 0.3, p_audio: float = 0.3):
        _check_range(0, 1, p_text=p_text, p_audio=p_audio)
        self.p_text, self.p_audio = p_text, p_audio

    def __call__(self, text_present, audio_present, progress, generator):
        n = text_present.shape[0]
        drop_text = torch.rand(n, generator=generator) < self.p_text
        drop_audio = torch.rand(n, generator=generator) < self.p_audio
        both = drop_text & drop_audio  # a coin decides which one of the two drops stands
        coin = torch.rand(n, generator=generator) < 0.5
        drop_text, drop_audio = drop_text & ~(both & coin), drop_audio & ~(both & ~coin)
        keep_text, keep_audio = text_present & ~drop_text, audio_present & ~drop_audio
        return _never_both(keep_text, keep_audio, text_present, audio_present)


@register("exclusive")
class ExclusiveDropout:
    """Per sample, one of: keep both (p_both), drop text (p_drop_text), drop audio (p_drop_audio)."""

    def __init__(self, p_both: float = 0.5, p_drop_text: float = 0.25, p_drop_audio: float = 0.25):
        _check_range(0, p_both=p_both, p_drop_text=p_drop_text, p_drop_audio=p_drop_audio)
        total = p_both + p_drop_text + p_drop_audio
        if total <= 0:
            raise ConfigError(f"{KEY}: exclusive needs p_both, p_drop_text and p_drop_audio with a positive sum")
        self.probs = torch.tensor([p_both, p_drop_text, p_drop_audio]) / total

    def __call__(self, text_present, audio_present, progress, generator):
        choice = torch.multinomial(self.probs, text_present.shape[0], replacement=True, generator=generator)
        keep_text, keep_audio = text_present & (choice != 1), audio_present & (choice != 2)
        return _never_both(keep_text, keep_audio, text_present, audio_present)


@register("all_subsets")
class AllSubsets:
    """Every sample three ways in the same step: with both modalities, text alone and audio alone.

    The expected loss of exclusive dropout without its sampling noise: each condition learns from every sample
    at every step, for the price of two more passes through the (small) fusion head.
    """

    def __init__(self, w_both: float = 1.0, w_text: float = 1.0, w_audio: float = 1.0):
        _check_range(0, w_both=w_both, w_text=w_text, w_audio=w_audio)
        if w_both + w_text + w_audio <= 0:
            raise ConfigError(f"{KEY}: all_subsets needs w_both, w_text and w_audio with a positive sum")
        self.weights = (w_both, w_text, w_audio)

    def __call__(self, text_present, audio_present, progress, generator):
        nothing = torch.zeros_like(text_present)
        views = [
            (text_present, audio_present),
            _never_both(text_present, nothing, text_present, audio_present),
            _never_both(nothing, audio_present, text_present, audio_present),
        ]
        return [(t, a, w) for (t, a), w in zip(views, self.weights) if w > 0]


@register("scheduled")
class ScheduledDropout:
    """Independent dropout whose probabilities ramp linearly from `start` to `end` over the first `ramp` of training."""

    def __init__(self, start: float = 0.0, end: float = 0.4, ramp: float = 0.5):
        _check_range(0, 1, start=start, end=end, ramp=ramp)
        self.start, self.end, self.ramp = start, end, max(ramp, 1e-6)

    def __call__(self, text_present, audio_present, progress, generator):
        p = self.start + (self.end - self.start) * min(1.0, progress / self.ramp)
        return IndependentDropout(p, p)(text_present, audio_present, progress, generator)


@register("text_only")
class TextOnly:
    """Train on text alone (the dedicated text-only baseline)."""

    def __call__(self, text_present, audio_present, progress, generator):
        return _never_both(text_present, torch.zeros_like(audio_present), text_present, audio_present)


@register("audio_only")
class AudioOnly:
    """Train on audio alone (the dedicated audio-only baseline)."""

    def __call__(self, text_present, audio_present, progress, generator):
        return _never_both(torch.zeros_like(text_present), audio_present, text_present, audio_present)
