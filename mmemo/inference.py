"""EmotionRecognizer: a trained model with its tokenizer, feature extractor and labels; save, load, predict.

A model folder (`mmemo.model_folder`) holds config.json, safetensors weights, the tokenizer and feature-extractor
files and a README.md model card; loading needs nothing else: no network, no pickle.

Prediction runs in length-sorted mini-batches; every input is encoded once and fused three ways, so a
text+audio prediction also reports what the same checkpoint says from the text alone and the audio alone.

Long recordings (longer than `window_seconds`) are split where there is speech (`mmemo.segmentation`). Every
region or window is classified on its own (a `Segment`), and the recording's probabilities are the
duration-weighted mean of its segments'. A transcript given with a long recording is not time-aligned, so the
whole transcript is fused with every segment (the model was trained on utterance-level text+audio pairs): the
text sets what it can tell (e.g. valence) and each segment's voice the rest.

What `predict` returns, `Prediction` and `Segment`, is plain data in `mmemo.prediction`. Predicting a whole file of
inputs is `mmemo.batch_predict`; the terminal table is the cli's.
"""

from __future__ import annotations

import functools
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from mmemo.config import ModelConfig
from mmemo.data.audio import load_audio, prepare_waveform
from mmemo.data.dataset import Collator, move_batch
from mmemo.device import resolve_device
from mmemo.encoders import encoders_from_configs
from mmemo.errors import DataError, MmemoError
from mmemo.model import EmotionModel
from mmemo.model_card import ModelCard, describe_encoder
from mmemo.model_folder import check_replaceable, load_weights, local_folder, read_meta, upload, write
from mmemo.prediction import Prediction, Segment
from mmemo.segmentation import OVERLAP_SECONDS, WINDOW_SECONDS, speech_windows


class EmotionRecognizer:
    """Predict emotions from text, audio or both with one trained checkpoint.

    Args:
        model: the EmotionModel.
        tokenizer: its Hugging Face tokenizer.
        feature_extractor: its Hugging Face audio feature extractor.
        config: the model config; `config.labels` names the classes in logit order.
        temperature: logits are divided by it before the softmax (fitted on validation data by
            `mmemo.calibration`; 1.0 leaves them as trained).
    """

    def __init__(
        self, model: EmotionModel, tokenizer, feature_extractor, config: ModelConfig, temperature: float = 1.0
    ):
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.feature_extractor = feature_extractor
        self.config = config
        self.temperature = float(temperature)
        self.labels = list(config.labels)
        self.collator = Collator(
            tokenizer, feature_extractor, config.max_text_tokens, acoustic_features=config.acoustic_features
        )
        self.quantized = False
        self.card = ModelCard()  # what README.md says about data and scores; set by training or from_pretrained

    def __repr__(self) -> str:
        return (
            f"EmotionRecognizer(labels={self.labels}, "
            f"text_encoder='{describe_encoder(self.model.text_encoder)}', "
            f"audio_encoder='{describe_encoder(self.model.audio_encoder)}', "
            f"fusion='{self.config.fusion} dim {self.config.fusion_dim}', device={str(self.device)!r}, "
            f"temperature={self.temperature:.3f}{', int8' if self.quantized else ''})"
        )

    def __call__(self, *args, **kwargs):
        """Same as `predict`."""
        return self.predict(*args, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> EmotionRecognizer:
        self.model.to(device)
        return self

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, device: str | torch.device = "cpu", int8: bool = False, threads: int | None = None
    ) -> EmotionRecognizer:
        """Load a model folder written by `save_pretrained` (or a Hugging Face hub id holding one).

        Args:
            path: the model folder or hub id.
            device: where to run: "cpu", "cuda", "cuda:N", ... or "auto" (a GPU when there is one; the CPU
                with `int8`).
            int8: quantize the linear layers to int8 after loading (CPU only; see `quantize`).
            threads: set torch's CPU thread count (process-wide) when given.

        Raises:
            ModelLoadError: a required file is missing, or the folder comes from an incompatible version.
            ConfigError: an unknown device, or one this computer does not have (`resolve_device`).
        """
        from transformers import AutoFeatureExtractor, AutoTokenizer

        device = resolve_device(device, int8=int8, setting="--device")
        if threads:
            torch.set_num_threads(threads)
        folder = local_folder(path)
        meta, config, temperature = read_meta(folder)
        text_model, audio_model = encoders_from_configs(meta["text_config"], meta["audio_config"])
        model = EmotionModel(config, len(config.labels), text_model, audio_model)
        load_weights(model, folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        feature_extractor = AutoFeatureExtractor.from_pretrained(folder)
        recognizer = cls(model, tokenizer, feature_extractor, config, temperature).to(device)
        recognizer.card = ModelCard.from_dict(meta.get("card") or {})  # folders written before model cards have none
        return recognizer.quantize() if int8 else recognizer

    def save_pretrained(self, path: str | os.PathLike, card: ModelCard | None = None) -> Path:
        """Write the model folder atomically (a temporary folder renamed into place); returns its path.

        Args:
            path: the folder to write; an existing model folder there is replaced, any other non-empty folder
                is refused (MmemoError), so a run folder or a user's folder is never wiped.
            card: what the README.md model card says about the data, scores and licence; it becomes the
                recognizer's `card`. None keeps the current one (empty for a new model, the folder's when loaded).

        Raises:
            MmemoError: the recognizer was quantized (save the fp32 model and quantize after loading).
        """
        if self.quantized:
            raise MmemoError(
                "an int8-quantized recognizer cannot be saved; save the fp32 one and load it "
                "with from_pretrained(..., int8=True)"
            )
        check_replaceable(path)
        if card is not None:
            self.card = card
        write(path, self)
        return Path(path)

    def push_to_hub(
        self,
        repo_id: str,
        private: bool | None = None,
        token: str | None = None,
        commit_message: str = "Upload mmemo model",
        endpoint: str | None = None,
    ) -> str:
        """Save the model folder (with its card) and upload it to a Hugging Face hub model repository.

        The repository is created when it does not exist; files already there with the same names are replaced.

        Args:
            repo_id: "user/name" or "org/name".
            private: make a new repository private (None: the hub's default).
            token: a hub token with write access (None: the logged-in one, `hf auth login`, or HF_TOKEN).
            commit_message: the commit's message.
            endpoint: another hub's URL (None: huggingface.co, or HF_ENDPOINT).

        Returns:
            The URL of the commit.

        Raises:
            MmemoError: the upload failed (offline, no or wrong token, no access); the message says why.
        """
        with tempfile.TemporaryDirectory(prefix="mmemo-push-") as tmp:
            folder = self.save_pretrained(Path(tmp) / "model")
            return upload(folder, repo_id, private, token, commit_message, endpoint)

    def quantize(self, per_channel: bool = True, convolutions: bool = True) -> EmotionRecognizer:
        """Replace every `nn.Linear` with a dynamically quantized int8 one (CPU inference only); returns self.

        Args:
            per_channel: int8 scales per output channel of each weight, not one per weight. EmoDB, the whisper_base
                teacher of seed 0 (fp32 0.935 audio-only UA): 0.916 against 0.909 per tensor, no slower.
            convolutions: first rewrite a Whisper tower's two front-end convolutions as linear layers over their
                input windows (`convolutions_as_linear`), so that they are quantized too: a 5 s clip + text 13 %
                faster on the 4-layer teacher, 0.916 UA against 0.921 without. wav2vec2's convolutional feature
                encoder stays fp32 either way, so its audio gains less. docs/compression.md has the measurements.
        """
        if self.device.type != "cpu":
            raise MmemoError(f"int8 quantization runs on the CPU only; the model is on {self.device}")
        if not self.quantized:
            from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

            if convolutions:
                self.model.audio_encoder.convolutions_as_linear()
            qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated but still the simplest path
                self.model = torch.ao.quantization.quantize_dynamic(self.model, {torch.nn.Linear: qconfig}, torch.qint8)
            self.quantized = True
        return self

    @torch.inference_mode()
    def predict(
        self,
        text: str | list[str] | None = None,
        audio=None,
        sampling_rate: int | None = None,
        batch_size: int = 16,
        window_seconds: float = WINDOW_SECONDS,
        overlap_seconds: float = OVERLAP_SECONDS,
        speaker_profile=None,
    ):
        """Classify text, audio or both.

        Args:
            text: a transcript, or a list of them for a batch (None or "" = no text).
            audio: a file path (wav, flac, ogg, mp3), a NumPy array or torch tensor (mono, or channels ×
                samples, any rate, float or integer PCM), or a list of them.
            sampling_rate: the rate of array/tensor audio (required for arrays; files carry their own).
            batch_size: inputs (or long-audio segments) per forward pass; inputs are sorted by length first.
            window_seconds: audio longer than this is split into speech segments of at most this length.
            overlap_seconds: overlap between consecutive windows inside one long speech region.
            speaker_profile: the speaker's `SpeakerProfile` (or the path of its JSON file, see `enrol_speaker`):
                the acoustic statistics are standardised against that speaker instead of the training clips; or a
                list of them, one per input (None: the training clips' statistics for that input). Only for models
                with `acoustic_features`.

        Returns:
            A Prediction, or a list of them (in input order) when a list was given.

        Raises:
            DataError: no input, mismatched list lengths (speaker profiles included), unreadable audio, an array
                without sampling_rate, or a speaker profile for a model without acoustic statistics.
            ValueError: batch_size < 1, or overlap_seconds not in [0, window_seconds).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 0 <= overlap_seconds < window_seconds:
            raise ValueError(f"need 0 <= overlap_seconds < window_seconds, got {overlap_seconds} and {window_seconds}")
        batched = isinstance(text, (list, tuple)) or isinstance(audio, (list, tuple))
        texts, audios = _as_list(text), _as_list(audio)
        n = max(len(texts), len(audios))
        if n == 0:
            raise DataError("predict() needs text=..., audio=... or both")
        texts = texts or [None] * n
        audios = audios or [None] * n
        if len(texts) != len(audios):
            raise DataError(f"predict(): {len(texts)} texts but {len(audios)} audio inputs; give one of each per item")
        if isinstance(speaker_profile, (list, tuple)):
            if len(speaker_profile) != n:
                raise DataError(
                    f"predict(): {n} inputs but {len(speaker_profile)} speaker profiles; give one per input"
                )
            references = [self._reference(profile) for profile in speaker_profile]
        else:
            references = [self._reference(speaker_profile)] * n
        if not all(references) and self.config.acoustic_normalization == "speaker" and self.uses_profiles:
            _warn_once(
                "this model standardised the acoustic statistics per speaker in training; without a "
                "speaker_profile (enrol_speaker / `mmemo enrol`) it uses the training speakers' statistics, which "
                "suits voices like theirs best"
            )
        items = []
        for i, (t, a, reference) in enumerate(zip(texts, audios, references)):
            where = f"audio[{i}]" if batched else "audio"
            waveform = None if a is None else self._waveform(a, sampling_rate, where=where)
            t = (t or "").strip()
            if not t and waveform is None:
                raise DataError(f"input {i}: empty text and no audio; give a transcript, audio, or both")
            items.append({"text": t, "audio": waveform, **reference})
        predictions = self._predict_items(items, batch_size, window_seconds, overlap_seconds)
        return predictions if batched else predictions[0]

    def enrol_speaker(self, audio, sampling_rate: int | None = None):
        """A `SpeakerProfile` from a few unlabelled clips of one speaker (files, or arrays with sampling_rate).

        Save it with `.save("me.json")` and pass it (or the path) as `predict(..., speaker_profile=...)`. Five or
        more clips of ordinary speech give a usable profile; the emotions in them do not need to be known.
        """
        self._check_acoustic("a speaker profile")
        clips = _as_list(audio)
        if not clips:
            raise DataError("enrol_speaker() needs at least one clip")
        waves = [self._waveform(a, sampling_rate, where=f"audio[{i}]") for i, a in enumerate(clips)]
        return self.profile_from(*self.enrolment_statistics(waves))

    def enrolment_statistics(self, waves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """What a speaker profile is enrolled from, per clip (mono float32 at the model's rate): the functionals
        (N, F) and, for a pooled-head model, the tower's pooled states (N, layers, D); None for other models."""
        from mmemo.data.acoustic import functionals

        features = np.stack([functionals(w, self.config.sampling_rate) for w in waves])
        return features, self.pooled_states(waves) if self.model.audio_head == "pooled" else None

    def profile_from(self, features: np.ndarray, pooled: np.ndarray | None):
        """A `SpeakerProfile` from one speaker's `enrolment_statistics` (of any number of calls, concatenated)."""
        from mmemo.data.speakers import SpeakerProfile

        if pooled is None:
            return SpeakerProfile.enrol(features)
        return SpeakerProfile.enrol(features, pooled, self.pooled_key)

    @functools.cached_property
    def pooled_key(self) -> str:
        """Names this model's audio tower (a digest of its weights) and pooled layers: a speaker profile's pooled
        statistics fit only the tower they were computed with."""
        from mmemo.data.tower_cache import tower_digest

        tower = self.model.audio_encoder
        return f"{tower_digest(tower.model, tower.hf_config.to_dict())}:{list(self.model.pooled_layers)}"

    @property
    def uses_profiles(self) -> bool:
        """Whether a speaker profile changes this model's predictions (acoustic token or pooled audio head)."""
        return self.config.acoustic_features or self.model.audio_head == "pooled"

    @torch.inference_mode()
    def pooled_states(self, waves: list[np.ndarray], batch_size: int = 16) -> np.ndarray:
        """The audio tower's pooled states of clips (mono float32 at the model's rate): (N, layers, D_audio), the
        input of a pooled-head model's audio token (before standardisation); the tower runs in eval mode."""
        tower = self.model.audio_encoder
        was_training, out = tower.training, []
        tower.eval()
        try:
            for start in range(0, len(waves), batch_size):
                audio = move_batch(self.collator.pad_audio(list(waves[start : start + batch_size])), self.device)
                out.append(tower.pooled(audio[tower.input_name], audio["attention_mask"], self.model.pooled_layers))
        finally:
            tower.train(was_training)
        return torch.cat(out).float().cpu().numpy()

    def _check_acoustic(self, what: str) -> None:
        if not self.uses_profiles:
            raise DataError(
                f"this model has no utterance statistics to standardise (model.acoustic_features is off and its "
                f"audio head is not pooled), so {what} cannot change its predictions; train with "
                "model.acoustic_features: true (configs/emodb_cv.yaml) or model.audio_head: pooled "
                "(configs/whisper_base.yaml)"
            )

    def _reference(self, speaker_profile) -> dict:
        """A speaker profile (or its JSON file) as the references its statistics are standardised against
        (`SpeakerProfile.references`, this model's tower named for a pooled head); {} without one."""
        if speaker_profile is None:
            return {}
        self._check_acoustic("a speaker profile")
        from mmemo.data.speakers import SpeakerProfile

        if not isinstance(speaker_profile, SpeakerProfile):
            speaker_profile = SpeakerProfile.load(speaker_profile)
        return speaker_profile.references(self.pooled_key if self.model.audio_head == "pooled" else None)

    def _predict_items(
        self, items: list[dict], batch_size: int, window_seconds: float, overlap_seconds: float
    ) -> list[Prediction]:
        """Cut long audio into segments, classify every unit in sorted mini-batches, put predictions together."""
        from mmemo.data.acoustic import functionals

        rate = self.config.sampling_rate
        units, spans = [], []  # spans[i]: None for a whole input, else its segments' (start, end) samples
        for item in items:
            wave = item["audio"]
            if wave is None or len(wave) <= window_seconds * rate:
                spans.append(None)
                units.append(item)
                continue
            windows = speech_windows(wave, rate, window_seconds, overlap_seconds)
            spans.append(windows)
            whole = functionals(wave, rate) if self.config.acoustic_features else None
            # every segment carries the statistics of the whole input, as training clips carry their whole clip's
            units += [{**item, "audio": wave[a:b], "functionals": whole} for a, b in windows]
        outputs = self._classify(units, batch_size)
        out, k = [], 0
        for item, item_spans in zip(items, spans):
            count = 1 if item_spans is None else len(item_spans)
            out.append(self._assemble(item, item_spans, outputs[k : k + count]))
            k += count
        return out

    def _assemble(self, item: dict, spans: list[tuple[int, int]] | None, outputs: list[dict]) -> Prediction:
        """One input's Prediction from its units' outputs (one for a whole input, one per segment of long audio)."""
        present = {"text": bool(item["text"]), "audio": item["audio"] is not None}
        modalities = tuple(m for m in ("text", "audio") if present[m])
        if spans is None:
            fused = outputs[0]["fused"]
            return Prediction(
                self.labels[int(fused.argmax())],
                self._named(fused),
                modalities,
                {m: self._named(outputs[0][m]) for m in modalities},
            )
        rate = self.config.sampling_rate
        weights = np.array([b - a for a, b in spans], dtype=np.float64)  # duration-weighted mean over segments
        fused = np.average([v["fused"] for v in outputs], axis=0, weights=weights)
        per_modality = {"audio": self._named(np.average([v["audio"] for v in outputs], axis=0, weights=weights))}
        if item["text"]:  # the same transcript in every segment: any segment's text-alone output is the text one
            per_modality = {"text": self._named(outputs[0]["text"]), **per_modality}
        segments = tuple(
            Segment(int(a) / rate, int(b) / rate, self.labels[int(v["fused"].argmax())], self._named(v["fused"]))
            for (a, b), v in zip(spans, outputs)
        )
        return Prediction(self.labels[int(fused.argmax())], self._named(fused), modalities, per_modality, segments)

    def _classify(self, units: list[dict], batch_size: int) -> list[dict]:
        """Per unit {"fused", "text", "audio"} probability arrays (an entry is None when its modality is absent)."""

        def length(i):
            audio = units[i]["audio"]
            return (0 if audio is None else len(audio), len(units[i]["text"]))

        order = sorted(range(len(units)), key=length)
        outputs = [None] * len(units)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            for i, output in zip(chunk, self._forward([units[i] for i in chunk])):
                outputs[i] = output
        return outputs

    def _forward(self, units: list[dict]) -> list[dict]:
        """One mini-batch: encode each modality once, fuse it three ways (both, text alone, audio alone)."""
        batch = move_batch(self.collator([{"id": "", "label": -100, **u} for u in units]), self.device)
        by_condition = self.model.logits_by_condition(
            batch["text"], batch["audio"], batch["text_present"], batch["audio_present"]
        )
        outputs = [{"fused": p, "text": None, "audio": None} for p in self._probabilities(by_condition["both"][0])]
        for modality in ("text", "audio"):
            logits, rows = by_condition[modality]
            for i, p in zip(rows.tolist(), self._probabilities(logits)):
                outputs[i][modality] = p
        return outputs

    def _probabilities(self, logits: torch.Tensor) -> np.ndarray:
        return torch.softmax(logits.float() / self.temperature, dim=-1).cpu().numpy().astype(np.float64)

    def _named(self, probs: np.ndarray) -> dict[str, float]:
        return {label: float(p) for label, p in zip(self.labels, probs)}

    def _waveform(self, audio, sampling_rate: int | None, where: str) -> np.ndarray:
        rate = self.config.sampling_rate
        if isinstance(audio, (str, os.PathLike)):
            return load_audio(audio, rate)
        if sampling_rate is None:
            raise DataError(f"{where}: an array needs sampling_rate=... (e.g. predict(audio=x, sampling_rate=16000))")
        return prepare_waveform(audio, sampling_rate, rate, where=where)


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, stacklevel=3)


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
