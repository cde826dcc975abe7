"""The voice demo: record or upload speech, optionally type what was said, see the emotion.

`build_demo(recognizer)` returns a Gradio `Blocks` app; `launch(...)` is what `mmemo demo` runs. Gradio is the
`demo` extra, so it is imported inside functions only: `import mmemo.demo` never imports it.

Privacy by default: the server binds 127.0.0.1, Gradio's analytics are off, a share link is made only on
request, the page loads no web fonts, uploads land in a private temporary folder, and each recording is
deleted as soon as it has been classified (unless `keep_recordings`). Nothing is sent anywhere.
"""

from __future__ import annotations

import atexit
import hashlib
import html
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmemo.asr import Transcriber, load_transcriber
from mmemo.data.audio import audio_duration, load_audio
from mmemo.errors import DataError, MmemoError

DEFAULT_MODEL = Path("runs/quickstart/model")
EXAMPLE_TEXTS = (
    "I am so glad. We are meeting Anna at the park tomorrow.",
    "What an awful day. The train to the station was on time.",
)
MODALITY_NAMES = {"text": "text only", "audio": "audio only"}
LABEL_COLOURS = ("#e4572e", "#f3a712", "#76b041", "#17bebb", "#4c6ef5", "#9c36b5", "#868e96", "#d6336c")
CSS = """
#title h1 {margin-bottom: 0}
#modalities table {width: 100%}
.timeline {position: relative; height: 28px; border-radius: 6px; overflow: hidden; margin: 4px 0 8px;
           background: #dee2e6}
.timeline .segment {position: absolute; top: 0; bottom: 0; display: flex; align-items: center;
                    justify-content: center; color: white; font-size: 12px; overflow: hidden; white-space: nowrap;
                    border-right: 1px solid white; opacity: 0.9}
.timeline-legend span {margin-right: 12px; font-size: 13px}
"""

_uploads: Path | None = None  # this process's private upload folder (see _private_upload_folder)


@dataclass(frozen=True)
class Analysis:
    """What the demo shows for one input.

    Attributes:
        prediction: the recognizer's Prediction for everything given.
        transcript: the text used ("" when none).
        transcript_source: "typed", "asr" or None.
        seconds: the recording's duration, or None without audio.
        per_modality: {"text": probabilities, "audio": probabilities} for the modalities given.
        segments: the Prediction's segments for a long recording, else ().
    """

    prediction: object
    transcript: str
    transcript_source: str | None
    seconds: float | None
    per_modality: dict
    segments: tuple

    def to_dict(self) -> dict:
        pred = self.prediction
        return {
            "label": pred.label,
            "probabilities": pred.probabilities,
            "modalities": list(pred.modalities),
            "per_modality": self.per_modality,
            "transcript": self.transcript,
            "transcript_source": self.transcript_source,
            "seconds": self.seconds,
            "segments": [_segment_dict(s) for s in self.segments],
        }


def analyze(
    recognizer,
    audio_path: str | None = None,
    text: str | None = None,
    transcriber: Transcriber | None = None,
    max_seconds: float = 60.0,
    speaker_profile=None,
) -> Analysis:
    """Classify a recording, a transcript or both, the way the demo does.

    An empty transcript is filled by `transcriber` when one is given. The text-only and audio-only probabilities come
    from the Prediction's `per_modality` when it has one, else from two more `predict` calls. A `speaker_profile`
    (from "Enrol my voice") standardises the acoustic statistics against the speaker.

    Raises:
        DataError: no input, unreadable audio, or audio longer than `max_seconds`; the message is for the user.
    """
    text = (text or "").strip()
    if not audio_path and not text:
        raise DataError("Nothing to classify: record or upload some speech, or type a transcript.")
    waveform, seconds, rate = None, None, recognizer.config.sampling_rate
    if audio_path:
        waveform = _read_recording(audio_path, rate, max_seconds)
        seconds = len(waveform) / rate
    source = "typed" if text else None
    if not text and waveform is not None and transcriber is not None:
        text = transcriber(waveform, rate).strip()
        source = "asr" if text else None
    personal = {"speaker_profile": speaker_profile} if speaker_profile is not None else {}
    pred = recognizer.predict(text=text or None, audio=waveform, sampling_rate=rate, **personal)
    per_modality = dict(getattr(pred, "per_modality", None) or {})
    if not per_modality:  # a recognizer without per-modality probabilities: ask it once per modality
        per_modality = (
            {m: pred.probabilities for m in pred.modalities}
            if len(pred.modalities) == 1
            else {
                "text": recognizer.predict(text=text).probabilities,
                "audio": recognizer.predict(audio=waveform, sampling_rate=rate).probabilities,
            }
        )
    return Analysis(pred, text, source, seconds, per_modality, tuple(getattr(pred, "segments", None) or ()))


def _read_recording(path: str, rate: int, max_seconds: float) -> np.ndarray:
    limit = f"the demo accepts up to {max_seconds:g} s; trim it or record a shorter clip"
    header = audio_duration(path)
    if header is not None and header > max_seconds:
        raise DataError(f"The recording is too long ({header:.1f} s): {limit}.")
    try:
        waveform = load_audio(path, rate)
    except DataError:
        raise DataError(
            f"Cannot read the audio file {Path(path).name!r}: it is empty, corrupt or not an audio "
            "format we can decode. Record again, or upload a WAV, FLAC, OGG or MP3 file."
        ) from None
    if len(waveform) > max_seconds * rate:  # formats whose header gave no duration
        raise DataError(f"The recording is too long ({len(waveform) / rate:.1f} s): {limit}.")
    return waveform


def build_demo(
    recognizer,
    asr: Transcriber | None = None,
    *,
    model_dir: str | os.PathLike | None = None,
    max_seconds: float = 60.0,
    keep_recordings: bool = False,
    example_clips: list[tuple[str, str]] | None = None,
):
    """The Gradio app: audio (microphone or upload) + optional transcript in, emotion probabilities out.

    Args:
        recognizer: an EmotionRecognizer.
        asr: fills an empty transcript from the recording (see `load_transcriber`); None: none.
        model_dir: where the model came from, shown on the page.
        max_seconds: longer recordings are refused.
        keep_recordings: keep each recording on disk instead of deleting it after classification.
        example_clips: (audio file, transcript) examples; the default takes two from the model's training run.

    Returns:
        A `gr.Blocks`; its one event is the API endpoint "/predict" (audio, transcript) ->
        (label, transcript, per-modality panel, timeline, result JSON).
    """
    gr = _import_gradio()
    labels = list(recognizer.labels)
    if example_clips is None:
        example_clips = find_example_clips(model_dir)
    protected = {_digest(path) for path, _ in example_clips} - {None}  # example files are never deleted

    def classify(audio_path, text, profile=None):
        try:
            result = analyze(recognizer, audio_path, text, asr, max_seconds, speaker_profile=profile)
        except DataError as e:
            raise gr.Error(str(e), title="Cannot classify this input", print_exception=False) from None
        finally:
            if audio_path and not keep_recordings and _digest(audio_path) not in protected:
                _delete_recording(audio_path)
        timeline = timeline_html(result.segments, labels, result.seconds)
        return (
            result.prediction.probabilities,
            result.transcript,
            modality_markdown(result, asr is not None),
            gr.HTML(value=timeline, visible=bool(timeline)),
            result.to_dict(),
        )

    def enrol(paths):
        paths = [p for p in (paths or []) if p]
        try:
            if not paths:
                raise DataError("Give one or more recordings of your voice to enrol.")
            waves = [_read_recording(p, recognizer.config.sampling_rate, max_seconds) for p in paths]
            speaker = recognizer.enrol_speaker(waves, sampling_rate=recognizer.config.sampling_rate)
        except DataError as e:
            raise gr.Error(str(e), title="Cannot enrol", print_exception=False) from None
        finally:
            for path in paths:
                if not keep_recordings and _digest(path) not in protected:
                    _delete_recording(path)
        advice = "" if speaker.n_clips >= 5 else " Five or more recordings give a steadier profile."
        return speaker, f"Enrolled from {speaker.n_clips} recording(s).{advice}"

    with gr.Blocks(title="mmemo: emotion from speech and text") as demo:
        gr.Markdown(
            "# mmemo: emotion from speech and text\n"
            "Record (or upload) a short utterance and, if you like, type what was said. One model reads "
            "the words and listens to the voice, and shows what each of them says on its own. "
            f"Recordings up to {max_seconds:g} s; everything stays on this computer.",
            elem_id="title",
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                audio = gr.Audio(
                    sources=["microphone", "upload"],
                    type="filepath",
                    label="Speech",
                    buttons=["download"],
                    elem_id="audio",
                )
                transcript = gr.Textbox(
                    label="Transcript (optional)",
                    lines=2,
                    elem_id="transcript",
                    placeholder="What was said; leave empty to use the voice only"
                    + (" or the speech recognizer" if asr else ""),
                )
                gr.Markdown(
                    "A speech recognizer fills an empty transcript from the recording."
                    if asr
                    else "No speech recognizer loaded (`mmemo demo --asr MODEL`): without a typed transcript "
                    "the recording alone (audio-only) is classified.",
                    elem_id="asr-note",
                )
                button = gr.Button("Recognise emotion", variant="primary", elem_id="submit")
                profile = gr.State(None)
                if getattr(recognizer.config, "acoustic_features", False):
                    with gr.Accordion("Enrol my voice (personalised recognition)", open=False, elem_id="enrol"):
                        gr.Markdown(
                            "People differ in pitch and loudness far more than emotions move them. Give five or "
                            "more recordings of your ordinary speech (any emotion, no labels needed): the voice "
                            "statistics are then measured against your own voice. The profile stays in this "
                            "browser session."
                        )
                        enrol_clips = gr.File(
                            file_count="multiple", type="filepath", label="Your recordings", elem_id="enrol-clips"
                        )
                        enrol_button = gr.Button("Enrol my voice", elem_id="enrol-button")
                        enrol_status = gr.Markdown("Not enrolled: voices are compared with the training speakers.")
            with gr.Column(scale=1):
                label = gr.Label(num_top_classes=len(labels), label="Emotion", elem_id="emotion")
                modalities = gr.Markdown(elem_id="modalities")
                timeline = gr.HTML(visible=False, elem_id="timeline")
        examples = [[None, t] for t in EXAMPLE_TEXTS] + [[p, t] for p, t in example_clips]
        gr.Examples(examples, inputs=[audio, transcript], label="Examples", elem_id="examples")
        with gr.Accordion("Model", open=True):
            gr.Markdown(model_markdown(recognizer, model_dir), elem_id="model-info")
        with gr.Accordion("Raw result (JSON)", open=False):
            raw = gr.JSON(show_label=False, elem_id="result-json")
        button.click(
            classify,
            inputs=[audio, transcript, profile],
            outputs=[label, transcript, modalities, timeline, raw],
            api_name="predict",
        )
        if getattr(recognizer.config, "acoustic_features", False):
            enrol_button.click(enrol, inputs=[enrol_clips], outputs=[profile, enrol_status], api_name="enrol")
    return demo


def launch(
    model_dir: str | os.PathLike | None = None,
    asr: str | None = None,
    asr_language: str | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    keep_recordings: bool = False,
    max_seconds: float = 60.0,
    max_upload_mb: float = 20,
    block: bool = True,
    device: str = "auto",
):
    """Load a model (and optionally a speech recognizer) and serve the demo; what `mmemo demo` runs.

    Args:
        model_dir: a model folder; None: runs/quickstart/model.
        asr: a Whisper checkpoint (hub id or folder) to transcribe recordings; None: no transcription.
        asr_language: what the speakers speak ("de"); None: a multilingual Whisper detects it.
        host, port: where to listen (port None: Gradio picks a free one from 7860).
        share: also make a public gradio.live link (sends traffic through Gradio's servers).
        keep_recordings: keep recordings in the upload folder (printed) instead of deleting them.
        max_seconds, max_upload_mb: the longest recording and the largest upload accepted.
        block: serve until interrupted; False returns at once (the server runs in a thread, `.close()` it).
        device: where the model runs: cpu, cuda, cuda:N, ... or auto (the GPU when there is one).

    Returns:
        The running `gr.Blocks`.

    Raises:
        MmemoError: no model, gradio missing, or a model that cannot be loaded.
    """
    from mmemo.inference import EmotionRecognizer

    folder = resolve_model_dir(model_dir)
    uploads = _private_upload_folder(keep_recordings)
    gr = _import_gradio()
    recognizer = EmotionRecognizer.from_pretrained(folder, device=device)
    transcriber = load_transcriber(asr, asr_language, device=device) if asr else None
    demo = build_demo(
        recognizer, transcriber, model_dir=folder, max_seconds=max_seconds, keep_recordings=keep_recordings
    )
    if keep_recordings:
        print(f"mmemo demo: recordings are kept in {uploads}")
    theme = gr.themes.Soft(
        primary_hue="indigo", font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )  # system fonts: no request to a font CDN
    demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=int(max_upload_mb * 1024 * 1024),
        prevent_thread_lock=not block,
        theme=theme,
        css=CSS,
        footer_links=["api"],
        quiet=not block,
    )
    return demo


def resolve_model_dir(model_dir: str | os.PathLike | None) -> Path:
    """The model folder to serve: the one given, else runs/quickstart/model when it exists.

    Raises:
        MmemoError: none given and no quick-start model.
    """
    if model_dir is not None:
        return Path(model_dir)
    if DEFAULT_MODEL.is_dir():
        return DEFAULT_MODEL
    raise MmemoError(
        f"no --model given and {DEFAULT_MODEL} does not exist; run `make quickstart` to train it, or pass --model DIR"
    )


def find_example_clips(model_dir: str | os.PathLike | None, n: int = 2) -> list[tuple[str, str]]:
    """Up to `n` (audio, transcript) test clips of different labels from the run that trained `model_dir`."""
    from mmemo.config import load_config
    from mmemo.data.manifest import read_manifest

    run_config = Path(model_dir).parent / "config.yaml" if model_dir else None
    if run_config is None or not run_config.is_file():
        return []
    try:
        rows = read_manifest(load_config(run_config).data.manifest)
    except MmemoError:  # the corpus moved or was deleted: no examples, not a broken demo
        return []
    clips, seen = [], set()
    for row in rows:
        if row["split"] == "test" and row["audio"] and row["label"] not in seen and os.path.isfile(row["audio"]):
            clips.append((row["audio"], row["text"]))
            seen.add(row["label"])
        if len(clips) == n:
            break
    return clips


def modality_markdown(result: Analysis, asr_loaded: bool) -> str:
    """The per-modality panel: top label and confidence from the fused input and from each modality alone."""
    pred = result.prediction
    rows = [("**text + audio**" if len(pred.modalities) == 2 else f"**{pred.modalities[0]}**", pred.probabilities)]
    if len(pred.modalities) == 2:
        rows += [(MODALITY_NAMES.get(m, m), p) for m, p in result.per_modality.items()]
    table = "\n".join(f"| {name} | {max(p, key=p.get)} | {max(p.values()):.0%} |" for name, p in rows)
    used = []
    if result.transcript:
        used.append("text (from the speech recognizer)" if result.transcript_source == "asr" else "text (typed)")
    if result.seconds is not None:
        used.append(f"audio ({result.seconds:.1f} s)")
    note = ""
    if result.seconds is not None and not result.transcript:
        note = (
            "\n\nThe speech recognizer heard no words, so the voice alone was used."
            if asr_loaded
            else "\n\nNo transcript: the voice alone was used (type what was said to add the text)."
        )
    return (
        f"**What each input says**\n\n| input | says | confidence |\n|---|---|---|\n{table}\n\n"
        f"**Used:** {' + '.join(used)}{note}"
    )


def timeline_html(segments, labels: list[str], seconds: float | None = None) -> str:
    """A bar over the recording with a coloured block per segment (gaps are skipped silence); "" without."""
    if not segments:
        return ""
    segments = [_segment_dict(s) for s in segments]
    total = max(seconds or 0.0, max(s["end"] for s in segments)) or 1.0
    colour = {label: LABEL_COLOURS[i % len(LABEL_COLOURS)] for i, label in enumerate(labels)}
    blocks = "".join(
        f'<div class="segment" style="left: {100 * s["start"] / total:.2f}%; '
        f'width: {100 * (s["end"] - s["start"]) / total:.2f}%; background: {colour.get(s["label"], "#868e96")}" '
        f'title="{s["start"]:.1f}–{s["end"]:.1f} s: {html.escape(s["label"])}">{html.escape(s["label"])}</div>'
        for s in segments
    )
    legend = "".join(f'<span style="color: {colour[name]}">■ {html.escape(name)}</span>' for name in labels)
    return (
        f"<p><b>Timeline</b>: {len(segments)} segments over {total:.1f} s (grey: silence, skipped)</p>"
        f'<div class="timeline">{blocks}</div><div class="timeline-legend">{legend}</div>'
    )


def model_markdown(recognizer, model_dir: str | os.PathLike | None) -> str:
    """Where the model came from: folder, label set, both encoders and the fusion."""
    cfg = recognizer.config

    def encoder(name: str | None, hf_config) -> str:
        layers = hf_config.num_hidden_layers
        size = f"{hf_config.hidden_size} hidden, {layers} layer{'s' if layers != 1 else ''}"
        return f"`{name}` ({size})" if name else f"{hf_config.model_type} trained from scratch ({size})"

    return "\n".join(
        [
            f"- **Model folder:** `{model_dir or 'in memory'}`",
            f"- **Labels:** {', '.join(recognizer.labels)}",
            f"- **Text encoder:** {encoder(cfg.text_encoder, recognizer.model.text_encoder.hf_config)}",
            f"- **Audio encoder:** {encoder(cfg.audio_encoder, recognizer.model.audio_encoder.hf_config)}",
            f"- **Fusion:** {cfg.fusion} ({cfg.fusion_dim} dim)",
        ]
    )


def _import_gradio():
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read by gradio at import and at launch
    try:
        import gradio
    except ImportError:
        raise MmemoError("the demo needs gradio: pip install 'mmemo[demo]'") from None
    return gradio


def _private_upload_folder(keep: bool) -> Path:
    """Point Gradio's upload folder at a private temporary folder, removed at exit unless `keep`.

    One folder per process: Gradio reads GRADIO_TEMP_DIR whenever it checks an upload's path, so every demo
    served from this process must share it.
    """
    global _uploads
    if _uploads is None or not _uploads.is_dir():
        _uploads = Path(tempfile.mkdtemp(prefix="mmemo-demo-", dir=os.environ.get("GRADIO_TEMP_DIR")))
        os.environ["GRADIO_TEMP_DIR"] = str(_uploads)
        if not keep:
            atexit.register(shutil.rmtree, _uploads, ignore_errors=True)
    return _uploads


def _delete_recording(path: str) -> None:
    """Delete an uploaded recording and the per-upload folder Gradio made for it, if now empty."""
    path = Path(path)
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()
    except OSError:
        pass  # not empty, or already gone


def _digest(path: str) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def _segment_dict(segment) -> dict:
    if isinstance(segment, dict):
        return segment
    return {k: getattr(segment, k) for k in ("start", "end", "label", "probabilities")}
