"""Predict from an ONNX export folder (written by `mmemo export`) with NumPy, onnxruntime, tokenizers, threadpoolctl.

This module imports neither torch nor the rest of mmemo, so it runs where torch is not installed; `mmemo
export` also copies it into the export folder as `mmemo_onnx_runtime.py`. It mirrors the PyTorch recognizer's
preprocessing: the saved WordPiece/BPE `tokenizer.json` with the model's truncation length; for a wav2vec2-family
tower per-clip zero-mean unit-variance normalisation with zero padding, for a Whisper tower the log-mel
spectrogram of each clip alone (transformers' `WhisperFeatureExtractor` with the export's own mel filters, as
mmemo's collator calls it) zero-padded to the batch with a frame mask; the acoustic functionals (from the
export's copy of mmemo/data/acoustic.py) for models with the acoustic-statistics token; a speaker profile's
statistics; the same three graphs (text encoder, audio encoder, fusion head) and the calibration temperature.
Unlike `EmotionRecognizer.predict`, long audio is classified whole (no speech segmentation; a Whisper tower
reads its first 30 s), and audio at another rate is resampled with SciPy's polyphase filter rather than
torchaudio's, so those inputs differ from PyTorch by a little more than rounding.

    from mmemo_onnx_runtime import OnnxEmotionRecognizer  # or: from mmemo.onnx_runtime import ...
    recognizer = OnnxEmotionRecognizer("export/")
    prediction = recognizer.predict(text="I hate this.", audio="clip.wav")
    prediction.label, prediction.probabilities  # "angry", {"angry": 0.81, ...}; .to_dict() for JSON
    recognizer.predict(audio="clip.wav", speaker_profile="me.json")  # a profile from `mmemo enrol`

`predict` returns this module's `Prediction`, with the fields and `to_dict()` of `mmemo.inference.Prediction`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path

import numpy as np
import onnxruntime as ort
from threadpoolctl import ThreadpoolController
from tokenizers import Tokenizer

EXPORT_FORMAT = 2  # 2: Whisper towers, the pooled audio head, the acoustic token, speaker profiles
READABLE_FORMATS = (1, 2)  # format 1 (wav2vec2 towers only) reads as 2 with its defaults
META_FILE = "mmemo_onnx.json"
MEL_FILTERS_FILE = "mel_filters.npy"
ACOUSTIC_FILE = "mmemo_acoustic.py"
GRAPHS = ("text_encoder", "audio_encoder", "fusion")
MIN_AUDIO_SAMPLES = 400  # the towers' front ends need 25 ms for one frame (as mmemo.data.dataset)
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
        meta_path = folder / META_FILE
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
        if meta and meta.get("format") not in READABLE_FORMATS:
            raise ValueError(
                f"{folder}/{META_FILE} has format {meta.get('format')!r}; this runtime reads "
                f"{', '.join(map(str, READABLE_FORMATS))}"
            )
        needed = [META_FILE, "tokenizer.json", *(f"{g}.onnx" for g in GRAPHS)]
        needed += [MEL_FILTERS_FILE] if meta.get("audio_input") == "input_features" else []
        needed += [ACOUSTIC_FILE] if meta.get("acoustic_features") else []
        missing = [name for name in needed if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"ONNX folder {folder} is missing {', '.join(missing)}; write it with `mmemo export`"
            )
        self.labels = list(meta["labels"])
        self.temperature = float(meta["temperature"])
        self.sampling_rate = int(meta["sampling_rate"])
        self.dim = int(meta["fusion_dim"])
        self.int8 = bool(meta["int8"])
        self.audio_input = meta.get("audio_input", "input_values")
        self.features = dict(meta["feature_extractor"])
        self.pad_token_id = int(meta["pad_token_id"])
        self.mel_filters = None
        if self.audio_input == "input_features":
            self.mel_filters = np.load(folder / MEL_FILTERS_FILE, allow_pickle=False)  # (n_fft / 2 + 1, n_mels)
        # A pooled audio head standardises its tower's pooled states, the acoustic token the functionals: by the
        # training statistics, or by a speaker's (a profile) when one is given.
        self.pooled_key = meta.get("pooled_key", "")
        self.pooled_shape = tuple(meta.get("pooled_shape", ()))
        self.feature_names = tuple(meta.get("feature_names", ()))
        self.features_version = meta.get("features_version")
        self.functionals = _load_functionals(folder) if meta.get("acoustic_features") else None
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
        # NumPy's BLAS (the log-mel's mel projection) runs on threads that busy-wait after each product, on the cores
        # onnxruntime's threads need: predict keeps it to one (K=3 Whisper int8, 5 s clip + text on 2 threads:
        # 25.4 ms p50 with its threads, 20.8 without; the product itself takes 0.2 ms).
        self._blas = ThreadpoolController()

    def predict(
        self,
        text: str | list[str] | None = None,
        audio=None,
        sampling_rate: int | None = None,
        batch_size: int = 16,
        speaker_profile=None,
    ):
        """Classify text, audio or both; lists give a list of results in input order.

        Args:
            text: a transcript or a list of them (None or "" = no text).
            audio: a file path (wav, flac, ogg, mp3), a NumPy array (mono or 2-channel, any rate), or a list.
            sampling_rate: the rate of array audio.
            batch_size: inputs per run; inputs are sorted by length first.
            speaker_profile: the speaker's profile JSON file (`mmemo enrol`, `SpeakerProfile.save`) or a
                `mmemo.data.speakers.SpeakerProfile`: the model's utterance statistics (the acoustic token's
                functionals, a pooled audio head's tower states) are standardised against that speaker instead of
                the training clips. Only for models that have them.

        Returns:
            A Prediction, or a list of them (in input order) when a list was given.

        Raises:
            ValueError: no input, mismatched lists, an array without sampling_rate, empty/NaN audio, or a speaker
                profile this model cannot use (no statistics to standardise, or enrolled with another audio
                tower or feature version).
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
        reference = self._reference(speaker_profile)
        waves = [None if a is None else self._waveform(a, sampling_rate) for a in audios]
        for i, (t, w) in enumerate(zip(texts, waves)):
            if not t and w is None:
                raise ValueError(f"input {i}: empty text and no audio")
        order = sorted(range(n), key=lambda i: (0 if waves[i] is None else len(waves[i]), len(texts[i])))
        results = [None] * n
        with self._blas.limit(limits=1, user_api="blas"):
            for start in range(0, n, batch_size):
                chunk = order[start : start + batch_size]
                chunk_waves = [waves[i] for i in chunk]
                for i, result in zip(chunk, self._forward([texts[i] for i in chunk], chunk_waves, reference)):
                    results[i] = result
        return results if batched else results[0]

    def _forward(self, texts: list[str], waves: list[np.ndarray | None], reference: dict) -> list[Prediction]:
        text_present = np.array([bool(t) for t in texts])
        audio_present = np.array([w is not None for w in waves])
        text = self._encode_text(texts) if text_present.any() else self._absent(len(texts))
        audio = self._encode_audio(waves, reference) if audio_present.any() else self._absent(len(texts))
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

    def _encode_audio(self, waves: list[np.ndarray | None], reference: dict) -> tuple[np.ndarray, np.ndarray]:
        n = len(waves)
        inputs = {}
        if self.functionals is not None:  # of the clip as given (the collator's `acoustic_inputs`)
            zeros = np.zeros(len(self.feature_names), np.float32)
            inputs["functionals"] = np.stack(
                [zeros if w is None else self.functionals(w, self.sampling_rate) for w in waves]
            )
            inputs["reference"] = np.broadcast_to(reference.get("reference", np.nan), (n, 2, len(self.feature_names)))
        if self.pooled_shape:
            inputs["pooled_reference"] = np.broadcast_to(
                reference.get("pooled_reference", np.nan), (n, 2, *self.pooled_shape)
            )
        # as mmemo's Collator: a missing clip is a silent stub, a very short one is zero-padded to one frame
        waves = [
            np.zeros(MIN_AUDIO_SAMPLES, np.float32) if w is None else np.pad(w, (0, max(0, MIN_AUDIO_SAMPLES - len(w))))
            for w in waves
        ]
        if self.audio_input == "input_features":
            inputs["input_features"], inputs["attention_mask"] = self._log_mel(waves)
        else:
            inputs["input_values"], inputs["attention_mask"] = self._normalised(waves)
        states, frame_mask = self._run("audio_encoder", **inputs)
        return states, frame_mask.astype(bool)

    def _normalised(self, waves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """wav2vec2-family input: each clip zero-mean unit-variance (when the extractor normalises), padded."""
        values = np.full((len(waves), max(len(w) for w in waves)), self.features["padding_value"], dtype=np.float32)
        mask = np.zeros(values.shape, dtype=np.int64)
        for i, w in enumerate(waves):
            if self.features["do_normalize"]:
                w = (w - w.mean()) / np.sqrt(w.var() + 1e-7)
            values[i, : len(w)], mask[i, : len(w)] = w, 1
        return values, mask

    def _log_mel(self, waves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Whisper input: each clip's log-mel alone (B, n_mels, frames), zero-padded, and the frame mask (B, frames)."""
        n_fft, hop, cut = self.features["n_fft"], self.features["hop_length"], self.features["max_samples"]
        clips = [whisper_log_mel(w[:cut], self.mel_filters, n_fft, hop) for w in waves]
        clips = [clip[:, : self.features["max_frames"]] for clip in clips]  # the tower's positional table
        frames = max(clip.shape[1] for clip in clips)
        features = np.zeros((len(clips), clips[0].shape[0], frames), dtype=np.float32)
        mask = np.zeros((len(clips), frames), dtype=np.int64)
        for i, clip in enumerate(clips):
            features[i, :, : clip.shape[1]], mask[i, : clip.shape[1]] = clip, 1
        return features, mask

    def _reference(self, profile) -> dict[str, np.ndarray]:
        """A speaker profile as {"reference": (2, F), "pooled_reference": (2, layers, D)} mean and std, for the
        statistics this model standardises; {} without a profile."""
        if profile is None:
            return {}
        if self.functionals is None and not self.pooled_key:
            raise ValueError(
                "this model has no utterance statistics to standardise (no acoustic-statistics token, no pooled "
                "audio head), so a speaker profile cannot change its predictions"
            )
        if isinstance(profile, (str, os.PathLike)):
            data = json.loads(Path(profile).read_text(encoding="utf-8"))
        else:  # a mmemo SpeakerProfile
            data = {key: getattr(profile, key, None) for key in ("names", "version", "mean", "std")}
            data |= {key: getattr(profile, key, None) for key in ("pooled_key", "pooled_mean", "pooled_std")}
        out = {}
        if self.functionals is not None:
            if data.get("version") != self.features_version or len(data.get("names") or ()) != len(self.feature_names):
                raise ValueError(
                    f"this speaker profile was made with feature version {data.get('version')}; this model uses "
                    f"version {self.features_version}: enrol the speaker again"
                )
            out["reference"] = np.stack([data["mean"], data["std"]]).astype(np.float32)
        if self.pooled_key:
            if data.get("pooled_key") != self.pooled_key:
                made = "has no audio-tower statistics" if not data.get("pooled_key") else "was enrolled with another"
                raise ValueError(
                    f"this speaker profile {made} audio tower than this model's; enrol the speaker again with this "
                    "model (`mmemo enrol MODEL CLIPS -o profile.json` or EmotionRecognizer.enrol_speaker)"
                )
            out["pooled_reference"] = np.stack([data["pooled_mean"], data["pooled_std"]]).astype(np.float32)
        return out

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
        feed = {i.name: np.ascontiguousarray(inputs[i.name], dtype=_NUMPY_TYPES[i.type]) for i in session.get_inputs()}
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


def whisper_log_mel(wave: np.ndarray, mel_filters: np.ndarray, n_fft: int = 400, hop_length: int = 160) -> np.ndarray:
    """Whisper's log-mel spectrogram of one clip, (n_mels, len(wave) // hop_length) float32.

    What transformers' `WhisperFeatureExtractor(wave, padding="longest")` returns for a clip alone (periodic Hann
    window, centred frames with reflected edges, power spectrum, the mel filters, log10 floored at 1e-10 and at
    8 below the clip's maximum, then (x + 4) / 4; the last frame dropped), computed in float64.
    """
    wave = np.asarray(wave, dtype=np.float64)
    padded = np.pad(wave, n_fft // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length][:-1]  # (T, n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2  # (T, n_fft / 2 + 1)
    log_spec = np.log10(np.maximum(power @ mel_filters, 1e-10))  # (T, n_mels)
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).T.astype(np.float32)


def _load_functionals(folder: Path):
    """`functionals` from the export's copy of mmemo/data/acoustic.py (NumPy, SciPy; librosa for its mel filters)."""
    spec = importlib.util.spec_from_file_location("mmemo_acoustic", folder / ACOUSTIC_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.functionals
