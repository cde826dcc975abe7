"""Read CTranslate2 Whisper models (faster-whisper's format) and write them as Hugging Face Whisper folders.

Many users hold faster-whisper models on disk, and air-gapped sites can often get a pip package but not a hub
download. `convert_ct2_whisper(src, out)` turns such a folder (`model.bin`, faster-whisper's `config.json`,
`tokenizer.json`) into a folder that `WhisperForConditionalGeneration.from_pretrained` and
`model.audio_encoder=OUT` load: config derived from the tensor shapes, fused attention weights split, the output
projection tied to the token embeddings, safetensors weights, tokenizer, feature extractor and generation config.

The `model.bin` layout (CTranslate2 binary version 6; versions 2-6 are read), little-endian:
    uint32 version; then (version ≥ 2) the spec name (string) and a uint32 spec revision
    uint32 count; per variable: name (string), uint8 rank, rank × uint32 dims, uint8 dtype, uint32 byte count, bytes
    (version ≥ 3) uint32 count; per alias: alias name, target name (strings)
A string is a uint16 length that counts a trailing NUL, then the bytes. Quantised weights (int8 per output row,
int16 per tensor) come with a `<name>_scale` variable and are dequantised here: value / scale.
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmemo.errors import ModelLoadError

DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
BINARY_VERSIONS = range(2, 7)  # what this reader understands; CTranslate2 4.x writes 6
OUTPUT_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class Ct2Model:
    """A parsed `model.bin`: spec name and revision, variables by name (aliases resolved), binary version."""

    spec: str
    revision: int
    version: int
    variables: dict


def read_ct2(path: str | os.PathLike) -> Ct2Model:
    """Parse a CTranslate2 `model.bin` into NumPy arrays (no ctranslate2 needed).

    Quantised weights are dequantised with their stored scales, so every weight comes back as a float array.

    Raises:
        ModelLoadError: the file is missing, truncated (with the expected and actual sizes) or of an unknown
            binary version.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file; a CTranslate2 model folder holds model.bin")
    data = memoryview(path.read_bytes())
    reader = _Reader(data, path)
    version = reader.unpack("I")
    if version not in BINARY_VERSIONS:
        raise ModelLoadError(
            f"{path}: CTranslate2 binary version {version} is not one this reader knows "
            f"({BINARY_VERSIONS.start}-{BINARY_VERSIONS.stop - 1}); convert the model again with a CTranslate2 "
            "release that writes one of these, or check that the file is a CTranslate2 model.bin"
        )
    spec, revision = (reader.string(), reader.unpack("I")) if version >= 2 else ("", 1)
    raw = {}
    for _ in range(reader.unpack("I")):
        name = reader.string()
        shape = tuple(reader.unpack("I") for _ in range(reader.unpack("B")))
        code = reader.unpack("B")
        size = reader.unpack("I")
        if code not in DTYPES:
            raise ModelLoadError(f"{path}: variable {name!r} has unknown dtype code {code}")
        raw[name] = _array(reader.take(size, name), DTYPES[code], shape)
    if version >= 3:
        for _ in range(reader.unpack("I")):
            alias, target = reader.string(), reader.string()
            raw[alias] = raw[target]
    return Ct2Model(spec, revision, version, _dequantise(raw))


class _Reader:
    """Sequential little-endian reads over the file's bytes; running past the end names both sizes."""

    def __init__(self, data: memoryview, path: Path):
        self.data, self.path, self.offset = data, path, 0

    def take(self, size: int, what: str) -> memoryview:
        end = self.offset + size
        if end > len(self.data):
            raise ModelLoadError(
                f"{self.path}: truncated while reading {what}: the file is {len(self.data):,} bytes, its contents "
                f"need at least {end:,}. A model shipped in parts must be joined first (cat part1 part2 > model.bin)"
            )
        chunk, self.offset = self.data[self.offset : end], end
        return chunk

    def unpack(self, fmt: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), "the header"))[0]

    def string(self) -> str:
        return bytes(self.take(self.unpack("H"), "a name")).rstrip(b"\0").decode("utf-8")


def _array(chunk: memoryview, dtype, shape: tuple) -> np.ndarray:
    if dtype == "bfloat16":  # NumPy has no bfloat16: its bits are float32's upper half
        values = np.frombuffer(chunk, dtype=np.uint16).astype(np.uint32) << 16
        return values.view(np.float32).reshape(shape)
    return np.frombuffer(chunk, dtype=dtype).reshape(shape)


def _dequantise(raw: dict) -> dict:
    """Float arrays for quantised weights (`x_scale` beside `x`); the scales themselves are dropped."""
    out = {}
    for name, value in raw.items():
        if name.endswith("_scale") and name[: -len("_scale")] in raw:
            continue
        scale = raw.get(f"{name}_scale")
        if scale is not None:
            scale = np.asarray(scale, dtype=np.float32)
            value = value.astype(np.float32)
            # int8: one scale per output row (conv weights are scaled as rows of their flattened kernel)
            value = value / (scale.reshape(-1, *([1] * (value.ndim - 1))) if scale.ndim else scale)
        out[name] = value
    return out


def whisper_config(model: Ct2Model, tokenizer: dict | None = None) -> dict:
    """WhisperConfig fields derived from a CTranslate2 Whisper model's tensor shapes (and its tokenizer's ids).

    Raises:
        ModelLoadError: the spec is not Whisper, or a tensor the config is read from is missing.
    """
    if model.spec != "WhisperSpec":
        raise ModelLoadError(
            f"this CTranslate2 model is a {model.spec or 'spec-less'} model, not Whisper (WhisperSpec); only Whisper "
            "models can be converted"
        )
    v = model.variables

    def get(name: str) -> np.ndarray:
        if name not in v:
            raise ModelLoadError(
                f"the CTranslate2 Whisper model has no {name!r}; the file is incomplete or not Whisper"
            )
        return v[name]

    vocab_size, d_model = get("decoder/embeddings/weight").shape
    config = {
        "vocab_size": int(vocab_size),
        "num_mel_bins": int(get("encoder/conv1/weight").shape[1]),
        "d_model": int(d_model),
        "encoder_layers": _layer_count(v, "encoder"),
        "decoder_layers": _layer_count(v, "decoder"),
        "encoder_attention_heads": int(get("encoder/num_heads")),
        "decoder_attention_heads": int(get("decoder/num_heads")),
        "encoder_ffn_dim": int(get("encoder/layer_0/ffn/linear_0/weight").shape[0]),
        "decoder_ffn_dim": int(get("decoder/layer_0/ffn/linear_0/weight").shape[0]),
        "max_source_positions": int(get("encoder/position_encodings/encodings").shape[0]),
        "max_target_positions": int(get("decoder/position_encodings/encodings").shape[0]),
        "tie_word_embeddings": True,
    }
    ids = _special_ids(tokenizer or {})
    if "<|endoftext|>" in ids and "<|startoftranscript|>" in ids:
        end = ids["<|endoftext|>"]
        config.update(
            bos_token_id=end, eos_token_id=end, pad_token_id=end, decoder_start_token_id=ids["<|startoftranscript|>"]
        )
    return config


def whisper_state_dict(model: Ct2Model) -> dict:
    """The model's tensors under `WhisperForConditionalGeneration`'s names, as float32 NumPy arrays.

    Fused projections are split: self-attention's `linear_0` holds query, key and value along the output dimension
    (the key's stored bias is zeros: Whisper's `k_proj` has none), cross-attention's `linear_1` key and value.
    """
    v = {name: np.asarray(value, dtype=np.float32) for name, value in model.variables.items() if value.ndim}
    state = {}

    def put(hf: str, ct2: str) -> None:
        if ct2 not in v:
            raise ModelLoadError(f"the CTranslate2 Whisper model has no {ct2!r}; the file is incomplete or not Whisper")
        state[hf] = v[ct2]

    def linear(hf: str, ct2: str, bias: bool = True) -> None:
        put(f"{hf}.weight", f"{ct2}/weight")
        if bias:
            put(f"{hf}.bias", f"{ct2}/bias")

    def norm(hf: str, ct2: str) -> None:
        put(f"{hf}.weight", f"{ct2}/gamma")
        put(f"{hf}.bias", f"{ct2}/beta")

    def split(hf: str, ct2: str, names: tuple[str, ...]) -> None:
        weights = np.split(v[f"{ct2}/weight"], len(names))
        biases = np.split(v[f"{ct2}/bias"], len(names))
        for name, weight, bias in zip(names, weights, biases):
            state[f"{hf}.{name}.weight"] = weight
            if name != "k_proj":
                state[f"{hf}.{name}.bias"] = bias

    for side in ("encoder", "decoder"):
        hf_side, prefix = f"model.{side}", side
        for i in range(_layer_count(v, side)):
            layer, ct2 = f"{hf_side}.layers.{i}", f"{prefix}/layer_{i}"
            attention = f"{ct2}/self_attention"
            if f"{attention}/linear_0/weight" not in v:
                raise ModelLoadError(f"the CTranslate2 Whisper model has no {attention}/linear_0; not a Whisper model")
            split(f"{layer}.self_attn", f"{attention}/linear_0", ("q_proj", "k_proj", "v_proj"))
            linear(f"{layer}.self_attn.out_proj", f"{attention}/linear_1")
            norm(f"{layer}.self_attn_layer_norm", f"{attention}/layer_norm")
            if side == "decoder":
                cross = f"{ct2}/attention"
                linear(f"{layer}.encoder_attn.q_proj", f"{cross}/linear_0")
                split(f"{layer}.encoder_attn", f"{cross}/linear_1", ("k_proj", "v_proj"))
                linear(f"{layer}.encoder_attn.out_proj", f"{cross}/linear_2")
                norm(f"{layer}.encoder_attn_layer_norm", f"{cross}/layer_norm")
            linear(f"{layer}.fc1", f"{ct2}/ffn/linear_0")
            linear(f"{layer}.fc2", f"{ct2}/ffn/linear_1")
            norm(f"{layer}.final_layer_norm", f"{ct2}/ffn/layer_norm")
        norm(f"{hf_side}.layer_norm", f"{prefix}/layer_norm")
    linear("model.encoder.conv1", "encoder/conv1")
    linear("model.encoder.conv2", "encoder/conv2")
    put("model.encoder.embed_positions.weight", "encoder/position_encodings/encodings")
    put("model.decoder.embed_tokens.weight", "decoder/embeddings/weight")
    put("model.decoder.embed_positions.weight", "decoder/position_encodings/encodings")
    return state


def convert_ct2_whisper(
    src: str | os.PathLike, out: str | os.PathLike, dtype: str = "float32", overwrite: bool = False
) -> Path:
    """Write a CTranslate2 Whisper folder as a Hugging Face Whisper folder (nothing is written on an error).

    Args:
        src: the CTranslate2 folder: `model.bin`, `config.json` (faster-whisper's), `tokenizer.json`.
        out: the folder to write: config.json, model.safetensors, generation_config.json, tokenizer and
            feature-extractor files.
        dtype: "float32" or "float16" weights in the output.
        overwrite: replace an existing `out`.

    Returns:
        `out` as a Path.

    Raises:
        ModelLoadError: a file is missing, truncated or not a Whisper model (see `read_ct2`, `whisper_config`).
        ValueError: an unknown `dtype`, or `out` exists without `overwrite`, or `out` is `src`.
    """
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from mmemo.io import atomic_folder

    src, out = Path(src), Path(out)
    if dtype not in OUTPUT_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(OUTPUT_DTYPES)}, got {dtype!r}")
    if out.resolve() == src.resolve():
        raise ValueError(f"{out}: the output folder must not be the CTranslate2 folder it is converted from")
    if out.exists() and not overwrite:
        raise ValueError(f"{out} exists; choose another folder or pass --overwrite to replace it")
    if not (src / "config.json").is_file():
        raise ModelLoadError(
            f"{src}: no config.json; a CTranslate2 Whisper folder (faster-whisper's layout) has model.bin, "
            "config.json and tokenizer.json side by side"
        )
    faster = json.loads((src / "config.json").read_text(encoding="utf-8"))
    tokenizer = (
        json.loads((src / "tokenizer.json").read_text(encoding="utf-8")) if (src / "tokenizer.json").is_file() else None
    )
    model_bin = read_ct2(src / "model.bin")
    config = WhisperConfig(**whisper_config(model_bin, tokenizer))
    state = {name: torch.from_numpy(value.copy()) for name, value in whisper_state_dict(model_bin).items()}
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [name for name in missing if name != "proj_out.weight"]  # tied to the token embeddings
    if missing or unexpected:
        raise ModelLoadError(
            f"{src}: the tensors do not fit a Whisper model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    model.tie_weights()
    model = model.to(getattr(torch, dtype))
    model.generation_config = _generation_config(config, faster, tokenizer)
    with atomic_folder(out) as tmp:
        model.save_pretrained(tmp)
        _save_processor(tmp, config, tokenizer, src)
    return out


def _layer_count(variables: dict, side: str) -> int:
    """How many `side/layer_<i>/...` blocks the model has."""
    return len({match[1] for name in variables if (match := re.match(rf"{side}/layer_(\d+)/", name))})


def _special_ids(tokenizer: dict) -> dict[str, int]:
    return {token["content"]: token["id"] for token in tokenizer.get("added_tokens", [])}


def _generation_config(config, faster: dict, tokenizer: dict | None):
    """Transformers' generation config for Whisper from faster-whisper's config.json and the tokenizer's ids."""
    from transformers import GenerationConfig

    ids = _special_ids(tokenizer or {})
    languages = {name: i for name, i in ids.items() if i in set(faster.get("lang_ids", []))}
    fields = {
        "decoder_start_token_id": config.decoder_start_token_id,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
        "max_length": config.max_target_positions,
        "suppress_tokens": faster.get("suppress_ids", []),
        "begin_suppress_tokens": faster.get("suppress_ids_begin", []),
        "alignment_heads": faster.get("alignment_heads", []),
        "is_multilingual": bool(languages),
        "lang_to_id": languages,
        "task_to_id": {task: ids[f"<|{task}|>"] for task in ("transcribe", "translate") if f"<|{task}|>" in ids},
        "no_timestamps_token_id": ids.get("<|notimestamps|>"),
    }
    return GenerationConfig(**{key: value for key, value in fields.items() if value is not None})


def _save_processor(folder: Path, config, tokenizer: dict | None, src: Path) -> None:
    """The log-mel feature extractor (from `num_mel_bins`) and, when the source has one, the tokenizer."""
    from transformers import WhisperFeatureExtractor, WhisperTokenizerFast

    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(folder)
    if tokenizer is None:
        return
    special = {name: "<|endoftext|>" for name in ("unk_token", "bos_token", "eos_token", "pad_token")}
    WhisperTokenizerFast(tokenizer_file=str(src / "tokenizer.json"), **special).save_pretrained(folder)
