"""Speech recognition for recordings without a transcript, so the text tower has something to read.

`load_transcriber(model, language)` loads a transformers speech-recognition checkpoint (a Whisper folder such as
`mmemo convert ct2-whisper` writes, a hub id, or a CTC model) and returns a `Transcriber`: a callable from a mono
waveform and its sampling rate to text. `mmemo predict --asr`, `mmemo demo --asr` and `transcribe_missing` (for
batches) use it.

Whisper decodes one 30 s window at a time: a recording up to 30 s is one window; a longer one is transcribed
window after window, each starting where the last transcribed word ended (transformers' sequential long-form
decoding with timestamps, as in the Whisper paper), rather than from independently cut chunks. A multilingual
Whisper detects the language of each window unless `language` names it; an English-only one speaks English.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import numpy as np

from mmemo.data.audio import load_audio
from mmemo.errors import ConfigError, DataError, ModelLoadError

Transcriber = Callable[[np.ndarray, int], str]  # (mono float32 waveform, sampling rate) -> transcript
SAMPLING_RATE = 16000  # what Whisper and wav2vec2-family recognizers hear
WINDOW_SECONDS = 30.0  # Whisper's input window


def load_transcriber(
    model: str | os.PathLike, language: str | None = None, device: str = "auto", max_new_tokens: int | None = None
) -> Transcriber:
    """A speech recognizer from a transformers checkpoint (Whisper or CTC; hub id or folder).

    Args:
        model: the checkpoint, e.g. a folder written by `mmemo convert ct2-whisper`.
        language: what is spoken, as a code or name ("de", "german"); None: a multilingual Whisper detects it per
            30 s window. Whisper only.
        device: "auto" (the GPU when there is one), "cpu", "cuda", "cuda:N".
        max_new_tokens: at most this many tokens per 30 s window (None: Whisper's limit, 448). Greedy decoding
            can fall into repeating a phrase until the limit; a bound that fits the speech keeps that short.

    Returns:
        A Transcriber: (waveform, sampling rate) -> text ("" when nothing was heard).

    Raises:
        ModelLoadError: the checkpoint cannot be loaded.
        ConfigError: `language` is unknown to the model, or given for an English-only or non-Whisper model.
    """
    from transformers import pipeline

    from mmemo.device import resolve_device

    device = resolve_device(device, setting="--device")
    try:
        with _quiet_transformers():
            asr = pipeline("automatic-speech-recognition", model=str(model), device=device)
    except Exception as e:  # transformers raises OSError, ValueError, KeyError, ... for a bad checkpoint
        raise ModelLoadError(f"cannot load the speech recognizer {model}: {e}") from None
    return transcriber_from_pipeline(asr, language, name=str(model), max_new_tokens=max_new_tokens)


def transcriber_from_pipeline(
    asr, language: str | None = None, name: str = "the speech recognizer", max_new_tokens: int | None = None
) -> Transcriber:
    """Wrap a transformers ASR pipeline as a Transcriber (long recordings work too; see the module docstring).

    Raises:
        ConfigError: `language` is unknown to the model, or given for an English-only or non-Whisper model.
    """
    whisper = asr.model.config.model_type == "whisper"
    if language and not whisper:
        raise ConfigError(f"{name} is a {asr.model.config.model_type} model: a language can be chosen for Whisper only")
    token = _whisper_language(asr.model.generation_config, language, name) if language else None
    generate = {"language": token} if token else {}
    if max_new_tokens is not None:
        generate["max_new_tokens"] = max_new_tokens

    def transcribe(waveform: np.ndarray, sampling_rate: int) -> str:
        long = len(waveform) > WINDOW_SECONDS * sampling_rate
        if whisper:
            options = {"generate_kwargs": dict(generate), **({"return_timestamps": True} if long else {})}
        else:  # CTC models take overlapping chunks
            options = {"chunk_length_s": WINDOW_SECONDS} if long else {}
        with _quiet_transformers():
            return asr({"raw": waveform, "sampling_rate": sampling_rate}, **options)["text"].strip()

    return transcribe


def transcribe_file(transcriber: Transcriber, path: str | os.PathLike, start=None, end=None) -> str:
    """The transcript of an audio file (or of its `start`-`end` seconds).

    Raises:
        DataError: the file cannot be read.
    """
    return transcriber(load_audio(path, SAMPLING_RATE, start, end), SAMPLING_RATE).strip()


def transcribe_missing(rows: list[dict], transcriber: Transcriber, progress: bool = True) -> int:
    """Give each row with audio but no text a transcript, in place; what `predict-batch --asr` does first.

    Each row so filled gets `text` and `transcript_source="asr"`; rows with text get `transcript_source="typed"`;
    a row whose audio cannot be read is left as it is (the prediction reports its error).

    Args:
        rows: dicts with `audio` (a path or ""), `text`, and optional `start`/`end` seconds.
        transcriber: from `load_transcriber`.
        progress: show a progress bar.

    Returns:
        How many rows were transcribed.
    """
    from mmemo.progress import progress_bar

    todo = [row for row in rows if row.get("audio") and not (row.get("text") or "").strip()]
    for row in rows:
        if (row.get("text") or "").strip():
            row["transcript_source"] = "typed"
    for row in progress_bar(todo, enabled=progress, unit="clip", desc="transcribe"):
        try:
            row["text"] = transcribe_file(transcriber, row["audio"], row.get("start"), row.get("end"))
        except DataError:
            continue
        row["transcript_source"] = "asr" if row["text"] else None
    return len(todo)


def _whisper_language(generation_config, language: str, name: str) -> str | None:
    """`language` as the language token a Whisper model knows ("<|de|>"); None for English on an English-only model.

    Raises:
        ConfigError: an English-only model (unless the language is English), or a language the model lacks.
    """
    from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

    code = language.strip().lower()
    code = TO_LANGUAGE_CODE.get(code, code).strip("<|>")
    known = getattr(generation_config, "lang_to_id", None) or {}
    if not getattr(generation_config, "is_multilingual", bool(known)) or not known:
        if code == "en":
            return None
        raise ConfigError(
            f"{name} is an English-only Whisper model: it cannot transcribe {language!r}; drop the language "
            "(or give en), or use a multilingual model"
        )
    if f"<|{code}|>" not in known:
        codes = sorted(token.strip("<|>") for token in known)
        hint = f" ({LANGUAGES[code]})" if code in LANGUAGES else ""
        raise ConfigError(
            f"{name} does not know the language {language!r}{hint}; give one of its {len(codes)} language codes "
            f"({', '.join(codes[:12])}, ...) or a name such as german, or leave it out to detect the language"
        )
    return f"<|{code}|>"


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' warnings and progress bars off for a while: each pipeline call warns about its own options."""
    from transformers.utils import logging

    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()
