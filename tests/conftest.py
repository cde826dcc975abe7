"""Shared fixtures: the tiny model's config, a small synthetic corpus, one trained tiny model per test session and
its recognizer; the `slow` marker's rule."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from mmemo.bench.sizes import TINY_MODEL

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Property tests: enough examples to find the corners, no per-example deadline on a loaded machine.
HYPOTHESIS_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SLOW_FIXTURES = {"trained_run"}
"""Fixtures that train a model: every test that uses one, directly or through another fixture, is marked slow."""


def pytest_collection_modifyitems(items):
    """Two tiers: `make test` runs everything; `make test-fast` (-m "not slow") leaves out the tests that train a
    model, open a browser, start a process or decode speech. Those are marked `slow` by hand or per module
    (`pytestmark = pytest.mark.slow`), and here every test whose fixtures include one of SLOW_FIXTURES."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def pytest_ignore_collect(collection_path, config):
    """Without the slow tests, a module whose tests are all slow is not even imported (gradio, playwright, ...)."""
    if collection_path.suffix == ".py" and "not slow" in (config.option.markexpr or ""):
        return "\npytestmark = pytest.mark.slow" in collection_path.read_text(encoding="utf-8") or None
    return None


def tiny_config_dict(manifest, out_dir, **train) -> dict:
    """A config dict for a tiny model; `train` entries override the train section."""
    return {
        "model": copy.deepcopy(TINY_MODEL),
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


@pytest.fixture(scope="module")
def rec(trained_run):
    """The trained tiny model's recognizer (one per test module: a module may change its temperature)."""
    from mmemo.inference import EmotionRecognizer

    return EmotionRecognizer.from_pretrained(trained_run["model_dir"])


@pytest.fixture(scope="module")
def rows(synth_corpus):
    """The small synthetic corpus's rows (absolute audio paths)."""
    from mmemo.data.manifest import read_manifest

    return read_manifest(synth_corpus)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A decoded-audio (and functionals) cache folder shared by one module's tests."""
    return tmp_path_factory.mktemp("cache")


def build_tiny_whisper(folder, multilingual: bool = False, seed: int = 0, encoder_layers: int = 2):
    """A random tiny Whisper (width 32, `encoder_layers` + 2 layers) with a byte-level tokenizer, saved to `folder`.

    Its generation config suppresses the end token, the special tokens and the invisible bytes, so the English-only
    one "transcribes" anything as a line of visible characters (up to `max_target_positions`). `multilingual` pads
    the vocabulary to 51865 entries, OpenAI's (and CTranslate2's) test for a multilingual model; the tokenizer
    cannot spell the padding, so its transcripts are shorter.
    """
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_chars = bytes_to_unicode()
    tokenizer = WhisperTokenizer(
        vocab={c: i for i, c in enumerate(byte_chars.values())}, merges=[], pad_token="<|endoftext|>"
    )
    special = ["<|startoftranscript|>", "<|en|>", "<|de|>", "<|translate|>", "<|transcribe|>", "<|notimestamps|>"]
    tokenizer.add_special_tokens({"additional_special_tokens": special})
    ids = dict(zip(special, tokenizer.convert_tokens_to_ids(special)))
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(
        WhisperConfig(
            vocab_size=51865 if multilingual else len(tokenizer),
            num_mel_bins=80,
            d_model=32,
            encoder_layers=encoder_layers,
            decoder_layers=2,
            encoder_attention_heads=2,
            decoder_attention_heads=4,
            encoder_ffn_dim=64,
            decoder_ffn_dim=48,
            max_source_positions=1500,  # Whisper's 30 s window: transformers' Whisper pads every input to it
            max_target_positions=16,
            decoder_start_token_id=ids["<|startoftranscript|>"],
            eos_token_id=eos,
            pad_token_id=eos,
            bos_token_id=eos,
        )
    )
    gen = model.generation_config
    gen.no_timestamps_token_id = ids["<|notimestamps|>"]
    invisible = [i for i, b in enumerate(byte_chars) if not chr(b).isprintable() or chr(b).isspace()]
    gen.suppress_tokens = [eos, *ids.values(), *invisible]
    gen.begin_suppress_tokens = [eos, ids["<|notimestamps|>"]]
    if multilingual:
        gen.lang_to_id = {token: ids[token] for token in ("<|en|>", "<|de|>")}
        gen.task_to_id = {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
        gen.is_multilingual = True
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return folder


def ct2_convert(hf_folder, out, quantization: str = "float32"):
    """CTranslate2's own converter on a transformers Whisper folder, copying the tokenizer as faster-whisper does."""
    import ctranslate2

    converter = ctranslate2.converters.TransformersConverter(str(hf_folder), copy_files=["tokenizer.json"])
    return Path(converter.convert(str(out), quantization=quantization, force=True))


@pytest.fixture(scope="session")
def whisper_ct2(tmp_path_factory):
    """An English-only tiny Whisper as transformers wrote it ("hf") and as CTranslate2 converted it ("ct2")."""
    pytest.importorskip("ctranslate2", reason="needs CTranslate2's converter: pip install -e '.[dev]'")
    root = tmp_path_factory.mktemp("whisper_ct2")
    hf = build_tiny_whisper(root / "hf")
    return {"hf": hf, "ct2": ct2_convert(hf, root / "ct2")}
