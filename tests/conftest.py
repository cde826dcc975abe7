"""Shared fixtures: a tiny config, a small synthetic corpus and one trained tiny model per test session."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Property tests: enough examples to find the corners, no per-example deadline on a loaded machine.
HYPOTHESIS_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TINY_MODEL = {
    "text_config": {
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 128,
    },
    "audio_config": {
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "conv_dim": [16, 16, 16, 16, 16, 16, 16],
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 2,
        "feat_extract_norm": "group",
        "layerdrop": 0.0,
        "mask_time_prob": 0.0,
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "feat_proj_dropout": 0.0,
    },
    "tokenizer_vocab_size": 300,
    "fusion_dim": 32,
    "fusion_heads": 2,
    "fusion_layers": 1,
    "freeze_feature_encoder": False,
}


def tiny_config_dict(manifest, out_dir, **train) -> dict:
    """A config dict for a tiny model; `train` entries override the train section."""
    return {
        "model": dict(TINY_MODEL),
        "data": {"manifest": str(manifest), "batch_size": 16, "max_audio_seconds": 4.0},
        "train": {
            "output_dir": str(out_dir),
            "epochs": 2,
            "lr": 2e-3,
            "encoder_lr": 2e-3,
            "progress": False,
            "patience": 0,
            **train,
        },
    }


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory):
    """A 240-utterance synthetic corpus (speaker-disjoint splits); returns the manifest path."""
    from mmemo.data.synthetic import generate_corpus

    return generate_corpus(tmp_path_factory.mktemp("synth"), n=240, seed=1)


@pytest.fixture(scope="session")
def trained_run(synth_corpus, tmp_path_factory):
    """One tiny model trained on the small corpus, shared by the tests that need a trained checkpoint."""
    from mmemo.config import config_from_dict
    from mmemo.train import train

    out = tmp_path_factory.mktemp("run") / "run"
    cfg = tiny_config_dict(synth_corpus, out, epochs=12)
    cfg["data"]["batch_size"] = 8  # more, smaller steps: a from-scratch audio encoder needs them
    return train(config_from_dict(cfg))
