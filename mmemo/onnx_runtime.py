"""Predict from an ONNX export folder (written by `mmemo export`) with NumPy, onnxruntime and tokenizers only.

This module imports neither torch nor the rest of mmemo, so it runs where torch is not installed; `mmemo
export` also copies it into the export folder as `mmemo_onnx_runtime.py`. It mirrors the PyTorch recognizer's
preprocessing: the saved WordPiece/BPE `tokenizer.json` with the model's truncation length, wav2vec2-style
per-clip zero-mean unit-variance normalisation with zero padding, the same three graphs (text encoder, audio
encoder, fusion head) and the calibration temperature. Unlike `EmotionRecognizer.predict`, long audio is
classified whole (no speech segmentation), and audio at another rate is resampled with SciPy's polyphase
filter rather than torchaudio's, so those inputs differ from PyTorch by a little more than rounding.

    from mmemo_onnx_runtime import OnnxEmotionRecognizer  # or: from mmemo.onnx_runtime import ...
    recognizer = OnnxEmotionRecognizer("export/")
    prediction = recognizer.predict(text="I hate this.", audio="clip.wav")
    prediction.label, prediction.probabilities  # "angry", {"angry": 0.81, ...}; .to_dict() for JSON

`predict` returns this module's `Prediction`, with the fields and `to_dict()` of `mmemo.inference.Prediction`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

EXPORT_FORMAT = 1
META_FILE = "mmemo_onnx.json"
GRAPHS = ("text_encoder", "audio_encoder", "fusion")
MIN_AUDIO_SAMPLES = 400  # wav2vec2's front end needs 25 ms for one frame (as mmemo.data.dataset)
_NUMPY_TYPES = {
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(float)": np.float32,
}


@dataclass(frozen=True, repr=False)
class Prediction:
    """One prediction, with the fields of `mmemo.inference.Prediction` (kept separate so that no torch is needed).

    Attributes:
        label: the top label.
        probabilities: a probability per label (summing to 1) from everything given (fused).
        modalities: the modalities used, ("text",), ("audio",) or ("text", "audio").
        per_modality: {"text": probabilities, "audio": probabilities}, each input alone; one entry (equal to
            `probabilities`) when one modality was given.
        segments: always () here: this runtime classifies long audio whole.
    """

    label: str
    probabilities: dict[str, float]
    modalities: tuple[str, ...]
    per_modality: dict[str, dict[str, float]] = field(default_factory=dict)
    segments: tuple = ()

    def __repr__(self) -> str:
        def rounded(probabilities):
            return {label: round(p, 3) for label, p in probabilities.items()}

        per_modality = {m: rounded(p) for m, p in self.per_modality.items()}
        return (
            f"Prediction(label={self.label!r}, probabilities={rounded(self.probabilities)}, "
            f"modalities={self.modalities!r}, per_modality={per_modality})"
        )

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "probabilities": self.probabilities,
            "modalities": list(self.modalities),
            "per_modality": self.per_modality,
            "segments": [],
        }


class OnnxEmotionRecognizer:
    """Predict emotions from text, audio or both with an exported model.

    Args:
        folder: the folder `mmemo export` wrote.
        threads: onnxruntime intra-op threads (None: onnxruntime's default, all cores).

    Raises:
        FileNotFoundError: a file of the export is missing.
        ValueError: the folder was written by an incompatible mmemo version.
    """

    def __init__(self, folder: str | os.PathLike, threads: int | None = None):
        folder = Path(folder)
        needed = (META_FILE, "tokenizer.json", *(f"{g}.onnx" for g in GRAPHS))
        missing = [name for name in needed if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"ONNX folder {folder} is missing {', '.join(missing)}; write it with `mmemo export`"
            )
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        if meta.get("format") != EXPORT_FORMAT:
            raise ValueError(
                f"{folder}/{META_FILE} has format {meta.get('format')!r}; this runtime reads {EXPORT_FORMAT}"
            )
        self.labels = list(meta["labels"])
        self.temperature = float(meta["temperature"])
        self.sampling_rate = int(meta["sampling_rate"])
        self.dim = int(meta["fusion_dim"])
        self.int8 = bool(meta["int8"])
        self.do_normalize = bool(meta["feature_extractor"]["do_normalize"])
        self.padding_value = float(meta["feature_extractor"]["padding_value"])
        self.pad_token_id = int(meta["pad_token_id"])
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(int(meta["max_text_tokens"]))
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        # Each graph's session has its own thread pool, and an idle pool spins by default: while the audio graph
        # runs, the text graph's threads would burn the same cores (5 s clip + text at base size, 2 threads:
        # 356 ms with spinning, 255 ms without).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.sessions = {
            g: ort.InferenceSession(str(folder / f"{g}.onnx"), options, providers=["CPUExecutionProvider"])
            for g in GRAPHS
        }

    def predict(
        self, text: str | list[str] | None = None, audio=None, sampling_rate: int | None = None, batch_size: int = 16
    ):
        """Classify text, audio or both; lists give a list of results in input order.

        Args:
            text: a transcript or a list of them (None or "" = no text).
            audio: a file path (wav, flac, ogg, mp3), a NumPy array (mono or 2-channel, any rate), or a list.
            sampling_rate: the rate of array audio.
            batch_size: inputs per run; inputs are sorted by length first.

        Returns:
            A Prediction, or a list of them (in input order) when a list was given.

        Raises:
            ValueError: no input, mismatched lists, an array without sampling_rate, or empty/NaN audio.
        """
        batched = isinstance(text, (list, tuple)) or isinstance(audio, (list, tuple))
        texts = [] if text is None else list(text) if isinstance(text, (list, tuple)) else [text]
        audios = [] if audio is None else list(audio) if isinstance(audio, (list, tuple)) else [audio]
        n = max(len(texts), len(audios))
        if n == 0:
            raise ValueError("predict() needs text=..., audio=... or both")
        texts, audios = texts or [None] * n, audios or [None] * n
        if len(texts) != len(audios):
            raise ValueError(f"predict(): {len(texts)} texts but {len(audios)} audio inputs")
        texts = [(t or "").strip() for t in texts]
        waves = [None if a is None else self._waveform(a, sampling_rate) for a in audios]
        for i, (t, w) in enumerate(zip(texts, waves)):
            if not t and w is None:
                raise ValueError(f"input {i}: empty text and no audio")
        order = sorted(range(n), key=lambda i: (0 if waves[i] is None else len(waves[i]), len(texts[i])))
        results = [None] * n
        for start in range(0, n, batch_size):
            chunk = order[start : start + batch_size]
            for i, result in zip(chunk, self._forward([texts[i] for i in chunk], [waves[i] for i in chunk])):
                results[i] = result
        return results if batched else results[0]

    def _forward(self, texts: list[str], waves: list[np.ndarray | None]) -> list[Prediction]:
        text_present = np.array([bool(t) for t in texts])
        audio_present = np.array([w is not None for w in waves])
        text = self._encode_text(texts) if text_present.any() else self._absent(len(texts))
        audio = self._encode_audio(waves) if audio_present.any() else self._absent(len(texts))
        fused = self._fuse(text, audio, text_present, audio_present)
        per_modality = [
            {m: p for m, present in (("text", t), ("audio", a)) if present}
            for p, t, a in zip(fused, text_present, audio_present)
        ]
        both = np.flatnonzero(text_present & audio_present)
        if len(both):
            k, yes, no = len(both), np.ones(len(both), bool), np.zeros(len(both), bool)
            text_only = self._fuse((text[0][both], text[1][both]), self._absent(k), yes, no)
            audio_only = self._fuse(self._absent(k), (audio[0][both], audio[1][both]), no, yes)
            for i, t, a in zip(both, text_only, audio_only):
                per_modality[i] = {"text": t, "audio": a}
        return [
            Prediction(
                self.labels[int(p.argmax())],
                self._named(p),
                tuple(v),
                {m: self._named(q) for m, q in v.items()},
            )
            for p, v in zip(fused, per_modality)
        ]

    def _encode_text(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.full((len(texts), max(len(e.ids) for e in encodings)), self.pad_token_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        for i, e in enumerate(encodings):
            ids[i, : len(e.ids)], mask[i, : len(e.ids)] = e.ids, 1
        (states,) = self._run("text_encoder", input_ids=ids, attention_mask=mask)
        return states, mask.astype(bool)

    def _encode_audio(self, waves: list[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
        # as mmemo's Collator: a missing clip is a silent stub, a very short one is zero-padded to one frame
        waves = [
            np.zeros(MIN_AUDIO_SAMPLES, np.float32) if w is None else np.pad(w, (0, max(0, MIN_AUDIO_SAMPLES - len(w))))
            for w in waves
        ]
        values = np.full((len(waves), max(len(w) for w in waves)), self.padding_value, dtype=np.float32)
        mask = np.zeros(values.shape, dtype=np.int64)
        for i, w in enumerate(waves):
            if self.do_normalize:
                w = (w - w.mean()) / np.sqrt(w.var() + 1e-7)
            values[i, : len(w)], mask[i, : len(w)] = w, 1
        states, frame_mask = self._run("audio_encoder", input_values=values, attention_mask=mask)
        return states, frame_mask.astype(bool)

    def _fuse(self, text, audio, text_present, audio_present) -> np.ndarray:
        (logits,) = self._run(
            "fusion",
            text_states=text[0],
            text_mask=text[1],
            audio_states=audio[0],
            audio_mask=audio[1],
            text_present=text_present,
            audio_present=audio_present,
        )
        z = logits.astype(np.float64) / self.temperature
        z = np.exp(z - z.max(axis=-1, keepdims=True))
        return z / z.sum(axis=-1, keepdims=True)

    def _absent(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """A stand-in stream for a modality no sample has: the graph swaps in the learned placeholder."""
        return np.zeros((n, 1, self.dim), np.float32), np.ones((n, 1), bool)

    def _run(self, graph: str, **inputs) -> list[np.ndarray]:
        session = self.sessions[graph]
        feed = {
            i.name: np.asarray(inputs[i.name]).astype(_NUMPY_TYPES[i.type], copy=False) for i in session.get_inputs()
        }
        return session.run(None, feed)

    def _named(self, probs: np.ndarray) -> dict[str, float]:
        return {label: float(p) for label, p in zip(self.labels, probs)}

    def _waveform(self, audio, sampling_rate: int | None) -> np.ndarray:
        if isinstance(audio, (str, os.PathLike)):
            import soundfile as sf

            audio, sampling_rate = sf.read(os.fspath(audio), dtype="float32", always_2d=True)
            audio = audio.T  # (channels, samples)
        elif sampling_rate is None:
            raise ValueError("an audio array needs sampling_rate=...")
        audio = np.asarray(audio)
        if np.issubdtype(audio.dtype, np.integer):
            audio = audio / float(np.iinfo(audio.dtype).max)
        if audio.ndim == 2:
            audio = audio.mean(axis=0 if audio.shape[0] < audio.shape[1] else 1)
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1 or audio.size == 0 or not np.isfinite(audio).all():
            raise ValueError(f"audio must be a non-empty 1-D or 2-D array of finite samples, got shape {audio.shape}")
        if sampling_rate != self.sampling_rate:
            from scipy.signal import resample_poly

            g = gcd(int(sampling_rate), self.sampling_rate)
            audio = resample_poly(audio, self.sampling_rate // g, int(sampling_rate) // g).astype(np.float32)
        return audio
