"""Real ASR plumbing with a converted Whisper: a recording without a transcript gets one, the text tower reads it
(`mmemo predict --asr`, the demo's `analyze`, `transcribe_missing` for batches), and a language choice reaches
Whisper's prompt. The tiny random Whisper's transcripts are gibberish, but every step is the real one."""

import json

import numpy as np
import pytest
import soundfile as sf
from conftest import build_tiny_whisper, ct2_convert

from mmemo.asr import load_transcriber, transcribe_file, transcribe_missing, transcriber_from_pipeline
from mmemo.cli import main
from mmemo.convert import convert_ct2_whisper
from mmemo.data.manifest import read_manifest
from mmemo.errors import ConfigError

pytest.importorskip("ctranslate2", reason="needs CTranslate2's converter: pip install -e '.[dev]'")
pytestmark = pytest.mark.slow  # Whisper decoding through transformers' pipeline: tens of seconds on 2 cores


@pytest.fixture(scope="module")
def whisper(whisper_ct2, tmp_path_factory):
    """The tiny English-only Whisper, converted from CTranslate2's format as a user would."""
    return convert_ct2_whisper(whisper_ct2["ct2"], tmp_path_factory.mktemp("asr") / "whisper").out


@pytest.fixture(scope="module")
def multilingual(tmp_path_factory):
    root = tmp_path_factory.mktemp("asr_multilingual")
    ct2 = ct2_convert(build_tiny_whisper(root / "hf", multilingual=True, seed=2), root / "ct2")
    return convert_ct2_whisper(ct2, root / "whisper").out


@pytest.fixture(scope="module")
def clip(synth_corpus) -> str:
    return next(r["audio"] for r in read_manifest(synth_corpus) if r["split"] == "test")


def test_a_converted_whisper_transcribes_a_clip(whisper, clip):
    transcriber = load_transcriber(whisper, device="cpu")
    text = transcribe_file(transcriber, clip)
    assert text and text.isprintable()  # gibberish from a random model, but visible text
    assert transcribe_file(transcriber, clip) == text  # greedy decoding: the same every time


def test_predict_transcribes_a_clip_given_without_text_and_the_text_tower_reads_it(whisper, clip, trained_run, capsys):
    from mmemo.inference import EmotionRecognizer

    model = str(trained_run["model_dir"])
    assert main(["predict", model, "--audio", clip, "--asr", str(whisper), "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["transcript_source"] == "asr" and result["transcript"]
    assert result["modalities"] == ["text", "audio"]
    recognizer = EmotionRecognizer.from_pretrained(model, device="cpu")
    with_text = recognizer.predict(text=result["transcript"], audio=clip).probabilities
    assert result["probabilities"] == pytest.approx(with_text, abs=1e-6)
    assert result["probabilities"] != pytest.approx(recognizer.predict(audio=clip).probabilities, abs=1e-6)

    # a typed transcript wins: the recognizer is not asked
    assert main(["predict", model, "--audio", clip, "--text", "so happy", "--asr", str(whisper), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["transcript"], result["transcript_source"]) == ("so happy", "typed")


def test_predict_shows_the_transcript_on_a_terminal(whisper, clip, trained_run, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdout.isatty", lambda: True, raising=False)
    assert main(["predict", str(trained_run["model_dir"]), "--audio", clip, "--asr", str(whisper)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("(from text + audio)") and lines[-1].startswith("transcript (speech recognizer): ")


def test_a_language_for_an_english_only_model_is_refused_in_one_line(whisper, clip, trained_run, capsys):
    args = ["predict", str(trained_run["model_dir"]), "--audio", clip, "--asr", str(whisper), "--asr-language", "de"]
    assert main(args) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "is an English-only Whisper model: it cannot transcribe 'de'" in error[0]
    assert main([*args[:-1], "english"]) == 0  # English is what it speaks
    capsys.readouterr()
    assert main(["predict", str(trained_run["model_dir"]), "--audio", clip, "--asr-language", "de"]) == 2
    assert "give --asr WHISPER too" in capsys.readouterr().err


def test_the_language_reaches_whisper_prompt_or_is_detected(multilingual, clip):
    from transformers import pipeline

    asr = pipeline("automatic-speech-recognition", model=str(multilingual), device="cpu")
    start, de, transcribe, no_timestamps = 257, 259, 261, 262
    assert _decoder_prompt(asr, transcriber_from_pipeline(asr, "german"), clip) == [
        start,
        de,
        transcribe,
        no_timestamps,
    ]
    detected = _decoder_prompt(asr, transcriber_from_pipeline(asr), clip)
    assert detected[0] == start and detected[1] in (258, de) and detected[2:] == [transcribe, no_timestamps]

    with pytest.raises(ConfigError, match="does not know the language 'fr' \\(french\\); give one of its 2"):
        load_transcriber(multilingual, language="fr", device="cpu")


def test_transcribe_missing_fills_rows_without_text_only(whisper, clip, tmp_path):
    transcriber = load_transcriber(whisper, device="cpu")
    sf.write(tmp_path / "broken.wav", np.zeros(0, dtype=np.float32), 16000)
    rows = [
        {"audio": clip, "text": ""},
        {"audio": clip, "text": "typed words"},
        {"audio": "", "text": "text only"},
        {"audio": str(tmp_path / "broken.wav"), "text": ""},
    ]
    assert transcribe_missing(rows, transcriber, progress=False) == 2
    assert rows[0]["text"] == transcribe_file(transcriber, clip) and rows[0]["transcript_source"] == "asr"
    assert [row.get("transcript_source") for row in rows[1:]] == ["typed", "typed", None]
    assert rows[3]["text"] == ""  # unreadable: left for the prediction to report


def test_the_demo_fills_an_empty_transcript_from_a_converted_whisper(whisper, clip, trained_run):
    from mmemo.demo import analyze
    from mmemo.inference import EmotionRecognizer

    recognizer = EmotionRecognizer.from_pretrained(trained_run["model_dir"], device="cpu")
    result = analyze(recognizer, clip, "", transcriber=load_transcriber(whisper, device="cpu"))
    assert result.transcript_source == "asr" and result.transcript
    assert result.prediction.modalities == ("text", "audio")


def _decoder_prompt(asr, transcriber, clip) -> list[int]:
    """The prompt (start, language, task, no-timestamps tokens) Whisper's decoder got while `transcriber` ran."""
    prompts = []

    def record(module, args, kwargs):
        if kwargs.get("input_ids") is not None and kwargs["input_ids"].shape[1] > 1:
            prompts.append(kwargs["input_ids"][0].tolist())

    handle = asr.model.model.decoder.register_forward_pre_hook(record, with_kwargs=True)
    try:
        transcribe_file(transcriber, clip)
    finally:
        handle.remove()
    return prompts[0]
