"""The Whisper (log-mel) audio tower: built from a config or a local checkpoint, masks, save/load, training."""

import numpy as np
import pytest
import torch

from mmemo.config import ModelConfig
from mmemo.data.dataset import Collator
from mmemo.encoders import WhisperAudioEncoder, build_encoders
from mmemo.model import EmotionModel

WHISPER = {
    "model_type": "whisper",
    "d_model": 32,
    "encoder_layers": 2,
    "encoder_attention_heads": 2,
    "encoder_ffn_dim": 64,
    "num_mel_bins": 40,
    "max_source_positions": 500,  # 10 s: the positional table bounds the clip length
    "dropout": 0.0,
}
TEXT = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


def _model(**overrides) -> tuple[EmotionModel, ModelConfig]:
    cfg = ModelConfig(
        text_config=TEXT,
        audio_config=WHISPER,
        fusion_dim=32,
        fusion_heads=2,
        dropout=0.0,
        labels=["a", "b", "c"],
        **overrides,
    )
    torch.manual_seed(0)
    text_model, audio_model = build_encoders(cfg, vocab_size=50)
    return EmotionModel(cfg, 3, text_model, audio_model).eval(), cfg


def _features(clips: list[np.ndarray]) -> dict:
    from transformers import WhisperFeatureExtractor

    return Collator(None, WhisperFeatureExtractor(feature_size=40)).pad_audio(clips)


def test_a_short_clip_gives_the_same_states_alone_and_padded_in_a_batch():
    model, _ = _model()
    rng = np.random.default_rng(0)
    short, long = rng.normal(0, 0.1, 16000).astype(np.float32), rng.normal(0, 0.1, 40000).astype(np.float32)
    batch = _features([short, long])
    alone = _features([short])
    assert batch["input_features"].shape[-1] == 250 and alone["input_features"].shape[-1] == 100  # not 3000
    with torch.no_grad():
        states, mask = model.audio_encoder(batch["input_features"], batch["attention_mask"])
        states_alone, mask_alone = model.audio_encoder(alone["input_features"], alone["attention_mask"])
    assert mask.sum(-1).tolist() == [50, 125] and mask_alone.sum().item() == 50
    # With the padded frames masked as keys, every position but the last matches: the last one's convolution
    # window (and STFT window) reaches into the zero padding, as in any convolutional front end.
    torch.testing.assert_close(states[0, :49], states_alone[0, :49], atol=1e-5, rtol=1e-4)


def test_forward_and_backward_reach_every_trainable_tower_weight():
    model, _ = _model(freeze_feature_encoder=False)
    model.train()
    audio = _features([np.random.default_rng(1).normal(0, 0.1, n).astype(np.float32) for n in (8000, 20000)])
    logits = model(audio=audio)["logits"]
    assert logits.shape == (2, 3)
    logits.sum().backward()
    missing = [n for n, p in model.audio_encoder.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing


def test_locking_freezes_the_front_end_and_lower_layers():
    model, _ = _model(freeze_feature_encoder=True, freeze_audio_layers=1)
    tower = model.audio_encoder
    assert isinstance(tower, WhisperAudioEncoder) and tower.num_layers == 2
    assert not any(p.requires_grad for p in tower.model.conv1.parameters())
    assert not any(p.requires_grad for p in tower.model.layers[0].parameters())
    assert all(p.requires_grad for p in tower.model.layers[1].parameters())


def test_a_clip_longer_than_the_positional_table_is_cut_to_it_with_a_warning():
    model, _ = _model()
    rng = np.random.default_rng(4)
    audio = _features([rng.normal(0, 0.1, 16000 * 12).astype(np.float32), np.zeros(8000, dtype=np.float32)])
    with pytest.warns(UserWarning, match="longer than this Whisper encoder's 10 s"):
        states, mask = model.audio_encoder(audio["input_features"], audio["attention_mask"])
    assert states.shape[1] == 500 and mask.sum(-1).tolist() == [500, 25]


def test_a_local_whisper_checkpoint_loads_its_encoder_weights(tmp_path):
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    config = {k: v for k, v in WHISPER.items() if k != "model_type"}
    torch.manual_seed(3)
    full = WhisperForConditionalGeneration(
        WhisperConfig(
            **config,
            decoder_layers=1,
            decoder_attention_heads=2,
            decoder_ffn_dim=32,
            vocab_size=60,
            max_target_positions=16,
            pad_token_id=0,
            bos_token_id=0,
            eos_token_id=0,
            decoder_start_token_id=1,
        )
    )
    full.save_pretrained(tmp_path / "whisper")
    WhisperFeatureExtractor(feature_size=40).save_pretrained(tmp_path / "whisper")
    cfg = ModelConfig(text_config=TEXT, audio_encoder=str(tmp_path / "whisper"))
    _, audio_model = build_encoders(cfg, vocab_size=50)
    assert not hasattr(audio_model, "decoder")
    torch.testing.assert_close(audio_model.layers[1].fc1.weight, full.model.encoder.layers[1].fc1.weight)
    from mmemo.builders import load_feature_extractor

    assert type(load_feature_extractor(cfg)).__name__ == "WhisperFeatureExtractor"


@pytest.mark.slow
def test_train_save_load_predict_with_the_whisper_tower(synth_corpus, tmp_path):
    from conftest import tiny_config_dict

    from mmemo.config import config_from_dict
    from mmemo.inference import EmotionRecognizer
    from mmemo.train import train

    cfg = tiny_config_dict(synth_corpus, tmp_path / "run", epochs=1)
    cfg["model"]["audio_config"] = dict(WHISPER)
    result = train(config_from_dict(cfg))
    rec = EmotionRecognizer.from_pretrained(result["model_dir"])
    assert isinstance(rec.model.audio_encoder, WhisperAudioEncoder)
    wave = np.random.default_rng(2).normal(0, 0.1, 24000).astype(np.float32)
    one = rec.predict(audio=wave, sampling_rate=16000)
    batch = rec.predict(audio=[wave, wave[:9000]], sampling_rate=16000)
    assert one.label in rec.labels and batch[0].probabilities == pytest.approx(one.probabilities, abs=1e-5)


def test_the_front_end_convolutions_as_linear_layers_give_the_same_states():
    model, _ = _model()
    rng = np.random.default_rng(3)
    batch = _features([rng.normal(0, 0.1, n).astype(np.float32) for n in (16000, 40000, 40160)])
    with torch.no_grad():
        before, mask = model.audio_encoder.hidden_states(batch["input_features"], batch["attention_mask"])
        model.audio_encoder.convolutions_as_linear()
        after, mask_after = model.audio_encoder.hidden_states(batch["input_features"], batch["attention_mask"])
    assert not any(isinstance(m, torch.nn.Conv1d) for m in model.audio_encoder.modules())
    assert torch.equal(mask, mask_after)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_int8_quantizes_the_whisper_front_end_too(synth_corpus, tmp_path):
    """quantize() reaches Whisper's two convolutions (as linear layers over their windows): no fp32 convolution or
    linear layer is left in the tower, and the predictions stay close to fp32."""
    from conftest import tiny_config_dict

    from mmemo.config import config_from_dict
    from mmemo.inference import EmotionRecognizer
    from mmemo.train import train

    cfg = tiny_config_dict(synth_corpus, tmp_path / "run", epochs=1)
    cfg["model"]["audio_config"] = dict(WHISPER)
    model_dir = train(config_from_dict(cfg))["model_dir"]
    fp32, int8 = EmotionRecognizer.from_pretrained(model_dir), EmotionRecognizer.from_pretrained(model_dir, int8=True)
    fp32.temperature = int8.temperature = 1.0  # a 1-epoch model's calibration flattens every probability
    tower = int8.model.audio_encoder
    assert not any(type(m) in (torch.nn.Conv1d, torch.nn.Linear) for m in tower.modules())
    waves = [np.random.default_rng(seed).normal(0, 0.1, 32000).astype(np.float32) for seed in range(4)]
    for a, b in zip(fp32.predict(audio=waves, sampling_rate=16000), int8.predict(audio=waves, sampling_rate=16000)):
        assert max(abs(a.probabilities[k] - b.probabilities[k]) for k in a.probabilities) < 0.05
    kept = EmotionRecognizer.from_pretrained(model_dir).quantize(per_channel=False, convolutions=False)
    assert isinstance(kept.model.audio_encoder.model.conv2, torch.nn.Conv1d)
