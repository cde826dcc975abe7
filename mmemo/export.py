"""ONNX export: three graphs (text encoder, audio encoder, fusion head) plus what the runtime needs.

    OUT_DIR/
      text_encoder.onnx     input_ids, attention_mask (B, T_text)       → text_states (B, T_text, D)
      audio_encoder.onnx    input_values, attention_mask (B, S)         → audio_states (B, T_audio, D), audio_mask
                            (Whisper: input_features (B, n_mels, frames), attention_mask (B, frames))
                            [+ pooled_reference (B, 2, layers, D_audio): pooled audio head]
                            [+ functionals (B, F), reference (B, 2, F): acoustic-statistics token]
      fusion.onnx           both streams + masks, text_present / audio_present (B,) → logits (B, C)
      tokenizer.json        the tokenizer (tokenizers library format)
      mmemo_onnx.json       labels, temperature, sampling rate, feature-extractor settings, padding id, audio head
      mel_filters.npy       Whisper towers: the feature extractor's mel filter bank (n_fft/2 + 1, n_mels)
      mmemo_acoustic.py     acoustic-token models: a copy of mmemo/data/acoustic.py (the functionals, NumPy/SciPy)
      mmemo_onnx_runtime.py a copy of mmemo/onnx_runtime.py: predicts with NumPy + onnxruntime, no torch
      README.md             how to load and predict with the runtime, its inputs, what to install

The audio graph is `EmotionModel.encode_audio` itself: the runtime only prepares its inputs (waveform
normalisation or Whisper's log-mel per clip, the functionals, a speaker profile's statistics or NaN for
"use the training statistics"), so standardisation and masking are the model's own code. Batch and time axes
are dynamic. A modality that no sample has is fed to the fusion graph as one zero position with `present`
false, which the model turns into its learned placeholder, exactly as `fuse(None)`. With `int8`, the MatMuls of
every graph are quantized dynamically by onnxruntime (weights int8 per output channel), and a Whisper tower's two
front-end convolutions are exported as MatMuls over their input windows (`WindowLinear`) so that they are
quantized too (onnxruntime's integer convolution was slower on CPU than fp32).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmemo.data import acoustic
from mmemo.errors import MmemoError
from mmemo.inference import EmotionRecognizer

try:
    import onnx  # noqa: F401  (torch.onnx.export writes through it)

    from mmemo import onnx_runtime
except ImportError as e:
    raise MmemoError(f"ONNX export needs the export extra: pip install 'mmemo[export]' ({e})") from None

OPSET = 17
# what `mmemo_onnx_runtime.py` imports: the first four always, soundfile for files, scipy for resampling
RUNTIME_REQUIREMENTS = ("onnxruntime", "numpy", "tokenizers", "threadpoolctl", "soundfile", "scipy")
FP32_TOLERANCE = 1e-3  # max |Δ probability| between PyTorch and the fp32 export
# The copy of mmemo/data/acoustic.py in an export folder stands alone: its one mmemo import becomes this line.
_ACOUSTIC_IMPORT = "from mmemo.errors import DataError\n"
_ACOUSTIC_STANDALONE = "DataError = ValueError  # mmemo_acoustic.py: a copy of mmemo/data/acoustic.py without mmemo\n"


class _TextGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        states, _ = self.model.text_encoder(input_ids, attention_mask)  # (B, T_text, D_text)
        return self.model.text_proj(states)  # (B, T_text, D)


class _AudioGraph(nn.Module):
    """`encode_audio` on positional inputs named `names` (the keys of its audio dict)."""

    def __init__(self, model, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *inputs):
        return self.model.encode_audio(dict(zip(self.names, inputs)))


class _FusionGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = copy.deepcopy(model)
        for block in getattr(self.model.fusion, "blocks", []):
            block.text_from_audio = _TraceableAttention(block.text_from_audio)
            block.audio_from_text = _TraceableAttention(block.audio_from_text)

    def forward(self, text_states, text_mask, audio_states, audio_mask, text_present, audio_present):
        return self.model.fuse((text_states, text_mask), (audio_states, audio_mask), text_present, audio_present)


class _TraceableAttention(nn.Module):
    """nn.MultiheadAttention (batch_first, eval) with reshapes the tracer keeps dynamic.

    The legacy exporter bakes the traced key length into one of MultiheadAttention's internal reshapes,
    so a fusion graph exported from it fails on any other text length; this computes the same attention
    with the same weights.
    """

    def __init__(self, attention: nn.MultiheadAttention):
        super().__init__()
        self.attention = attention

    def forward(self, query, key, value, key_padding_mask, need_weights=False):
        a = self.attention
        w_q, w_k, w_v = a.in_proj_weight.chunk(3)
        b_q, b_k, b_v = a.in_proj_bias.chunk(3)
        q, k, v = F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)
        heads = a.num_heads

        def split(x):  # (B, T, D) → (B, heads, T, D / heads)
            return x.reshape(x.shape[0], -1, heads, a.head_dim).transpose(1, 2)

        attend = ~key_padding_mask[:, None, None, :]  # (B, 1, 1, T_key)
        out = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=attend)
        out = out.transpose(1, 2).reshape(query.shape[0], -1, a.embed_dim)  # (B, T_query, D)
        return a.out_proj(out), None


def export_onnx(
    model_dir: str | os.PathLike, out_dir: str | os.PathLike, int8: bool = False, overwrite: bool = False
) -> dict:
    """Export a model folder to ONNX and check the export against PyTorch.

    Args:
        model_dir: a folder written by `EmotionRecognizer.save_pretrained`.
        out_dir: the export folder to write.
        int8: quantize the graphs' MatMuls to int8 (onnxruntime dynamic quantization).
        overwrite: replace an existing non-empty `out_dir`.

    Returns:
        {"out_dir": Path, "int8": bool, "max_abs_diff": max |Δ probability| against PyTorch fp32 over
        text+audio, text-only and audio-only inputs and the per-modality probabilities}.

    Raises:
        MmemoError: `out_dir` exists and is not empty without `overwrite`, the tokenizer has no tokenizer.json
            (a slow tokenizer), a Whisper feature extractor dithers (random preprocessing), or the fp32 export
            differs from PyTorch by more than FP32_TOLERANCE.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise MmemoError(f"export folder {out_dir} already exists; pass --overwrite or choose another folder")
    recognizer = EmotionRecognizer.from_pretrained(model_dir)
    fe = recognizer.feature_extractor
    if getattr(fe, "dither", 0.0):
        raise MmemoError(
            f"{model_dir}: the feature extractor adds random dither ({fe.dither}) to the log-mel, which an export "
            'cannot reproduce; set "dither": 0.0 in its preprocessor_config.json'
        )
    if not (Path(model_dir) / "tokenizer.json").is_file():
        raise MmemoError(f"{model_dir} has no tokenizer.json (a slow tokenizer); the ONNX runtime needs a fast one")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        graph_dir = Path(tmp) if int8 else out_dir
        if int8:
            recognizer.model.audio_encoder.convolutions_as_linear()  # the same states (1e-5), as MatMuls
        _export_graphs(recognizer, graph_dir)
        if int8:
            _quantize_graphs(graph_dir, out_dir)
    shutil.copy(Path(model_dir) / "tokenizer.json", out_dir / "tokenizer.json")
    shutil.copy(onnx_runtime.__file__, out_dir / "mmemo_onnx_runtime.py")
    meta = _runtime_meta(recognizer, int8)
    if meta["audio_input"] == "input_features":
        np.save(out_dir / onnx_runtime.MEL_FILTERS_FILE, np.asarray(fe.mel_filters, dtype=np.float64))
    if meta["acoustic_features"]:
        _copy_acoustic(out_dir / onnx_runtime.ACOUSTIC_FILE)
    (out_dir / onnx_runtime.META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
    (out_dir / "README.md").write_text(export_readme(meta), encoding="utf-8")
    diff = parity(recognizer, onnx_runtime.OnnxEmotionRecognizer(out_dir))
    if not int8 and diff > FP32_TOLERANCE:
        raise MmemoError(
            f"the ONNX export in {out_dir} differs from PyTorch by {diff:.2e} in probability "
            f"(tolerance {FP32_TOLERANCE}); please report this with your model config"
        )
    return {"out_dir": out_dir, "int8": int8, "max_abs_diff": diff}


def _runtime_meta(recognizer: EmotionRecognizer, int8: bool) -> dict:
    """mmemo_onnx.json: what the runtime needs besides the graphs (labels, preprocessing, the audio head)."""
    model, fe, config = recognizer.model, recognizer.feature_extractor, recognizer.config
    tower = model.audio_encoder
    meta = {
        "format": onnx_runtime.EXPORT_FORMAT,
        "labels": recognizer.labels,
        "temperature": recognizer.temperature,
        "sampling_rate": config.sampling_rate,
        "max_text_tokens": config.max_text_tokens,
        "pad_token_id": recognizer.tokenizer.pad_token_id,
        "fusion_dim": config.fusion_dim,
        "int8": int8,
        "audio_input": tower.input_name,
        "feature_extractor": {
            "do_normalize": bool(getattr(fe, "do_normalize", True)),
            "padding_value": float(getattr(fe, "padding_value", 0.0)),
        },
        "audio_head": model.audio_head,
        "acoustic_features": bool(config.acoustic_features),
    }
    if tower.input_name == "input_features":
        # The extractor cuts audio at n_samples (30 s); the tower's positional table may hold fewer frames.
        meta["feature_extractor"] = {
            "n_fft": int(fe.n_fft),
            "hop_length": int(fe.hop_length),
            "max_samples": int(fe.n_samples),
            "max_frames": 2 * int(tower.model.embed_positions.num_embeddings),
        }
    if model.audio_head == "pooled":
        meta["pooled_key"] = recognizer.pooled_key
        meta["pooled_shape"] = list(model.pooled_mean.shape)
    if config.acoustic_features:
        meta["features_version"] = acoustic.FEATURES_VERSION
        meta["feature_names"] = list(acoustic.FEATURE_NAMES)
    return meta


def _copy_acoustic(path: Path) -> None:
    """mmemo/data/acoustic.py as a module that imports nothing of mmemo (the runtime loads it from the folder)."""
    source = Path(acoustic.__file__).read_text(encoding="utf-8")
    if source.count(_ACOUSTIC_IMPORT) != 1:
        raise MmemoError(f"{acoustic.__file__} no longer imports DataError as the export expects; update export.py")
    path.write_text(source.replace(_ACOUSTIC_IMPORT, _ACOUSTIC_STANDALONE), encoding="utf-8")


def export_readme(meta: dict) -> str:
    """README.md of an export folder: what it holds, how to predict with the torch-free runtime, what to install."""
    labels = ", ".join(f"`{label}`" for label in meta["labels"])
    whisper = meta.get("audio_input") == "input_features"
    acoustic = meta.get("acoustic_features", False)
    profiles = acoustic or meta.get("audio_head") == "pooled"
    install = " ".join(RUNTIME_REQUIREMENTS + (("librosa",) if acoustic else ()))
    extra_install = (
        " `librosa` builds the mel filters of the acoustic functionals (`mmemo_acoustic.py`) this model reads."
        if acoustic
        else ""
    )
    long_audio = (
        "Long recordings are classified whole, up to the Whisper tower's first 30 s (the PyTorch `EmotionRecognizer` "
        "splits them into speech segments)."
        if whisper
        else "Long recordings are classified whole (the PyTorch `EmotionRecognizer` splits them into speech segments)."
    )
    profile_input = (
        '\n- `speaker_profile="me.json"`: a speaker\'s profile from `mmemo enrol MODEL CLIPS -o me.json` (with this '
        "model's PyTorch folder): the model's utterance statistics are then standardised against that speaker "
        "instead of the training clips. A profile enrolled with another model's audio tower is refused."
        if profiles
        else ""
    )
    files = "".join(
        [
            f"\n- `{onnx_runtime.MEL_FILTERS_FILE}`: the Whisper feature extractor's mel filters" if whisper else "",
            f"\n- `{onnx_runtime.ACOUSTIC_FILE}`: the acoustic functionals (a copy of `mmemo/data/acoustic.py`)"
            if acoustic
            else "",
        ]
    )
    return f"""# mmemo emotion recognizer, ONNX export{" (int8)" if meta["int8"] else ""}

Predicts an emotion ({labels}) from a transcript, a recording, or both, with NumPy and onnxruntime: no
PyTorch, no mmemo install. Probabilities are calibrated (temperature {meta["temperature"]:.3f}).

## Install

```
pip install {install}
```

{", ".join(f"`{r}`" for r in RUNTIME_REQUIREMENTS[:4])} are always needed; `soundfile` reads audio files
and `scipy` resamples audio that is not at {meta["sampling_rate"]} Hz (each imported only when needed).{extra_install}

## Predict

```python
import sys
sys.path.insert(0, "path/to/this/folder")
from mmemo_onnx_runtime import OnnxEmotionRecognizer

rec = OnnxEmotionRecognizer("path/to/this/folder", threads=2)
p = rec.predict(text="I cannot believe you did that.", audio="clip.wav")
print(p.label, p.probabilities)   # the fused answer
print(p.per_modality)             # what the text alone and the audio alone say
rec.predict(text=["great!", ""], audio=[None, "b.flac"])  # lists: a batch, answers in input order
```

Inputs:
- `text`: a transcript (str), None, or a list of them.
- `audio`: a file path (wav, flac, ogg, mp3: anything libsndfile reads), or a NumPy array (mono, or two
  channels; float or integer PCM) with `sampling_rate=...`; any rate, resampled to {meta["sampling_rate"]} Hz.
  {long_audio}
- Give text, audio or both per item; text is cut at {meta["max_text_tokens"]} tokens.{profile_input}

`predict` returns a `Prediction` (label, probabilities, modalities, per_modality, segments; `.to_dict()` for
JSON), or a list of them.

## Files

- `text_encoder.onnx`, `audio_encoder.onnx`, `fusion.onnx`: the three graphs (opset {OPSET}; batch and time
  axes dynamic)
- `tokenizer.json`: the tokenizer (Hugging Face tokenizers format)
- `{onnx_runtime.META_FILE}`: labels, temperature, sampling rate and preprocessing settings{files}
- `mmemo_onnx_runtime.py`: the runtime (a copy of `mmemo/onnx_runtime.py`)
"""


def parity(recognizer: EmotionRecognizer, runtime: onnx_runtime.OnnxEmotionRecognizer, seed: int = 0) -> float:
    """Max |Δ probability| between PyTorch and ONNX on a mixed batch (both / text-only / audio-only, padded), and,
    for a model that standardises against speaker statistics, on the same batch with a speaker profile."""
    rng = np.random.default_rng(seed)
    rate = recognizer.config.sampling_rate
    t = np.arange(int(1.7 * rate)) / rate
    voiced = 0.3 * np.sin(2 * np.pi * 140 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.02 * rng.normal(size=t.size)
    texts = ["what a lovely surprise, thank you so much", "", "I lost everything.", "ok"]
    audios = [
        voiced[: int(1.1 * rate)].astype(np.float32),
        voiced.astype(np.float32),
        None,
        rng.normal(0, 0.1, int(0.6 * rate)).astype(np.float32),
    ]
    profiles = [None]
    if recognizer.config.acoustic_features or recognizer.model.audio_head == "pooled":
        profiles.append(recognizer.enrol_speaker(_speaker_like(rng, rate), sampling_rate=rate))
    diff = 0.0
    for profile in profiles:
        expected = recognizer.predict(text=texts, audio=audios, sampling_rate=rate, speaker_profile=profile)
        got = runtime.predict(text=texts, audio=audios, sampling_rate=rate, speaker_profile=profile)
        for e, g in zip(expected, got):
            pairs = [(e.probabilities, g.probabilities)]
            pairs += [(e.per_modality[m], g.per_modality[m]) for m in e.per_modality]
            diff = max(diff, *(abs(p[k] - q[k]) for p, q in pairs for k in p))
    return float(diff)


def _speaker_like(rng: np.random.Generator, rate: int) -> list[np.ndarray]:
    """Six varied voiced clips (harmonic tones at 110-270 Hz with vibrato, loudness changes and noise) to enrol a
    profile from: their statistics spread about as much as a real speaker's six clips do (whisper-base pooled
    states: smallest std 0.009, EmoDB speaker 03: 0.006), where the parity batch's three clips give a profile ten
    times narrower that magnifies rounding beyond any real use."""
    clips = []
    for i, f0 in enumerate((110, 150, 190, 230, 270, 130)):
        t = np.arange(int((0.8 + 0.3 * i) * rate)) / rate
        phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.1 * np.sin(2 * np.pi * (1 + i) * t))) / rate
        level = (0.1 + 0.05 * i) * (1 + np.sin(2 * np.pi * (2 + i) * t))
        wave = level * sum(np.sin(k * phase) / k for k in range(1, 6)) + rng.normal(0, 0.01 * (1 + i), t.size)
        clips.append(wave.astype(np.float32))
    return clips


def _export_graphs(recognizer: EmotionRecognizer, out_dir: Path) -> None:
    model = recognizer.model.eval()
    rate = recognizer.config.sampling_rate
    # Padded examples (two lengths per batch) so the traced graphs keep their masking paths.
    noise = np.random.default_rng(0).normal(0, 0.1, rate).astype(np.float32)
    batch = recognizer.collator(
        [
            {"id": "a", "label": -100, "text": "an example sentence that is longer", "audio": noise},
            {"id": "b", "label": -100, "text": "short", "audio": noise[: rate // 2]},
        ]
    )
    text, audio = batch["text"], batch["audio"]
    audio_names = [model.audio_encoder.input_name, "attention_mask"]
    length_axis = {"input_values": 1, "input_features": 2}[audio_names[0]]
    audio_axes = {audio_names[0]: {0: "batch", length_axis: "length"}, "attention_mask": {0: "batch", 1: "length"}}
    if model.audio_head == "pooled":  # one row with a speaker's statistics, one without (NaN: the training ones)
        reference = torch.stack([model.pooled_mean, model.pooled_std])  # (2, layers, D_audio)
        audio["pooled_reference"] = torch.stack([reference, torch.full_like(reference, float("nan"))])
        audio_names.append("pooled_reference")
    if model.acoustic_proj is not None:
        audio["reference"][0] = torch.stack([model.acoustic_mean, model.acoustic_std])
        audio_names += ["functionals", "reference"]
    audio_axes |= {name: {0: "batch"} for name in audio_names[2:]}
    audio_inputs = tuple(audio[name] for name in audio_names)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python bools; the graphs are checked by `parity`
        text_states = _TextGraph(model)(text["input_ids"], text["attention_mask"])
        audio_states, audio_mask = _AudioGraph(model, audio_names)(*audio_inputs)
        _export(
            _TextGraph(model),
            (text["input_ids"], text["attention_mask"]),
            out_dir / "text_encoder.onnx",
            ["input_ids", "attention_mask"],
            ["text_states"],
            {
                "input_ids": {0: "batch", 1: "tokens"},
                "attention_mask": {0: "batch", 1: "tokens"},
                "text_states": {0: "batch", 1: "tokens"},
            },
        )
        _export(
            _AudioGraph(model, audio_names),
            audio_inputs,
            out_dir / "audio_encoder.onnx",
            audio_names,
            ["audio_states", "audio_mask"],
            {**audio_axes, "audio_states": {0: "batch", 1: "frames"}, "audio_mask": {0: "batch", 1: "frames"}},
        )
        present = torch.tensor([True, False])  # one sample without text keeps the placeholder path in the graph
        _export(
            _FusionGraph(model),
            (text_states, text["attention_mask"].bool(), audio_states, audio_mask, present, torch.tensor([True, True])),
            out_dir / "fusion.onnx",
            ["text_states", "text_mask", "audio_states", "audio_mask", "text_present", "audio_present"],
            ["logits"],
            {
                "text_states": {0: "batch", 1: "tokens"},
                "text_mask": {0: "batch", 1: "tokens"},
                "audio_states": {0: "batch", 1: "frames"},
                "audio_mask": {0: "batch", 1: "frames"},
                "text_present": {0: "batch"},
                "audio_present": {0: "batch"},
                "logits": {0: "batch"},
            },
        )


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], axes: dict) -> None:
    module.eval()  # a fresh wrapper is in training mode, and export would put the wrapped model in it too
    torch.onnx.export(
        module,
        args,
        str(path),
        input_names=inputs,
        output_names=outputs,
        dynamic_axes=axes,
        opset_version=OPSET,
        dynamo=False,
    )


def _quantize_graphs(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.WARNING)  # onnxruntime logs a pre-processing hint on the root logger for every graph
    try:
        for graph in onnx_runtime.GRAPHS:
            quantize_dynamic(
                src / f"{graph}.onnx",
                dst / f"{graph}.onnx",
                op_types_to_quantize=["MatMul"],
                weight_type=QuantType.QInt8,
                per_channel=True,
            )
    finally:
        logging.disable(logging.NOTSET)
