"""The model folder: the files `EmotionRecognizer.save_pretrained` writes and `from_pretrained` reads.

A model folder holds `config.json` (mmemo's model config with the label names, Hugging Face's top-level
`id2label`/`label2id`, the calibration temperature, the model card's fields and both encoders' Hugging Face
configs), `model.safetensors`, the tokenizer files, `preprocessor_config.json` and a `README.md` model card.
Loading needs nothing else: no network, no pickle. This module finds a folder (or downloads a hub one), checks
its config.json and weights, and uploads a written folder to the hub.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from safetensors.torch import load_file, save_model
from torch import nn

from mmemo.config import ModelConfig, build_section
from mmemo.errors import ConfigError, MmemoError, ModelLoadError
from mmemo.io import atomic_folder
from mmemo.model_card import render_model_card

FORMAT_VERSION = 1
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer_config.json", "preprocessor_config.json")
# The encoders are headless base models: their configs' default two-class label maps (LABEL_0, LABEL_1) say
# nothing true about this model, whose labels are the top-level id2label.
ENCODER_HEAD_KEYS = ("id2label", "label2id", "num_labels")


def local_folder(path: str | os.PathLike) -> Path:
    """The model folder at `path`, or for a hub id ("user/name") its download (config, weights and text files).

    Raises:
        ModelLoadError: no such folder, and not a hub id or its download failed.
    """
    folder = Path(path)
    if folder.is_dir():
        return folder
    if isinstance(path, str) and path.count("/") == 1 and not path.startswith((".", "/")):
        from huggingface_hub import snapshot_download  # a hub id: users with network access get the download

        try:
            return Path(snapshot_download(path, allow_patterns=["*.json", "*.safetensors", "*.txt"]))
        except Exception as e:
            raise ModelLoadError(
                f"cannot load model {path!r}: not a local folder, and the hub download failed ({e})"
            ) from None
    raise ModelLoadError(f"model folder {path} does not exist; train one with `mmemo train` (see README)")


def read_meta(folder: Path) -> tuple[dict, ModelConfig, float]:
    """A model folder's checked config.json: the whole dict, its model config and the calibration temperature.

    Raises:
        ModelLoadError: a required file is missing, config.json is not JSON, comes from an incompatible format
            version, or holds an invalid model config or temperature.
    """
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise ModelLoadError(
            f"model folder {folder} is missing {', '.join(missing)}; "
            "it should be a folder written by `save_pretrained` (e.g. runs/NAME/model)"
        )
    try:
        meta = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{folder}/config.json is not valid JSON ({e}); copy the model folder again") from None
    version = meta.get("mmemo_format")
    if version != FORMAT_VERSION:
        raise ModelLoadError(
            f"{folder}/config.json has mmemo_format {version!r}; this mmemo reads "
            f"format {FORMAT_VERSION}. Retrain the model or use the mmemo version that wrote it"
        )
    try:
        config = build_section(ModelConfig, meta["model"], f"{folder}/config.json: model")
    except (ConfigError, KeyError) as e:
        raise ModelLoadError(f"{folder}/config.json is not a valid mmemo model config: {e}") from None
    temperature = meta.get("temperature", 1.0)  # folders written before calibration have none
    if not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ModelLoadError(f"{folder}/config.json: temperature must be a positive number, got {temperature!r}")
    return meta, config, temperature


def load_weights(model: nn.Module, folder: Path) -> None:
    """Load the folder's model.safetensors into `model` (built from its config.json), every tensor checked.

    Raises:
        ModelLoadError: the file cannot be read, or its tensors' names or shapes do not match the model.
    """
    try:
        state = load_file(folder / "model.safetensors")
    except Exception as e:  # safetensors raises SafetensorError for a truncated or corrupt file
        raise ModelLoadError(f"{folder}/model.safetensors cannot be read ({e}); copy the model folder again") from None
    expected = model.state_dict()
    wrong = [
        f"{k} {tuple(v.shape)} (config.json gives {tuple(expected[k].shape)})"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if wrong:
        raise ModelLoadError(f"{folder}/model.safetensors does not match config.json: {', '.join(wrong[:3])}")
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ModelLoadError(
            f"{folder}/model.safetensors does not match config.json "
            f"(missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})"
        )


def upload(
    folder: Path, repo_id: str, private: bool | None, token: str | None, commit_message: str, endpoint: str | None
) -> str:
    """Upload a written model folder to a hub model repository (created when missing); returns the commit URL.

    Raises:
        MmemoError: the upload failed (offline, no or wrong token, no access); the message says why.
    """
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, private=private, repo_type="model", exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=folder, repo_type="model", commit_message=commit_message
        )
    except Exception as e:  # network, HTTP and offline-mode errors have no common base class
        raise MmemoError(
            f"cannot upload the model to {repo_id!r} on {api.endpoint} ({type(e).__name__}: {e}); check the "
            "network, the repository id, and that your token (hf auth login, or HF_TOKEN) may write to it"
        ) from None
    return getattr(commit, "commit_url", str(commit))


def check_replaceable(path: str | os.PathLike) -> None:
    """Refuse to write a model folder over a non-empty folder that is not one (a run folder, a user's folder).

    Raises:
        MmemoError: `path` is such a folder.
    """
    if Path(path).is_dir() and any(Path(path).iterdir()) and not _is_model_folder(Path(path)):
        raise MmemoError(
            f"{path} exists and is not an mmemo model folder; save_pretrained replaces the whole folder, so "
            "choose a new or empty folder (e.g. runs/NAME/model)"
        )


def write(path: str | os.PathLike, recognizer) -> None:
    """Write `recognizer`'s model folder atomically (a temporary folder renamed into place), card included."""
    meta = {
        "mmemo_format": FORMAT_VERSION,
        "model": dataclasses.asdict(recognizer.config),
        "id2label": {str(i): label for i, label in enumerate(recognizer.labels)},  # string keys, as Hugging Face's
        "label2id": {label: i for i, label in enumerate(recognizer.labels)},
        "temperature": recognizer.temperature,
        "card": recognizer.card.to_dict(),
        "text_config": _encoder_config(recognizer.model.text_encoder),
        "audio_config": _encoder_config(recognizer.model.audio_encoder),
    }
    with atomic_folder(path) as tmp:
        (tmp / "config.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
        (tmp / "README.md").write_text(render_model_card(recognizer, recognizer.card), encoding="utf-8")
        save_model(recognizer.model, str(tmp / "model.safetensors"))
        recognizer.tokenizer.save_pretrained(tmp)
        recognizer.feature_extractor.save_pretrained(tmp)


def _is_model_folder(folder: Path) -> bool:
    """Whether `folder` holds a model folder written by `save_pretrained` (safe to replace)."""
    try:
        return "mmemo_format" in json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def _encoder_config(encoder) -> dict:
    """An encoder wrapper's Hugging Face config as a dict, without the head keys that would name labels it does
    not have."""
    return {k: v for k, v in encoder.hf_config.to_dict().items() if k not in ENCODER_HEAD_KEYS}
