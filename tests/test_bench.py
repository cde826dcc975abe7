"""`mmemo bench train`: one tiny CPU run end to end, and the FLOP counting it relies on."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmemo.bench.train import METRICS, build_model, count_step_flops
from mmemo.cli import main


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    torch.set_num_threads(1)
    assert (
        main(
            [
                "bench",
                "train",
                "--device",
                "cpu",
                "--size",
                "tiny",
                "--steps",
                "2",
                "--warmup",
                "1",
                "--peak-tflops",
                "0.05",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    return json.loads(out.read_text())


@pytest.mark.slow
def test_bench_train_json_shape(tiny_run, capsys):
    assert {"fast", "naive", "speedup", "setup"} <= set(tiny_run)
    for recipe in ("fast", "naive"):
        assert set(tiny_run[recipe]) == set(METRICS)
        for key in METRICS:
            assert np.isfinite(tiny_run[recipe][key]) and tiny_run[recipe][key] > 0, (recipe, key)
        assert tiny_run[recipe]["mfu"] == pytest.approx(tiny_run[recipe]["tflops"] / 0.05)
    assert tiny_run["speedup"] == pytest.approx(tiny_run["fast"]["utt_per_s"] / tiny_run["naive"]["utt_per_s"])
    assert tiny_run["setup"]["peak_source"] == "given"


@pytest.mark.slow
def test_bucketing_pads_less_than_random_batches(tiny_run):
    assert 1.0 <= tiny_run["fast"]["padding_ratio"] <= tiny_run["naive"]["padding_ratio"]


def test_frozen_cnn_and_flop_counting():
    """Freezing the CNN removes its backward FLOPs; eager and SDPA attention count the same arithmetic."""
    torch.manual_seed(0)
    from mmemo.builders import load_feature_extractor
    from mmemo.config import ModelConfig
    from mmemo.data.dataset import Collator
    from mmemo.data.text import train_wordpiece

    collator = Collator(train_wordpiece(["hello there general kenobi"], 100), load_feature_extractor(ModelConfig()))
    counts = {}
    for sdpa, freeze in [(True, True), (False, True), (True, False)]:
        model = build_model("tiny", sdpa=sdpa, freeze_cnn=freeze, vocab_size=200).train()
        counts[sdpa, freeze] = count_step_flops(model, collator, 2.0, "hello there", torch.device("cpu"))
    assert counts[True, True] == pytest.approx(counts[False, True], rel=0.02)
    assert counts[True, False] > 1.2 * counts[True, True]


@pytest.mark.parametrize("groups", [1, 16])
def test_conv_backward_flops_count_groups(groups):
    """Forward + backward of a convolution is 3× its forward (torch 2.11 counts grouped ones `groups`× over)."""
    from torch.utils.flop_counter import FlopCounterMode

    from mmemo.bench.measure import flop_formulas

    conv = torch.nn.Conv1d(32, 64, 8, stride=2, groups=groups)
    x = torch.randn(2, 32, 100, requires_grad=True)
    with FlopCounterMode(display=False) as forward:
        conv(x)
    with FlopCounterMode(display=False, custom_mapping=flop_formulas()) as both:
        conv(x).sum().backward()
    assert both.get_total_flops() == 3 * forward.get_total_flops()


def test_the_tiny_sizes_are_the_tests_model_and_the_quickstart_shapes():
    from conftest import TINY_MODEL

    from mmemo.bench.sizes import PREDICT, TRAIN
    from mmemo.config import load_config

    assert PREDICT["tiny"] is TINY_MODEL  # one tiny model: the tests', bench predict's and test_readme's
    quickstart = load_config("quickstart").model
    tiny = TRAIN["tiny"]["model"]
    for tower, preset in (("text_config", quickstart.text_config), ("audio_config", quickstart.audio_config)):
        assert {k: preset[k] for k in tiny[tower] if k in preset} == {
            k: v for k, v in tiny[tower].items() if k in preset
        }
    assert (tiny["fusion_dim"], tiny["fusion_heads"]) == (quickstart.fusion_dim, quickstart.fusion_heads)
    assert TRAIN["tiny"]["vocab_size"] == quickstart.tokenizer_vocab_size
