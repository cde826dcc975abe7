"""The Gradio demo, served on 127.0.0.1 and driven through gradio_client and a real headless Chromium."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from mmemo.data.manifest import read_manifest  # noqa: E402

pytestmark = pytest.mark.slow  # serves the demo, starts processes and opens a browser

# The README's screenshot is refreshed only when asked (MMEMO_SCREENSHOT=1), so test runs leave the tree clean.
DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "demo.png"
MAX_SECONDS = 20  # the demos under test refuse longer audio (the default is 60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(model_dir, **kwargs):
    """Launch the demo in a background thread on a free port; returns (demo, url) once it answers 200."""
    from mmemo.demo import launch

    demo = launch(model_dir, port=_free_port(), block=False, max_seconds=MAX_SECONDS, **kwargs)
    url = demo.local_url
    deadline = time.time() + 30
    while True:
        try:
            if urllib.request.urlopen(url, timeout=2).status == 200:
                return demo, url
        except OSError:
            if time.time() > deadline:
                raise
        time.sleep(0.2)


@pytest.fixture(scope="module")
def model_dir(trained_run):
    return trained_run["model_dir"]


@pytest.fixture(scope="module")
def labels(model_dir):
    return json.loads((model_dir / "config.json").read_text())["model"]["labels"]


@pytest.fixture(scope="module")
def server(model_dir):
    demo, url = _serve(model_dir)
    yield url
    demo.close()


@pytest.fixture(scope="module")
def client(server):
    return Client(server, verbose=False)


@pytest.fixture(scope="module")
def clips(synth_corpus, tmp_path_factory):
    """Test clips: a short one (with its transcript), a 12 s one (long: segmented), one over MAX_SECONDS."""
    rows = [r for r in read_manifest(synth_corpus) if r["split"] == "test"]
    folder = tmp_path_factory.mktemp("clips")
    rate = sf.info(rows[0]["audio"]).samplerate
    pause = np.zeros(int(0.8 * rate), dtype=np.float32)
    parts = []
    for row in rows:
        parts += [sf.read(row["audio"], dtype="float32")[0], pause]
        if sum(map(len, parts)) > 12 * rate:
            break
    sf.write(folder / "long.wav", np.concatenate(parts), rate)
    noise = np.random.default_rng(0).normal(0, 0.05, (MAX_SECONDS + 5) * rate).astype(np.float32)
    sf.write(folder / "too_long.wav", noise, rate)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really audio")
    return {
        "short": rows[0]["audio"],
        "text": rows[0]["text"],
        "long": folder / "long.wav",
        "too_long": folder / "too_long.wav",
        "corrupt": folder / "corrupt.wav",
    }


def _check_probabilities(label_output, labels):
    confidences = {c["label"]: c["confidence"] for c in label_output["confidences"]}
    assert set(confidences) == set(labels) and label_output["label"] in labels
    assert sum(confidences.values()) == pytest.approx(1.0, abs=1e-4)


def test_the_library_does_not_import_gradio():
    code = "import sys, mmemo, mmemo.demo; assert 'gradio' not in sys.modules, 'gradio imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_demo_without_a_model_says_how_to_make_one(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mmemo", "demo"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "make quickstart" in proc.stderr, proc.stderr


def test_the_demo_command_serves_as_the_readme_writes_it(model_dir, clips, labels):
    """`mmemo demo --model M --port P` as a subprocess, with the CLI's defaults (a float --max-upload-mb once
    crashed Gradio at start while every in-process test passed)."""
    script = Path(sys.executable).parent / "mmemo"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "mmemo"]
    port = _free_port()
    proc = subprocess.Popen(
        [*command, "demo", "--model", str(model_dir), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 90
        while True:
            assert proc.poll() is None, f"mmemo demo exited with {proc.returncode}:\n{proc.stdout.read()}"
            try:
                if urllib.request.urlopen(url, timeout=2).status == 200:
                    break
            except OSError:
                assert time.time() < deadline, "mmemo demo did not answer within 90 s"
            time.sleep(0.5)
        label, *_ = Client(url, verbose=False).predict(handle_file(clips["short"]), clips["text"], api_name="/predict")
        _check_probabilities(label, labels)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_audio_and_text_show_each_modality_and_delete_the_recording(client, clips, labels, tmp_path):
    recording = tmp_path / "private-recording.wav"  # not byte-equal to an example clip (those are kept)
    audio, rate = sf.read(clips["short"], dtype="float32")
    sf.write(recording, 0.9 * audio, rate)
    label, transcript, panel, timeline, result = client.predict(
        handle_file(recording), clips["text"], api_name="/predict"
    )
    _check_probabilities(label, labels)
    assert transcript == clips["text"]
    assert result["modalities"] == ["text", "audio"] and result["transcript_source"] == "typed"
    assert set(result["per_modality"]) == {"text", "audio"}
    for probabilities in result["per_modality"].values():
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    assert "text only" in panel and "audio only" in panel and "text (typed) + audio" in panel
    assert timeline["visible"] is False
    uploads = Path(os.environ["GRADIO_TEMP_DIR"])  # the private folder launch() made
    assert uploads.name.startswith("mmemo-demo-") and not list(uploads.rglob(recording.name))


def test_text_only_and_audio_only(client, clips, labels):
    label, transcript, panel, _, result = client.predict(None, "I hate this. Nothing ever works.", api_name="/predict")
    _check_probabilities(label, labels)
    assert result["modalities"] == ["text"] and result["seconds"] is None and "**text**" in panel
    label, transcript, panel, _, result = client.predict(handle_file(clips["short"]), "", api_name="/predict")
    _check_probabilities(label, labels)
    assert result["modalities"] == ["audio"] and transcript == "" and "voice alone" in panel


def test_a_long_recording_gets_a_segment_timeline(client, clips, labels):
    label, _, _, timeline, result = client.predict(handle_file(clips["long"]), "", api_name="/predict")
    _check_probabilities(label, labels)
    assert result["seconds"] > 12 and len(result["segments"]) >= 2
    assert timeline["visible"] is True and timeline["value"].count('class="segment"') == len(result["segments"])


@pytest.mark.parametrize(
    "audio, text, message",
    [
        (None, "   ", "Nothing to classify"),
        ("corrupt", "", "Cannot read the audio file 'corrupt.wav'"),
        ("too_long", "hello", f"too long .*up to {MAX_SECONDS} s"),
    ],
)
def test_bad_input_is_explained(client, clips, audio, text, message):
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(clips[audio]) if audio else None, text, api_name="/predict")


def test_analyze_asks_per_modality_when_the_prediction_has_no_per_modality(tmp_path):
    from types import SimpleNamespace

    from mmemo.demo import analyze

    class OldRecognizer:  # a Prediction without per_modality / segments
        config = SimpleNamespace(sampling_rate=16000)

        def predict(self, text=None, audio=None, sampling_rate=None):
            modalities = tuple(m for m, x in (("text", text), ("audio", audio)) if x is not None)
            p = {"text": 0.2, "audio": 0.7}.get(modalities[0], 0.5) if len(modalities) == 1 else 0.5
            return SimpleNamespace(label="a", probabilities={"a": p, "b": 1 - p}, modalities=modalities)

    sf.write(tmp_path / "tone.wav", np.sin(np.arange(8000) / 5).astype(np.float32), 16000)
    result = analyze(OldRecognizer(), str(tmp_path / "tone.wav"), "hello")
    assert result.per_modality == {"text": {"a": 0.2, "b": 0.8}, "audio": {"a": 0.7, "b": pytest.approx(0.3)}}
    assert result.segments == () and result.seconds == 0.5


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    """A random tiny Whisper folder with a byte-level tokenizer; it transcribes anything as 8 printable bytes."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    folder = tmp_path_factory.mktemp("whisper")
    byte_chars = bytes_to_unicode()
    tokenizer = WhisperTokenizer(
        vocab={c: i for i, c in enumerate(byte_chars.values())}, merges=[], pad_token="<|endoftext|>"
    )
    special = ["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|translate|>", "<|notimestamps|>"]
    tokenizer.add_special_tokens({"additional_special_tokens": special})
    ids = dict(zip(special, tokenizer.convert_tokens_to_ids(special)))
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(
        WhisperConfig(
            vocab_size=len(tokenizer),
            d_model=16,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=32,
            decoder_ffn_dim=32,
            max_target_positions=32,
            decoder_start_token_id=ids["<|startoftranscript|>"],
            eos_token_id=eos,
            pad_token_id=eos,
            bos_token_id=eos,
        )
    )
    gen = model.generation_config
    gen.max_new_tokens, gen.no_timestamps_token_id = 8, ids["<|notimestamps|>"]
    # never end early and never emit whitespace or control bytes: the transcript is 8 visible characters
    invisible = [i for i, b in enumerate(byte_chars) if not chr(b).isprintable() or chr(b).isspace()]
    gen.suppress_tokens = gen.begin_suppress_tokens = [eos, *ids.values(), *invisible]
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return folder


def test_asr_fills_an_empty_transcript(model_dir, tiny_whisper, clips, labels):
    demo, url = _serve(model_dir, asr=str(tiny_whisper))
    try:
        label, transcript, panel, _, result = Client(url, verbose=False).predict(
            handle_file(clips["short"]), "", api_name="/predict"
        )
    finally:
        demo.close()
    _check_probabilities(label, labels)
    assert isinstance(transcript, str) and transcript.strip()  # gibberish from a random model, but text
    assert result["modalities"] == ["text", "audio"] and result["transcript_source"] == "asr"
    assert "from the speech recognizer" in panel


def _browser_probabilities(page) -> dict[str, float]:
    meters = page.locator("#emotion [data-testid$='-confidence-set'] meter")
    return {m.get_attribute("aria-label"): float(m.get_attribute("value")) for m in meters.all()}


def _submit_and_check(page, labels, panel_text: str) -> None:
    """Press Analyse, wait for the result, and check the label, the probabilities and the per-modality panel."""
    page.locator("#submit").click()
    top = page.locator("#emotion [data-testid=label-output-value]")
    top.wait_for(timeout=20000)
    page.locator("#modalities table").wait_for()
    probabilities = _browser_probabilities(page)
    assert top.inner_text() in labels and set(probabilities) == set(labels)
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-3)
    assert panel_text in page.locator("#modalities").inner_text()


def test_browser_microphone_and_upload(server, labels, tmp_path):
    if not Path("/usr/bin/chromium").exists() or shutil.which("espeak-ng") is None:
        pytest.skip("needs /usr/bin/chromium and espeak-ng (apt-get install chromium espeak-ng)")
    from playwright.sync_api import sync_playwright

    speech = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(speech), "I am so happy today"], check=True)
    flags = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={speech}",
    ]
    uploaded = lambda response: "/gradio_api/upload" in response.url  # noqa: E731
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=flags)
        try:
            page = browser.new_context(permissions=["microphone"], viewport={"width": 1200, "height": 900}).new_page()
            # microphone (the default source): record ~2 s, stop, wait for the upload, add a transcript
            page.goto(server)
            page.locator("#audio button.record-button").click()
            page.wait_for_timeout(2000)
            with page.expect_response(uploaded):
                page.locator("#audio button.stop-button").click()
            page.locator("#transcript textarea").fill("I am so happy today")
            _submit_and_check(page, labels, "text (typed) + audio")
            screenshot = DOCS_SCREENSHOT if os.environ.get("MMEMO_SCREENSHOT") == "1" else tmp_path / "demo.png"
            page.screenshot(path=str(screenshot), full_page=True)
            # upload: switch the source, give the file, no transcript (audio only)
            page.goto(server)
            page.locator("#audio button[aria-label='Upload file']").click()
            with page.expect_response(uploaded):
                page.locator("#audio input[type=file]").set_input_files(str(speech))
            _submit_and_check(page, labels, "voice alone")
        finally:
            browser.close()


def test_enrol_my_voice_personalises_the_audio_prediction(synth_corpus, tmp_path_factory, clips):
    """A model with acoustic statistics gets an "Enrol my voice" panel: the profile changes audio predictions."""
    from conftest import tiny_config_dict

    from mmemo.config import config_from_dict
    from mmemo.train import train

    cfg = tiny_config_dict(synth_corpus, tmp_path_factory.mktemp("acoustic") / "run", epochs=1)
    cfg["model"].update(acoustic_features=True, acoustic_normalization="speaker")
    model = train(config_from_dict(cfg))["model_dir"]
    demo, url = _serve(model)
    try:
        client = Client(url, verbose=False)
        before = client.predict(handle_file(clips["short"]), "", api_name="/predict")[-1]
        folder = tmp_path_factory.mktemp("enrol")
        recordings = []
        for i, row in enumerate(r for r in read_manifest(synth_corpus) if r["split"] == "test"):
            if i == 5:
                break
            recordings.append(shutil.copy(row["audio"], folder / f"mine{i}.wav"))
        status = client.predict([handle_file(p) for p in recordings], api_name="/enrol")
        assert "Enrolled from 5 recording(s)" in str(status)
        after = client.predict(handle_file(clips["short"]), "", api_name="/predict")[-1]
        assert after["probabilities"] != pytest.approx(before["probabilities"], abs=1e-6)
        with pytest.raises(AppError, match="Give one or more recordings"):
            client.predict([], api_name="/enrol")
    finally:
        demo.close()
