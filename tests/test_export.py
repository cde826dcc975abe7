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
    assert third_party == set(RUNTIME_REQUIREMENTS)  # the pip names equal the import names for all five
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
        assert set(timings) == {"clip_text_p50_ms", "clip_text_p95_ms", "text_p50_ms", "batch32_ms"}
        assert all(v > 0 for v in timings.values())
    assert "| onnx_int8 |" in capsys.readouterr().out
