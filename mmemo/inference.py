"""EmotionRecognizer: a trained model with its tokenizer, feature extractor and labels; save, load, predict.

A model folder holds `config.json` (mmemo's model config with the label names and both encoders' full
Hugging Face configs), `model.safetensors`, the tokenizer files and `preprocessor_config.json`. Loading
needs nothing else: no network, no pickle.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_model

from mmemo.config import ModelConfig, build_section
from mmemo.data.audio import load_audio, prepare_waveform
from mmemo.data.dataset import Collator
from mmemo.errors import ConfigError, DataError, ModelLoadError
from mmemo.model import EmotionModel, encoders_from_configs

FORMAT_VERSION = 1
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer_config.json", "preprocessor_config.json")


@dataclass(frozen=True)
class Prediction:
    """One prediction: the top label, a probability per label (summing to 1) and the modalities used."""

    label: str
    probabilities: dict[str, float]
    modalities: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"label": self.label, "probabilities": self.probabilities, "modalities": list(self.modalities)}


class EmotionRecognizer:
    """Predict emotions from text, audio or both with one trained checkpoint.

    Args:
        model: the EmotionModel.
        tokenizer: its Hugging Face tokenizer.
        feature_extractor: its Hugging Face audio feature extractor.
        config: the model config; `config.labels` names the classes in logit order.
    """

    def __init__(self, model: EmotionModel, tokenizer, feature_extractor, config: ModelConfig):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.feature_extractor = feature_extractor
        self.config = config
        self.labels = list(config.labels)
        self.collator = Collator(tokenizer, feature_extractor, config.max_text_tokens)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> "EmotionRecognizer":
        self.model.to(device)
        return self

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "EmotionRecognizer":
        """Load a model folder written by `save_pretrained` (or a Hugging Face hub id holding one).

        Raises:
            ModelLoadError: a required file is missing, or the folder comes from an incompatible version.
        """
        from transformers import AutoFeatureExtractor, AutoTokenizer

        folder = _local_folder(path)
        missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
        if missing:
            raise ModelLoadError(f"model folder {folder} is missing {', '.join(missing)}; "
                                 "it should be a folder written by `save_pretrained` (e.g. runs/NAME/model)")
        meta = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        version = meta.get("mmemo_format")
        if version != FORMAT_VERSION:
            raise ModelLoadError(f"{folder}/config.json has mmemo_format {version!r}; this mmemo reads "
                                 f"format {FORMAT_VERSION}. Retrain the model or use the mmemo version that wrote it")
        try:
            config = build_section(ModelConfig, meta["model"], f"{folder}/config.json: model")
        except (ConfigError, KeyError) as e:
            raise ModelLoadError(f"{folder}/config.json is not a valid mmemo model config: {e}") from None
        text_model, audio_model = encoders_from_configs(meta["text_config"], meta["audio_config"])
        model = EmotionModel(config, len(config.labels), text_model, audio_model)
        state = load_file(folder / "model.safetensors")
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ModelLoadError(f"{folder}/model.safetensors does not match config.json "
                                 f"(missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})")
        tokenizer = AutoTokenizer.from_pretrained(folder)
        feature_extractor = AutoFeatureExtractor.from_pretrained(folder)
        return cls(model, tokenizer, feature_extractor, config).to(device)

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write the model folder atomically (a temporary folder renamed into place); returns its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        meta = {
            "mmemo_format": FORMAT_VERSION,
            "model": dataclasses.asdict(self.config),
            "text_config": self.model.text_encoder.model.config.to_dict(),
            "audio_config": self.model.audio_encoder.model.config.to_dict(),
        }
        (tmp / "config.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
        save_model(self.model, str(tmp / "model.safetensors"))
        self.tokenizer.save_pretrained(tmp)
        self.feature_extractor.save_pretrained(tmp)
        old = path.with_name(f".{path.name}.old")
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
        return path

    @torch.inference_mode()
    def predict(self, text: str | list[str] | None = None, audio=None, sampling_rate: int | None = None):
        """Classify text, audio or both.

        Args:
            text: a transcript, or a list of them for a batch (None or "" = no text).
            audio: a file path, a NumPy array or torch tensor (mono, or channels × samples), or a list of them.
            sampling_rate: the rate of array/tensor audio (required for arrays; files carry their own).

        Returns:
            A Prediction, or a list of them (in input order) when a list was given.

        Raises:
            DataError: no input, mismatched list lengths, unreadable audio, or an array without sampling_rate.
        """
        batched = isinstance(text, (list, tuple)) or isinstance(audio, (list, tuple))
        texts, audios = _as_list(text), _as_list(audio)
        n = max(len(texts), len(audios))
        if n == 0:
            raise DataError("predict() needs text=..., audio=... or both")
        texts = texts or [None] * n
        audios = audios or [None] * n
        if len(texts) != len(audios):
            raise DataError(f"predict(): {len(texts)} texts but {len(audios)} audio inputs; give one of each per item")
        items = []
        for i, (t, a) in enumerate(zip(texts, audios)):
            waveform = None if a is None else self._waveform(a, sampling_rate, where=f"audio[{i}]" if batched else "audio")
            t = (t or "").strip()
            if not t and waveform is None:
                raise DataError(f"input {i}: empty text and no audio; give a transcript, audio, or both")
            items.append({"id": str(i), "text": t, "audio": waveform, "label": -100})
        predictions = self._predict_items(items)
        return predictions if batched else predictions[0]

    def _predict_items(self, items: list[dict]) -> list[Prediction]:
        batch = self.collator(items)
        batch = move_batch(batch, self.device)
        logits = self.model(batch["text"], batch["audio"], batch["text_present"], batch["audio_present"])["logits"]
        probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        out = []
        for item, p in zip(items, probs):
            modalities = tuple(m for m, present in (("text", item["text"]), ("audio", item["audio"] is not None)) if present)
            out.append(Prediction(self.labels[int(p.argmax())], {l: float(v) for l, v in zip(self.labels, p)}, modalities))
        return out

    def _waveform(self, audio, sampling_rate: int | None, where: str) -> np.ndarray:
        rate = self.config.sampling_rate
        if isinstance(audio, (str, os.PathLike)):
            return load_audio(audio, rate)
        if sampling_rate is None:
            raise DataError(f"{where}: an array needs sampling_rate=... (e.g. predict(audio=x, sampling_rate=16000))")
        return prepare_waveform(audio, sampling_rate, rate, where=where)


def move_batch(batch: dict, device: torch.device | str, non_blocking: bool = False) -> dict:
    """Move every tensor in a (nested) batch dict to `device`."""
    def move(value):
        if isinstance(value, torch.Tensor):
            return value.to(device, non_blocking=non_blocking)
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        return value

    return move(batch)


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _local_folder(path: str | os.PathLike) -> Path:
    folder = Path(path)
    if folder.is_dir():
        return folder
    if isinstance(path, str) and path.count("/") == 1 and not path.startswith((".", "/")):
        from huggingface_hub import snapshot_download  # a hub id: users with network access get the download

        try:
            return Path(snapshot_download(path, allow_patterns=["*.json", "*.safetensors", "*.txt"]))
        except Exception as e:
            raise ModelLoadError(f"cannot load model {path!r}: not a local folder, and the hub download failed ({e})") from None
    raise ModelLoadError(f"model folder {path} does not exist; train one with `mmemo train` (see README)")
