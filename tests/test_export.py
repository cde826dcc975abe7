"""ONNX export: parity with PyTorch, int8, the torch-free runtime, the CLI, and the predict benchmark."""

import ast
import contextlib
import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mmemo import EmotionRecognizer
from mmemo.cli import main
from mmemo.data.manifest import read_manifest
from mmemo.export import export_onnx
from mmemo.onnx_runtime import OnnxEmotionRecognizer


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    """The fp32 export through the CLI (its printout kept), the int8 one through the library."""
    out = tmp_path_factory.mktemp("onnx")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["export", str(trained_run["model_dir"]), "--onnx", str(out / "fp32")]) == 0
    return {
        "fp32": {"out_dir": out / "fp32", "printed": printed.getvalue()},
        "int8": export_onnx(trained_run["model_dir"], out / "int8", int8=True),
    }


@pytest.fixture(scope="module")
def test_rows(synth_corpus):
    return [r for r in read_manifest(synth_corpus) if r["split"] == "test"][:8]


def _max_diff(expected, got):
    diff = 0.0
    for e, g in zip(expected, got):
        assert g["modalities"] == list(e.modalities) and set(g["per_modality"]) == set(e.per_modality)
        pairs = [(e.probabilities, g["probabilities"])]
        pairs += [(e.per_modality[m], g["per_modality"][m]) for m in e.per_modality]
        diff = max(diff, *(abs(p[k] - q[k]) for p, q in pairs for k in p))
    return diff


def test_fp32_export_matches_pytorch(trained_run, exported, test_rows):
    folder = exported["fp32"]["out_dir"]
    printed = exported["fp32"]["printed"]
    assert float(printed.split("max |probability difference| = ")[1].split()[0]) <= 1e-3 and "fp32" in printed
    for name in (
        "text_encoder.onnx",
        "audio_encoder.onnx",
        "fusion.onnx",
        "tokenizer.json",
        "mmemo_onnx.json",
        "mmemo_onnx_runtime.py",
    ):
        assert (folder / name).is_file(), name
    rec = EmotionRecognizer.from_pretrained(trained_run["model_dir"])
    runtime = OnnxEmotionRecognizer(folder)
    assert runtime.labels == rec.labels and runtime.temperature == rec.temperature
    # real clips of different lengths in one padded batch, with a text-only and an audio-only item
    texts = [r["text"] for r in test_rows]
    audios = [r["audio"] for r in test_rows]
    texts[1], audios[2] = "", None
    got = runtime.predict(text=texts, audio=audios, batch_size=4)
    assert _max_diff(rec.predict(text=texts, audio=audios, batch_size=4), [g.to_dict() for g in got]) <= 1e-3
    single = runtime.predict(text=test_rows[0]["text"])
    expected = rec.predict(text=test_rows[0]["text"])
    assert single.modalities == ("text",) and single.label == expected.label
    # the runtime's Prediction has the fields and the JSON shape of mmemo's own
    assert [f.name for f in dataclasses.fields(single)] == [f.name for f in dataclasses.fields(expected)]
    assert set(single.to_dict()) == set(expected.to_dict()) and single.to_dict()["segments"] == []
    assert f"'{single.label}': {round(single.probabilities[single.label], 3)}" in repr(single)


def test_int8_export_stays_close(trained_run, exported, test_rows):
    assert json.loads((exported["int8"]["out_dir"] / "mmemo_onnx.json").read_text())["int8"] is True
    fp32_size = sum(f.stat().st_size for f in exported["fp32"]["out_dir"].glob("*.onnx"))
    int8_size = sum(f.stat().st_size for f in exported["int8"]["out_dir"].glob("*.onnx"))
    assert int8_size < fp32_size
    rec = EmotionRecognizer.from_pretrained(trained_run["model_dir"])
    runtime = OnnxEmotionRecognizer(exported["int8"]["out_dir"])
    texts, audios = [r["text"] for r in test_rows], [r["audio"] for r in test_rows]
    assert exported["int8"]["max_abs_diff"] < 0.05
    got = [g.to_dict() for g in runtime.predict(text=texts, audio=audios)]
    assert _max_diff(rec.predict(text=texts, audio=audios), got) < 0.05


def test_the_runtime_predicts_without_torch(trained_run, exported, test_rows, tmp_path):
    folder = exported["fp32"]["out_dir"]
    row = test_rows[0]
    from scipy.signal import resample_poly

    audio, rate = sf.read(row["audio"])
    audio = resample_poly(audio, 441, 160)  # 16 kHz → 44.1 kHz
    stereo_44k = tmp_path / "stereo_44k.flac"
    sf.write(stereo_44k, np.stack([audio, audio], 1), 44100)
    # The copy in the export folder is the deployable runtime: no mmemo package, no torch.
    script = f"""
import json, sys
sys.path.insert(0, {str(folder)!r})
from mmemo_onnx_runtime import OnnxEmotionRecognizer
rec = OnnxEmotionRecognizer({str(folder)!r}, threads=1)
out = rec.predict(text=[{row["text"]!r}, ""], audio=[{row["audio"]!r}, {str(stereo_44k)!r}])
print(json.dumps({{"results": [p.to_dict() for p in out], "torch": "torch" in sys.modules, "mmemo": "mmemo" in sys.modules}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["torch"] is False and out["mmemo"] is False
    rec = EmotionRecognizer.from_pretrained(trained_run["model_dir"])
    expected = rec.predict(text=row["text"], audio=row["audio"])
    assert out["results"][0]["label"] == expected.label
    assert _max_diff([expected], out["results"][:1]) <= 1e-3
    assert out["results"][1]["modalities"] == ["audio"]


def test_export_folder_has_a_readme_that_names_what_the_runtime_imports(trained_run, exported):
    from mmemo import onnx_runtime
    from mmemo.export import RUNTIME_REQUIREMENTS

    readme = (exported["fp32"]["out_dir"] / "README.md").read_text()
    tree = ast.parse(Path(onnx_runtime.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
    third_party = imported - set(sys.stdlib_module_names) - {"__future__"}
    assert third_party == set(RUNTIME_REQUIREMENTS)  # the pip names equal the import names for all six
    assert f"pip install {' '.join(RUNTIME_REQUIREMENTS)}" in readme
    assert "from mmemo_onnx_runtime import OnnxEmotionRecognizer" in readme and "sampling_rate=" in readme
    labels = EmotionRecognizer.from_pretrained(trained_run["model_dir"]).labels
    assert all(f"`{label}`" in readme for label in labels) and "(int8)" not in readme
    assert "(int8)" in (exported["int8"]["out_dir"] / "README.md").read_text()
    # the README's example runs as written, against the export (here with this folder's path)
    code = (
        readme.split("```python\n")[1].split("```")[0].replace("path/to/this/folder", str(exported["fp32"]["out_dir"]))
    )
    code = "\n".join(line for line in code.splitlines() if "b.flac" not in line).replace(
        'audio="clip.wav"', "audio=None"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] in labels


def test_cli_export_refuses_to_overwrite(trained_run, exported, capsys):
    assert main(["export", str(trained_run["model_dir"]), "--onnx", str(exported["fp32"]["out_dir"])]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_predict_reports_every_variant(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert main(["bench", "predict", "--size", "tiny", "--threads", "1", "--repeats", "2", "-o", str(path)]) == 0
    results = json.loads(path.read_text())
    assert set(results) == {"fp32", "int8", "onnx", "onnx_int8", "baseline"}
    for timings in results.values():
        assert set(timings) == {
            "clip_text_p50_ms",
            "clip_text_p95_ms",
            "clip3_text_p50_ms",
            "audio3_p50_ms",
            "text_p50_ms",
            "batch32_ms",
        }
        assert all(v > 0 for v in timings.values())
    assert "| onnx_int8 |" in capsys.readouterr().out


def test_bench_predict_times_only_the_variants_asked_for(tmp_path):
    path = tmp_path / "bench.json"
    args = ["bench", "predict", "--size", "tiny", "--threads", "1", "--repeats", "1", "--variants", "int8"]
    assert main([*args, "-o", str(path)]) == 0
    assert set(json.loads(path.read_text())) == {"fp32", "int8"}  # fp32 always: the speed-ups are over it


# Whisper towers: a tiny random one built from a config, with the frames head and with the pooled head (the latter
# also with the acoustic-statistics token, so one export covers both speaker references).
WHISPER = {
    "model_type": "whisper",
    "d_model": 32,
    "encoder_layers": 2,
    "encoder_attention_heads": 2,
    "encoder_ffn_dim": 64,
    "num_mel_bins": 80,
    "max_source_positions": 1500,
    "dropout": 0.0,
}


def _whisper_recognizer(synth_corpus, folder, head: str, acoustic: bool = False):
    """A tiny Whisper model with random weights (the classifier scaled up so probabilities are far from uniform),
    a pooled head's statistics taken from real clips, saved to `folder`."""
    import torch

    from mmemo.builders import load_feature_extractor
    from mmemo.config import ModelConfig
    from mmemo.data.acoustic import functionals
    from mmemo.data.audio import load_audio
    from mmemo.data.text import train_wordpiece
    from mmemo.encoders import build_encoders
    from mmemo.model import EmotionModel

    rows = read_manifest(synth_corpus)
    cfg = ModelConfig(
        text_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
        audio_config=WHISPER,
        fusion_dim=32,
        fusion_heads=2,
        dropout=0.0,
        labels=["angry", "happy", "neutral", "sad"],
        audio_head=head,
        pooled_layers=[1, 2],
        acoustic_features=acoustic,
    )
    torch.manual_seed(0)
    tokenizer = train_wordpiece([r["text"] for r in rows], vocab_size=300)
    text_model, audio_model = build_encoders(cfg, vocab_size=len(tokenizer))
    model = EmotionModel(cfg, len(cfg.labels), text_model, audio_model)
    with torch.no_grad():
        model.classifier[-1].weight.mul_(20.0)
    recognizer = EmotionRecognizer(model, tokenizer, load_feature_extractor(cfg), cfg)
    waves = [load_audio(r["audio"], 16000) for r in rows[:16]]
    if head == "pooled":
        states = recognizer.pooled_states(waves)
        model.set_pooled_statistics(torch.tensor(states.mean(0)), torch.tensor(states.std(0) + 1e-3))
    if acoustic:
        table = np.stack([functionals(w, 16000) for w in waves])
        model.set_acoustic_statistics(torch.tensor(table.mean(0)), torch.tensor(table.std(0) + 1e-3))
    return recognizer.save_pretrained(folder)


@pytest.fixture(scope="module")
def whisper_exports(synth_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("whisper_onnx")
    frames = _whisper_recognizer(synth_corpus, root / "frames", "frames")
    pooled = _whisper_recognizer(synth_corpus, root / "pooled", "pooled", acoustic=True)
    return {
        "frames": {"model_dir": frames, **export_onnx(frames, root / "frames_onnx")},
        "pooled": {"model_dir": pooled, **export_onnx(pooled, root / "pooled_onnx")},
        "pooled_int8": {"model_dir": pooled, **export_onnx(pooled, root / "pooled_int8", int8=True)},
    }


def _clips(test_rows):
    """Real clips of several lengths (1.7-3.9 s) and one of 6 s (two joined): longer than the traced example."""
    from mmemo.data.audio import load_audio

    waves = [load_audio(r["audio"], 16000) for r in test_rows[:5]]
    return waves + [np.concatenate(waves[:2])[: 6 * 16000]]


def test_the_runtime_computes_whispers_log_mel_as_transformers_does():
    from transformers import WhisperFeatureExtractor

    from mmemo.onnx_runtime import whisper_log_mel

    extractor = WhisperFeatureExtractor(feature_size=80)
    rng = np.random.default_rng(0)
    for n in (400, 401, 16000, 16161, 57123):
        t = np.arange(n) / 16000
        for wave in (rng.normal(0, 0.1, n), 0.3 * np.sin(2 * np.pi * 140 * t), np.zeros(n)):
            wave = wave.astype(np.float32)
            expected = extractor(wave, sampling_rate=16000, padding="longest").input_features[0]
            got = whisper_log_mel(wave, extractor.mel_filters)
            assert got.shape == expected.shape == (80, n // 160)
            np.testing.assert_allclose(got, expected, atol=1e-4)  # measured: 3.2e-5 (transformers' float32 STFT)


@pytest.mark.parametrize("head", ["frames", "pooled"])
def test_whisper_exports_match_pytorch_batched_and_alone(whisper_exports, test_rows, head):
    export = whisper_exports[head]
    assert export["max_abs_diff"] <= 1e-3
    folder = export["out_dir"]
    assert (folder / "mel_filters.npy").is_file() and (folder / "mmemo_acoustic.py").is_file() == (head == "pooled")
    rec = EmotionRecognizer.from_pretrained(export["model_dir"])
    np.testing.assert_array_equal(np.load(folder / "mel_filters.npy"), rec.feature_extractor.mel_filters)
    runtime = OnnxEmotionRecognizer(folder)
    waves = _clips(test_rows)
    texts = [r["text"] for r in test_rows[: len(waves)]]
    texts[1] = ""
    expected = rec.predict(text=texts, audio=waves, sampling_rate=16000)
    batched = [g.to_dict() for g in runtime.predict(text=texts, audio=waves, sampling_rate=16000)]
    assert _max_diff(expected, batched) <= 1e-3
    alone = [runtime.predict(text=t, audio=w, sampling_rate=16000).to_dict() for t, w in zip(texts, waves)]
    assert _max_diff(expected, alone) <= 1e-3
    # the probabilities are far from uniform, so the bound is a real check
    assert max(max(p.probabilities.values()) for p in expected) > 0.5


def test_a_speaker_profile_standardises_the_pooled_states_and_functionals_in_the_export(
    whisper_exports, test_rows, synth_corpus, tmp_path
):
    from mmemo.data.speakers import SpeakerProfile

    export = whisper_exports["pooled"]
    rec = EmotionRecognizer.from_pretrained(export["model_dir"])
    runtime = OnnxEmotionRecognizer(export["out_dir"])
    rows = read_manifest(synth_corpus)
    speaker = test_rows[0]["speaker"]
    profile = rec.enrol_speaker([r["audio"] for r in rows if r["speaker"] == speaker][:6])
    path = profile.save(tmp_path / "me.json")
    waves = _clips(test_rows)
    plain = rec.predict(audio=waves, sampling_rate=16000)
    expected = rec.predict(audio=waves, sampling_rate=16000, speaker_profile=profile)
    for given in (path, profile):  # a profile file or a SpeakerProfile
        got = [g.to_dict() for g in runtime.predict(audio=waves, sampling_rate=16000, speaker_profile=given)]
        assert _max_diff(expected, got) <= 1e-3
    assert max(abs(p.probabilities[k] - q.probabilities[k]) for p, q in zip(plain, expected) for k in rec.labels) > 0.01

    other = SpeakerProfile.enrol(np.stack([profile.mean] * 2), np.zeros((2, 2, 32)), "another:[1, 2]")
    with pytest.raises(ValueError, match="was enrolled with another audio tower"):
        runtime.predict(audio=waves[0], sampling_rate=16000, speaker_profile=other)
    functionals_only = SpeakerProfile(profile.names, profile.version, profile.n_clips, profile.mean, profile.std)
    with pytest.raises(ValueError, match="has no audio-tower statistics"):
        runtime.predict(audio=waves[0], sampling_rate=16000, speaker_profile=functionals_only)
    frames = OnnxEmotionRecognizer(whisper_exports["frames"]["out_dir"])
    with pytest.raises(ValueError, match="no utterance statistics to standardise"):
        frames.predict(audio=waves[0], sampling_rate=16000, speaker_profile=path)


def test_a_whisper_int8_export_stays_close(whisper_exports, test_rows):
    """...and its front-end convolutions are int8 MatMuls too: no convolution, and the only float MatMuls left are
    attention's (two activations), none with a weight."""
    import onnx

    export = whisper_exports["pooled_int8"]
    graph = onnx.load(str(export["out_dir"] / "audio_encoder.onnx")).graph
    weights = {w.name for w in graph.initializer}
    ops = [node.op_type for node in graph.node]
    assert "MatMulInteger" in ops and not {"Conv", "ConvInteger"} & set(ops)
    assert not [n.name for n in graph.node if n.op_type == "MatMul" and weights & set(n.input)]
    rec = EmotionRecognizer.from_pretrained(export["model_dir"])
    waves = _clips(test_rows)
    got = [g.to_dict() for g in OnnxEmotionRecognizer(export["out_dir"]).predict(audio=waves, sampling_rate=16000)]
    assert export["max_abs_diff"] < 0.05 and _max_diff(rec.predict(audio=waves, sampling_rate=16000), got) < 0.05


def test_a_whisper_export_with_the_acoustic_token_runs_without_torch_or_mmemo(whisper_exports, test_rows, tmp_path):
    folder = whisper_exports["pooled"]["out_dir"]
    row = test_rows[0]
    script = f"""
import json, sys
sys.path.insert(0, {str(folder)!r})
from mmemo_onnx_runtime import OnnxEmotionRecognizer
rec = OnnxEmotionRecognizer({str(folder)!r}, threads=1)
p = rec.predict(text={row["text"]!r}, audio={row["audio"]!r})
print(json.dumps({{"result": p.to_dict(), "torch": "torch" in sys.modules, "mmemo": "mmemo" in sys.modules}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["torch"] is False and out["mmemo"] is False
    expected = EmotionRecognizer.from_pretrained(whisper_exports["pooled"]["model_dir"]).predict(
        text=row["text"], audio=row["audio"]
    )
    assert _max_diff([expected], [out["result"]]) <= 1e-3
    readme = (folder / "README.md").read_text()
    assert "librosa" in readme and "speaker_profile=" in readme and "30 s" in readme
