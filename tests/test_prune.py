"""Layer pruning of a pretrained Whisper tower (`model.audio_layers`): the first K layers kept, the hidden states
numbered as in the full tower, the saved model rebuilt with K layers, bad settings refused before loading."""

import json

import numpy as np
import pytest
import torch
from conftest import build_tiny_whisper, tiny_config_dict
from safetensors import safe_open

from mmemo.builders import build_recognizer, load_splits
from mmemo.config import ModelConfig, config_from_dict
from mmemo.data.dataset import Collator
from mmemo.encoders import build_encoders
from mmemo.errors import ConfigError
from mmemo.inference import EmotionRecognizer
from mmemo.train import train

TEXT = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


@pytest.fixture(scope="module")
def tower(tmp_path_factory):
    """A tiny random Whisper checkpoint with a 4-layer encoder."""
    return build_tiny_whisper(tmp_path_factory.mktemp("tower") / "whisper", encoder_layers=4)


def _audio_model(tower, **model):
    cfg = ModelConfig(audio_encoder=str(tower), text_config=TEXT, **model)
    return build_encoders(cfg, vocab_size=50)[1].eval()


def _hidden_states(encoder):
    from transformers import WhisperFeatureExtractor

    from mmemo.encoders import WhisperAudioEncoder

    rng = np.random.default_rng(0)
    clips = [rng.normal(0, 0.1, n).astype(np.float32) for n in (16000, 24000)]
    audio = Collator(None, WhisperFeatureExtractor(feature_size=80)).pad_audio(clips)
    with torch.no_grad():
        return WhisperAudioEncoder(encoder).hidden_states(audio["input_features"], audio["attention_mask"])[0]


def test_pruning_keeps_the_first_k_layers_and_numbers_hidden_states_as_the_full_tower(tower):
    full = _audio_model(tower)
    pruned = _audio_model(tower, audio_layers=2)
    assert len(pruned.layers) == pruned.config.encoder_layers == 2 and pruned.config.pruned_from == 4
    kept = pruned.state_dict()
    for name, value in full.state_dict().items():
        if name.startswith(("layers.0.", "layers.1.")) or not name.startswith(("layers.", "layer_norm.")):
            assert torch.equal(kept.pop(name), value), name
    assert not kept  # nothing but the first two layers and what sits below them
    states, pruned_states = _hidden_states(full), _hidden_states(pruned)
    assert len(states) == 5 and len(pruned_states) == 3
    # hidden state 2 is layer 2's output in both (not layer-normed): the final norm belongs to hidden state 4
    torch.testing.assert_close(pruned_states, states[:3], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(pruned_states[2], full.layer_norm(states[2]), atol=1e-2)
    # keeping every layer changes nothing, final norm included
    torch.testing.assert_close(_hidden_states(_audio_model(tower, audio_layers=4)), states)


def test_a_pruned_model_trains_saves_with_k_layers_and_reloads_with_k(synth_corpus, tower, tmp_path):
    cfg = tiny_config_dict(synth_corpus, tmp_path / "run", epochs=1, lr=3e-3, threads=1)
    cfg["model"] = {
        **cfg["model"],
        "audio_config": {},
        "audio_encoder": str(tower),
        "audio_layers": 3,
        "freeze_audio_layers": -1,
        "audio_head": "pooled",
        "pooled_layers": [1, 3],
    }
    result = train(config_from_dict(cfg))
    folder = result["model_dir"]
    meta = json.loads((folder / "config.json").read_text())
    assert meta["model"]["audio_layers"] == 3
    assert meta["audio_config"]["encoder_layers"] == 3 and meta["audio_config"]["pruned_from"] == 4
    with safe_open(folder / "model.safetensors", "pt") as f:
        layers = {key.split(".")[3] for key in f.keys() if key.startswith("audio_encoder.model.layers.")}
        assert layers == {"0", "1", "2"}
        assert not any(key.startswith("audio_encoder.model.layer_norm.") for key in f.keys())
        assert tuple(f.get_tensor("audio_encoder.layer_weights").shape) == (4,)  # the kept hidden states
    rec = EmotionRecognizer.from_pretrained(folder)
    assert rec.model.audio_encoder.num_layers == 3 and isinstance(
        rec.model.audio_encoder.model.layer_norm, torch.nn.Identity
    )
    clip = np.random.default_rng(1).normal(0, 0.1, 20000).astype(np.float32)
    again = EmotionRecognizer.from_pretrained(folder).predict(text="hello there", audio=clip, sampling_rate=16000)
    first = rec.predict(text="hello there", audio=clip, sampling_rate=16000)
    assert set(first.per_modality) == {"text", "audio"}
    assert first.probabilities == pytest.approx(again.probabilities)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"audio_layers": 5}, r"model.audio_layers=5: .* has 4 encoder layers; give 1 to 4"),
        ({"audio_layers": -1}, r"model.audio_layers must be >= 0, got -1"),
        (
            {"audio_layers": 2, "audio_head": "pooled", "pooled_layers": [1, 3]},
            r"model.pooled_layers=\[1, 3\] reads hidden state 3, but model.audio_layers=2 keeps hidden states 0 to 2; "
            r"choose pooled_layers from 0 to 2, or model.audio_layers from 3 to 4",
        ),
        (
            {"audio_layers": 2, "freeze_audio_layers": 3},
            r"model.freeze_audio_layers=3 .* model.audio_layers=2 keeps; give 0 to 2",
        ),
    ],
)
def test_bad_pruning_settings_are_config_errors_naming_key_value_and_range(tower, model, message):
    with pytest.raises(ConfigError, match=message):
        _audio_model(tower, **model)


def test_pruning_a_tower_built_from_a_config_is_a_config_error(synth_corpus, tmp_path):
    cfg = config_from_dict(tiny_config_dict(synth_corpus, tmp_path / "run"))
    cfg.model.audio_layers = 1
    with pytest.raises(ConfigError, match=r"model.audio_layers=1 prunes a pretrained tower .* there is none"):
        build_recognizer(cfg.model, load_splits(cfg), torch.device("cpu"))
