"""The acoustic-statistics token: standardisation, speaker references, saved statistics, predict with a profile."""

import numpy as np
import pytest
import torch

from mmemo.config import ModelConfig
from mmemo.data.acoustic import FEATURE_NAMES
from mmemo.data.speakers import SpeakerProfile
from mmemo.encoders import build_encoders
from mmemo.errors import DataError
from mmemo.model import EmotionModel

TINY = {
    "text_config": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
    "audio_config": {
        "model_type": "whisper",
        "d_model": 32,
        "encoder_layers": 1,
        "encoder_attention_heads": 2,
        "encoder_ffn_dim": 64,
        "num_mel_bins": 40,
        "max_source_positions": 500,
    },
    "fusion_dim": 32,
    "fusion_heads": 2,
}


def _model(**overrides) -> EmotionModel:
    cfg = ModelConfig(**TINY, labels=["a", "b"], acoustic_features=True, dropout=0.0, **overrides)
    torch.manual_seed(0)
    return EmotionModel(cfg, 2, *build_encoders(cfg, vocab_size=40)).eval()


def test_standardisation_uses_the_reference_and_falls_back_to_the_training_statistics():
    model = _model()
    n = len(FEATURE_NAMES)
    model.set_acoustic_statistics(torch.full((n,), 2.0), torch.full((n,), 4.0))
    x = torch.full((2, n), 10.0)
    reference = torch.stack(
        [torch.stack([torch.full((n,), 6.0), torch.full((n,), 2.0)]), torch.full((2, n), float("nan"))]
    )
    z = model.standardise_acoustic(x, reference)
    assert torch.allclose(z[0], torch.full((n,), 2.0)) and torch.allclose(z[1], torch.full((n,), 2.0))
    assert torch.allclose(model.standardise_acoustic(x), torch.full((2, n), 2.0))
    assert model.standardise_acoustic(torch.full((1, n), 1e6)).max() == 10.0  # clipped


def test_the_token_joins_the_audio_stream_and_is_masked_with_it():
    from transformers import WhisperFeatureExtractor

    from mmemo.data.dataset import Collator

    model = _model()
    collator = Collator(None, WhisperFeatureExtractor(feature_size=40), acoustic_features=True)
    rng = np.random.default_rng(0)
    items = [
        {"text": "", "audio": rng.normal(0, 0.1, n).astype(np.float32), "id": i, "label": 0}
        for i, n in enumerate((8000, 16000))
    ]
    audio = collator(items)["audio"]
    assert audio["functionals"].shape == (2, len(FEATURE_NAMES)) and torch.isnan(audio["reference"]).all()
    states, mask = model.encode_audio(audio)
    assert states.shape[1] == 1 + 50 and mask[:, 0].all()  # 16000 samples → 100 frames → 50 positions, + token
    # the token moves the logits: other statistics, other prediction
    changed = dict(audio, functionals=audio["functionals"] + 3.0)
    with torch.no_grad():
        assert not torch.allclose(model(audio=audio)["logits"], model(audio=changed)["logits"])


@pytest.mark.slow
def test_statistics_travel_with_the_model_and_a_speaker_profile_changes_predictions(synth_corpus, tmp_path):
    from conftest import tiny_config_dict

    from mmemo.config import config_from_dict
    from mmemo.data.manifest import read_manifest
    from mmemo.inference import EmotionRecognizer
    from mmemo.train import train

    cfg = tiny_config_dict(synth_corpus, tmp_path / "run", epochs=1)
    cfg["model"].update(acoustic_features=True, acoustic_normalization="speaker")
    result = train(config_from_dict(cfg))
    rec = EmotionRecognizer.from_pretrained(result["model_dir"])
    train_rows = [r for r in read_manifest(synth_corpus) if r["split"] == "train"]
    from mmemo.data.acoustic import functionals
    from mmemo.data.audio import load_audio

    table = np.stack([functionals(load_audio(r["audio"], 16000), 16000) for r in train_rows])
    population = SpeakerProfile.enrol(table)
    np.testing.assert_allclose(rec.model.acoustic_mean.numpy(), population.mean, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(rec.model.acoustic_std.numpy(), population.std, rtol=1e-4, atol=1e-4)

    clips = [r["audio"] for r in read_manifest(synth_corpus) if r["split"] == "test"][:6]
    profile = rec.enrol_speaker(clips)
    profile.save(tmp_path / "me.json")
    plain = rec.predict(audio=clips[0])
    personal = rec.predict(audio=clips[0], speaker_profile=tmp_path / "me.json")
    assert personal.probabilities != pytest.approx(plain.probabilities, abs=1e-6)
    assert rec.predict(audio=clips[0], speaker_profile=profile).probabilities == pytest.approx(personal.probabilities)

    # the same through the CLI: `mmemo enrol` writes the profile, `mmemo predict --speaker-profile` uses it
    import json
    import subprocess
    import sys

    mmemo = [sys.executable, "-m", "mmemo"]
    enrolled = subprocess.run(
        [*mmemo, "enrol", str(result["model_dir"]), *map(str, clips), "-o", str(tmp_path / "cli.json")],
        capture_output=True,
        text=True,
    )
    assert enrolled.returncode == 0, enrolled.stderr
    assert SpeakerProfile.load(tmp_path / "cli.json").mean == pytest.approx(profile.mean, rel=1e-5)
    again = subprocess.run(
        [*mmemo, "enrol", str(result["model_dir"]), str(clips[0]), "-o", str(tmp_path / "cli.json")],
        capture_output=True,
        text=True,
    )
    assert again.returncode == 2 and "already exists" in again.stderr  # never overwrites a user's file
    predicted = subprocess.run(
        [
            *mmemo,
            "predict",
            str(result["model_dir"]),
            "--audio",
            str(clips[0]),
            "--json",
            "--speaker-profile",
            str(tmp_path / "cli.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)["probabilities"] == pytest.approx(personal.probabilities, abs=1e-5)


def test_a_profile_for_a_model_without_acoustic_statistics_is_refused(trained_run):
    from mmemo.inference import EmotionRecognizer

    rec = EmotionRecognizer.from_pretrained(trained_run["model_dir"])
    profile = SpeakerProfile.enrol(np.ones((2, len(FEATURE_NAMES))))
    with pytest.raises(DataError, match="no utterance statistics"):
        rec.predict(text="hello", speaker_profile=profile)
