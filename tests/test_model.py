"""The model's contracts: shapes, missing modalities, masks, and modality-dropout strategies."""

import pytest
import torch
from conftest import TINY_MODEL

from mmemo.config import ModelConfig
from mmemo.encoders import build_encoders
from mmemo.errors import ConfigError
from mmemo.model import CrossAttentionFusion, EmotionModel


def _model(fusion="cross_attention", **audio):
    torch.manual_seed(0)
    cfg = ModelConfig(
        **{
            **TINY_MODEL,
            "fusion": fusion,
            "labels": ["a", "b", "c"],
            "audio_config": {**TINY_MODEL["audio_config"], **audio},
        }
    )
    text_model, audio_model = build_encoders(cfg, vocab_size=50)
    return EmotionModel(cfg, 3, text_model, audio_model).eval()


def _batch(b=3, tokens=7, samples=8000, seed=0):
    g = torch.Generator().manual_seed(seed)
    text = {
        "input_ids": torch.randint(5, 50, (b, tokens), generator=g),
        "attention_mask": torch.ones(b, tokens, dtype=torch.long),
    }
    audio = {
        "input_values": torch.randn(b, samples, generator=g),
        "attention_mask": torch.ones(b, samples, dtype=torch.long),
    }
    return text, audio


@pytest.mark.parametrize("fusion", ["cross_attention", "concat"])
def test_forward_shapes_for_every_condition(fusion):
    model = _model(fusion)
    text, audio = _batch()
    for t, a in [(text, audio), (text, None), (None, audio)]:
        assert model(t, a)["logits"].shape == (3, 3)
    with pytest.raises(ValueError, match="at least one"):
        model(None, None)


@torch.no_grad()
def test_text_only_prediction_ignores_audio_values():
    model = _model()
    text, audio = _batch()
    _, other_audio = _batch(seed=1)
    absent = torch.zeros(3, dtype=torch.bool)
    present = torch.ones(3, dtype=torch.bool)
    reference = model(text, None)["logits"]
    # audio computed but marked absent for every sample: same output whatever the audio holds
    torch.testing.assert_close(model(text, audio, present, absent)["logits"], reference)
    torch.testing.assert_close(model(text, other_audio, present, absent)["logits"], reference)
    # and the other way round
    reference = model(None, audio)["logits"]
    other_text, _ = _batch(seed=2)
    torch.testing.assert_close(model(other_text, audio, absent, present)["logits"], reference)


@torch.no_grad()
def test_per_sample_absence_matches_whole_batch_absence():
    model = _model()
    text, audio = _batch()
    mixed = model(text, audio, torch.tensor([True, False, True]), torch.tensor([True, True, False]))["logits"]
    torch.testing.assert_close(mixed[1], model(None, {k: v[1:2] for k, v in audio.items()})["logits"][0])
    torch.testing.assert_close(mixed[2], model({k: v[2:3] for k, v in text.items()}, None)["logits"][0])


@torch.no_grad()
@pytest.mark.parametrize("fusion", ["cross_attention", "concat"])
def test_padding_does_not_change_the_output(fusion):
    # Layer-norm feature encoders (wav2vec2-large, XLS-R, HuBERT-large) take the mask and are padding-invariant.
    # Group-norm ones (wav2vec2-base) normalise over the padded length by design (HF: pad with zeros and pass
    # no mask), which is why mmemo batches clips of similar length.
    model = _model(fusion, feat_extract_norm="layer", do_stable_layer_norm=True)
    text, audio = _batch(b=1, tokens=6, samples=6400)
    alone = model(text, audio)["logits"]
    padded_text = {
        "input_ids": torch.cat([text["input_ids"], torch.zeros(1, 5, dtype=torch.long)], 1),
        "attention_mask": torch.cat([text["attention_mask"], torch.zeros(1, 5, dtype=torch.long)], 1),
    }
    # pad audio to a whole number of extra frames (320 samples each): the group-norm CNN sees zeros only there
    padded_audio = {
        "input_values": torch.cat([audio["input_values"], torch.zeros(1, 3200)], 1),
        "attention_mask": torch.cat([audio["attention_mask"], torch.zeros(1, 3200, dtype=torch.long)], 1),
    }
    assert model.audio_encoder.pass_mask
    torch.testing.assert_close(model(padded_text, padded_audio)["logits"], alone, atol=1e-4, rtol=1e-4)


def test_fusion_checks_heads_and_pooling():
    with pytest.raises(ConfigError, match="divisible"):
        CrossAttentionFusion(30, 4, 1, 0.0)
    with pytest.raises(ConfigError, match="pooling must be one of"):
        CrossAttentionFusion(32, 4, 1, 0.0, text_pooling="max")


@torch.no_grad()
@pytest.mark.parametrize("fusion", ["cross_attention", "concat"])
@pytest.mark.parametrize("text_pooling, audio_pooling", [("first", "mean"), ("mean", "attentive")])
def test_pooling_choices(fusion, text_pooling, audio_pooling):
    torch.manual_seed(0)
    cfg = ModelConfig(**{**TINY_MODEL, "fusion": fusion, "text_pooling": text_pooling, "audio_pooling": audio_pooling})
    model = EmotionModel(cfg, 3, *build_encoders(cfg, vocab_size=50)).eval()
    text, audio = _batch()
    for t, a in [(text, audio), (text, None), (None, audio)]:
        logits = model(t, a)["logits"]
        assert logits.shape == (3, 3) and torch.isfinite(logits).all()


def test_logits_by_condition_matches_one_fusion_per_condition():
    model = _model()
    text, audio = _batch(b=4)
    text_present = torch.tensor([True, True, False, True])
    audio_present = torch.tensor([True, False, True, True])
    with torch.no_grad():
        out = model.logits_by_condition(text, audio, text_present, audio_present)
        text_enc, audio_enc = model.encode_text(text), model.encode_audio(audio)
        expected = {
            "both": (model.fuse(text_enc, audio_enc, text_present, audio_present), [0, 1, 2, 3]),
            "text": (model.fuse((text_enc[0][[0, 1, 3]], text_enc[1][[0, 1, 3]]), None), [0, 1, 3]),
            "audio": (model.fuse(None, (audio_enc[0][[0, 2, 3]], audio_enc[1][[0, 2, 3]])), [0, 2, 3]),
        }
    for condition, (logits, rows) in expected.items():
        assert out[condition][1].tolist() == rows
        assert torch.allclose(out[condition][0], logits, atol=1e-5), condition
    assert set(model.logits_by_condition(text, None, conditions=("text",))) == {"text"}
    assert len(model.logits_by_condition(text, None)["audio"][1]) == 0  # no row can be heard


def test_encoder_wrappers_own_layers_checkpointing_and_masking():
    model = _model(mask_time_prob=0.05, num_hidden_layers=2)
    text, audio = model.text_encoder, model.audio_encoder
    assert (text.num_layers, audio.num_layers) == (1, 2)
    assert text.layer_of("model.embeddings.word_embeddings.weight") == 0
    assert text.layer_of("model.encoder.layer.0.output.dense.weight") == 1
    assert audio.layer_of("model.feature_extractor.conv_layers.0.conv.weight") == 0
    assert audio.layer_of("model.encoder.layers.1.feed_forward.output_dense.weight") == 2
    assert audio.layer_of("model.encoder.layer_norm.weight") == 2  # above the layers: the top rate
    assert audio.layer_of("layer_weights") is None  # the wrapper's own mixing weights train like the head
    for encoder in (text, audio):
        depths = {encoder.layer_of(name) for name, _ in encoder.named_parameters()}
        assert depths - {None} == set(range(encoder.num_layers + 1))  # every layer and the front end
    audio.gradient_checkpointing(True)
    assert audio.model.is_gradient_checkpointing
    audio.gradient_checkpointing(False)
    assert not audio.model.is_gradient_checkpointing
    assert audio.hf_config.mask_time_prob == 0.05
    audio.disable_masking()
    text.disable_masking()
    assert audio.hf_config.mask_time_prob == 0.0 and audio.hf_config.mask_feature_prob == 0.0


def test_audio_downsample_averages_valid_frames_only():
    from mmemo.model import _downsample

    x = torch.arange(10, dtype=torch.float32).view(1, 5, 2).repeat(2, 1, 1)  # (2, 5, 2)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    pooled, pooled_mask = _downsample(x, mask, 2)
    assert pooled.shape == (2, 3, 2) and pooled_mask.tolist() == [[True, True, True], [True, True, False]]
    assert pooled[0, 2].tolist() == [8.0, 9.0]  # a lone last frame is its own group
    assert pooled[1, 1].tolist() == [4.0, 5.0]  # the padded frame does not dilute the group
