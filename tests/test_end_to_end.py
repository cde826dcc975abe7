"""Synthetic corpus → train → evaluate → save → load → predict, with the real CLI and real files."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from mmemo import EmotionRecognizer, Prediction
from mmemo.data.manifest import read_manifest
from mmemo.errors import ConfigError, DataError, ModelLoadError
from mmemo.evaluate import evaluate_manifest

pytestmark = pytest.mark.slow  # trains and runs the CLI as processes


def _mmemo(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "mmemo", *map(str, args)], capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_training_learns_and_writes_the_run_folder(trained_run):
    out = trained_run["out_dir"]
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "report.md",
        "confusion_matrix.png",
        "training_curves.png",
        "model/config.json",
        "model/model.safetensors",
        "model/tokenizer.json",
        "model/preprocessor_config.json",
        "model/README.md",
    ):
        assert (out / name).is_file(), name
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 12 and history[-1]["train_loss"] < history[0]["train_loss"]
    test = trained_run["test"]
    # a 240-clip corpus and 12 tiny epochs: well above chance (0.25) when fused; text alone tells only valence
    assert test["both"]["ua"] >= 0.5, test
    assert test["text"]["ua"] >= 0.35, test
    assert set(test) == {"both", "text", "audio"}
    assert "| text+audio |" in (out / "report.md").read_text()


def test_save_load_round_trip_is_exact(trained_run, synth_corpus, tmp_path):
    rec = EmotionRecognizer.from_pretrained(trained_run["model_dir"])
    rec.save_pretrained(tmp_path / "copy")
    again = EmotionRecognizer.from_pretrained(tmp_path / "copy")
    for (name, a), (_, b) in zip(rec.model.state_dict().items(), again.model.state_dict().items()):
        assert torch.equal(a, b), name
    row = next(r for r in read_manifest(synth_corpus) if r["split"] == "test")
    p1, p2 = rec.predict(text=row["text"], audio=row["audio"]), again.predict(text=row["text"], audio=row["audio"])
    assert p1 == p2
    assert again.labels == ["angry", "happy", "neutral", "sad"]


def test_evaluate_matches_training_scores(trained_run, synth_corpus):
    results = evaluate_manifest(trained_run["model_dir"], synth_corpus, split="test")
    for cond in ("both", "text", "audio"):
        assert results[cond]["ua"] == pytest.approx(trained_run["test"][cond]["ua"])


def test_predict_api_accepts_every_input_kind(trained_run, synth_corpus):
    rec = EmotionRecognizer.from_pretrained(trained_run["model_dir"])
    row = next(r for r in read_manifest(synth_corpus) if r["split"] == "test")
    audio, rate = sf.read(row["audio"], dtype="float32")
    results = [
        rec.predict(text=row["text"]),
        rec.predict(audio=row["audio"]),
        rec.predict(text=row["text"], audio=audio, sampling_rate=rate),
        rec.predict(text=row["text"], audio=np.stack([audio, audio]), sampling_rate=rate),  # stereo
        rec.predict(audio=torch.from_numpy(audio), sampling_rate=rate),
    ]
    for result in results:
        assert isinstance(result, Prediction)
        assert result.label in rec.labels
        assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert result.label == max(result.probabilities, key=result.probabilities.get)
    assert results[0].modalities == ("text",) and results[1].modalities == ("audio",)
    assert results[2].modalities == ("text", "audio")
    assert results[2].probabilities == pytest.approx(results[3].probabilities, abs=1e-5)
    # 8 kHz input is resampled to the model rate: (nearly) the answer for the same clip resampled beforehand
    import librosa

    low = librosa.resample(audio, orig_sr=rate, target_sr=8000)
    at_8k = rec.predict(audio=low, sampling_rate=8000).probabilities
    at_16k = rec.predict(audio=librosa.resample(low, orig_sr=8000, target_sr=rate), sampling_rate=rate).probabilities
    assert at_8k == pytest.approx(at_16k, abs=0.02)
    batch = rec.predict(text=[row["text"], "", "I hate this."], audio=[row["audio"], row["audio"], None])
    assert [p.modalities for p in batch] == [("text", "audio"), ("audio",), ("text",)]
    assert batch[0] == results[2] or batch[0].label == results[2].label
    with pytest.raises(DataError, match="needs text"):
        rec.predict()
    with pytest.raises(DataError, match="sampling_rate"):
        rec.predict(audio=audio)
    with pytest.raises(DataError, match="empty text and no audio"):
        rec.predict(text="   ")


def test_cli_evaluate_json_and_predict(trained_run, synth_corpus):
    model = trained_run["model_dir"]
    scores = json.loads(_mmemo("evaluate", model, synth_corpus, "--json").stdout)
    assert set(scores) == {"both", "text", "audio"}
    assert set(scores["both"]) == {"wa", "ua", "macro_f1", "weighted_f1", "n", "per_class", "confusion", "labels"}
    int8 = json.loads(_mmemo("evaluate", model, synth_corpus, "--int8", "--json").stdout)
    assert {c: int8[c]["n"] for c in int8} == {c: scores[c]["n"] for c in scores}
    assert all(abs(int8[c]["ua"] - scores[c]["ua"]) <= 0.1 for c in scores)  # int8 costs little accuracy
    row = next(r for r in read_manifest(synth_corpus) if r["split"] == "test")
    out = json.loads(_mmemo("predict", model, "--text", row["text"], "--audio", row["audio"]).stdout)
    assert set(out) == {"label", "probabilities", "modalities"} and out["modalities"] == ["text", "audio"]
    assert sum(out["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_cli_errors_are_one_line(trained_run, tmp_path):
    cases = [
        ("predict", trained_run["model_dir"]),  # no input
        ("predict", trained_run["model_dir"], "--audio", tmp_path / "missing.wav"),
        ("predict", tmp_path / "no_model", "--text", "hi"),
        ("train", "quickstart", "train.epochz=3"),
        ("evaluate", trained_run["model_dir"], tmp_path / "missing.jsonl"),
    ]
    for args in cases:
        proc = _mmemo(*args, check=False)
        assert proc.returncode == 2, args
        assert "Traceback" not in proc.stderr and proc.stderr.startswith("mmemo "), proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_model_folder_problems_are_explained(trained_run, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(trained_run["model_dir"], broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="missing model.safetensors"):
        EmotionRecognizer.from_pretrained(broken)
    (broken / "model.safetensors").write_bytes((trained_run["model_dir"] / "model.safetensors").read_bytes())
    meta = json.loads((broken / "config.json").read_text())
    meta["mmemo_format"] = 99
    (broken / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="mmemo_format 99"):
        EmotionRecognizer.from_pretrained(broken)


def test_training_refuses_to_overwrite_a_run(trained_run, synth_corpus):
    from conftest import tiny_config_dict

    from mmemo.config import config_from_dict
    from mmemo.train import setup

    with pytest.raises(ConfigError, match="already exists"):
        setup(config_from_dict(tiny_config_dict(synth_corpus, trained_run["out_dir"])))


def test_deterministic_training_gives_bit_identical_weights(synth_corpus, tmp_path):
    from conftest import tiny_config_dict

    from mmemo.config import config_from_dict
    from mmemo.train import train

    threads = torch.get_num_threads()
    try:
        weights = []
        for name in ("first", "second"):
            cfg = tiny_config_dict(synth_corpus, tmp_path / name, epochs=1, deterministic=True, seed=3)
            train(config_from_dict(cfg))
            assert torch.are_deterministic_algorithms_enabled() and torch.get_num_threads() == 1
            weights.append((tmp_path / name / "model" / "model.safetensors").read_bytes())
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(threads)
    assert weights[0] == weights[1]
