"""Modality-dropout strategies: every sample keeps a modality, views are checked, rates match, user strategies plug in."""

import pytest
import torch

from mmemo.errors import ConfigError
from mmemo.modality_dropout import STRATEGIES, as_views, build_strategy, register


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "none"},
        {"name": "independent", "p_text": 0.5, "p_audio": 0.5},
        {"name": "exclusive"},
        {"name": "scheduled", "end": 0.9},
        {"name": "text_only"},
        {"name": "audio_only"},
        {"name": "all_subsets"},
    ],
)
def test_strategies_never_leave_a_sample_empty(spec):
    strategy = build_strategy(spec)
    g = torch.Generator().manual_seed(0)
    text_present = torch.rand(1000, generator=g) < 0.8
    audio_present = ~text_present | (torch.rand(1000, generator=g) < 0.7)
    for progress in (0.0, 0.5, 1.0):
        for keep_text, keep_audio, _ in as_views(strategy(text_present, audio_present, progress, g)):
            assert (keep_text | keep_audio).all()
            assert not (keep_text & ~text_present).any() and not (keep_audio & ~audio_present).any()


def test_views_from_a_strategy_are_checked():
    t = torch.ones(4, dtype=torch.bool)
    [(keep_text, keep_audio, weight)] = as_views((t, ~t))
    assert keep_text.all() and not keep_audio.any() and weight == 1.0
    assert [w for _, _, w in as_views([(t, t, 2), (t, ~t, 0)])] == [2.0, 0.0]
    for bad in ([], [(t, t, 0.0)], [(t, t, -1.0), (t, t, 2.0)], [(t, t)], (t, t, 1.0)):
        with pytest.raises(ConfigError, match="a strategy must return"):
            as_views(bad)


def test_independent_rates_match_the_config():
    strategy = build_strategy({"name": "independent", "p_text": 0.2, "p_audio": 0.4})
    both = torch.ones(20000, dtype=torch.bool)
    keep_text, keep_audio = strategy(both, both, 0.0, torch.Generator().manual_seed(0))
    assert abs((~keep_text).float().mean() - 0.2 * (1 - 0.4 / 2)) < 0.02  # a double drop keeps one of the two
    assert abs((~keep_audio).float().mean() - 0.4 * (1 - 0.2 / 2)) < 0.02


def test_user_strategies_by_decorator_and_dotted_path():
    @register("always_text")
    class AlwaysText:
        def __call__(self, text_present, audio_present, progress, generator):
            return text_present, torch.zeros_like(audio_present)

    assert isinstance(build_strategy({"name": "always_text"}), AlwaysText)
    del STRATEGIES["always_text"]
    dotted = build_strategy(
        {"name": "mmemo.modality_dropout.ExclusiveDropout", "p_both": 2, "p_drop_text": 1, "p_drop_audio": 1}
    )
    assert dotted.probs.tolist() == [0.5, 0.25, 0.25]
    with pytest.raises(ConfigError, match=r"train\.modality_dropout\.name must be one of .*'none'.*, got 'nope'"):
        build_strategy({"name": "nope"})
    with pytest.raises(ConfigError, match=r"got 'exclusve'; did you mean 'exclusive'\?"):
        build_strategy({"name": "exclusve"})
    with pytest.raises(ConfigError, match="bad parameters"):
        build_strategy({"name": "independent", "p": 0.1})
