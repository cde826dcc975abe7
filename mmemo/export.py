"""ONNX export: three graphs (text encoder, audio encoder, fusion head) plus what the runtime needs.

    OUT_DIR/
      text_encoder.onnx     input_ids, attention_mask (B, T_text)       → text_states (B, T_text, D)
      audio_encoder.onnx    input_values, attention_mask (B, S)         → audio_states (B, T_audio, D), audio_mask
      fusion.onnx           both streams + masks, text_present / audio_present (B,) → logits (B, C)
      tokenizer.json        the tokenizer (tokenizers library format)
      mmemo_onnx.json       labels, temperature, sampling rate, feature-extractor settings, padding id
      mmemo_onnx_runtime.py a copy of mmemo/onnx_runtime.py: predicts with NumPy + onnxruntime, no torch
      README.md             how to load and predict with the runtime, its inputs, what to install

Batch and time axes are dynamic. A modality that no sample has is fed to the fusion graph as one zero
position with `present` false, which the model turns into its learned placeholder, exactly as `fuse(None)`.
With `int8`, the MatMuls of every graph are quantized dynamically by onnxruntime (weights int8; quantizing
the convolutions too was slower on CPU).
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

from mmemo.encoders import is_whisper
from mmemo.errors import MmemoError
from mmemo.inference import EmotionRecognizer

try:
    import onnx  # noqa: F401  (torch.onnx.export writes through it)

    from mmemo import onnx_runtime
except ImportError as e:
    raise MmemoError(f"ONNX export needs the export extra: pip install 'mmemo[export]' ({e})") from None

OPSET = 17
# what `mmemo_onnx_runtime.py` imports: the first three always, soundfile for files, scipy for resampling
RUNTIME_REQUIREMENTS = ("onnxruntime", "numpy", "tokenizers", "soundfile", "scipy")
FP32_TOLERANCE = 1e-3  # max |Δ probability| between PyTorch and the fp32 export


class _TextGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        states, _ = self.model.text_encoder(input_ids, attention_mask)  # (B, T_text, D_text)
        return self.model.text_proj(states)  # (B, T_text, D)


class _AudioGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_values, attention_mask):
        return self.model.encode_audio({"input_values": input_values, "attention_mask": attention_mask})


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


def unsupported_for_onnx(config, audio_config: dict | None = None) -> str:
    """What in a model config the torch-free runtime cannot run ("" when it can run all of it).

    `audio_config` is the audio tower's full Hugging Face config (a loaded model's); it names the tower's type
    also for a checkpoint given by hub id or folder.

    The runtime reimplements the wav2vec2 waveform preprocessing in NumPy; a log-mel (Whisper) tower would need
    Whisper's STFT front end there, and acoustic statistics the functionals' pitch tracker.
    """
    parts = []
    if is_whisper(audio_config or config.audio_config):
        parts.append("a Whisper (log-mel) audio tower")
    if getattr(config, "acoustic_features", False):
        parts.append("the acoustic-statistics token (model.acoustic_features)")
    return " or ".join(parts)


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
            (a slow tokenizer), or the fp32 export differs from PyTorch by more than FP32_TOLERANCE.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise MmemoError(f"export folder {out_dir} already exists; pass --overwrite or choose another folder")
    recognizer = EmotionRecognizer.from_pretrained(model_dir)
    unsupported = unsupported_for_onnx(recognizer.config, recognizer.model.audio_encoder.hf_config.to_dict())
    if unsupported:
        raise MmemoError(
            f"{model_dir}: ONNX export does not support {unsupported} yet; serve this model with "
            "the PyTorch API (`mmemo predict`, `EmotionRecognizer`, int8 via --int8)"
        )
    if not (Path(model_dir) / "tokenizer.json").is_file():
        raise MmemoError(f"{model_dir} has no tokenizer.json (a slow tokenizer); the ONNX runtime needs a fast one")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        graph_dir = Path(tmp) if int8 else out_dir
        _export_graphs(recognizer, graph_dir)
        if int8:
            _quantize_graphs(graph_dir, out_dir)
    shutil.copy(Path(model_dir) / "tokenizer.json", out_dir / "tokenizer.json")
    shutil.copy(onnx_runtime.__file__, out_dir / "mmemo_onnx_runtime.py")
    fe = recognizer.feature_extractor
    meta = {
        "format": onnx_runtime.EXPORT_FORMAT,
        "labels": recognizer.labels,
        "temperature": recognizer.temperature,
        "sampling_rate": recognizer.config.sampling_rate,
        "max_text_tokens": recognizer.config.max_text_tokens,
        "pad_token_id": recognizer.tokenizer.pad_token_id,
        "fusion_dim": recognizer.config.fusion_dim,
        "int8": int8,
        "feature_extractor": {
            "do_normalize": bool(getattr(fe, "do_normalize", True)),
            "padding_value": float(getattr(fe, "padding_value", 0.0)),
        },
    }
    (out_dir / onnx_runtime.META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
    (out_dir / "README.md").write_text(export_readme(meta), encoding="utf-8")
    diff = parity(recognizer, onnx_runtime.OnnxEmotionRecognizer(out_dir))
    if not int8 and diff > FP32_TOLERANCE:
        raise MmemoError(
            f"the ONNX export in {out_dir} differs from PyTorch by {diff:.2e} in probability "
            f"(tolerance {FP32_TOLERANCE}); please report this with your model config"
        )
    return {"out_dir": out_dir, "int8": int8, "max_abs_diff": diff}


def export_readme(meta: dict) -> str:
    """README.md of an export folder: what it holds, how to predict with the torch-free runtime, what to install."""
    labels = ", ".join(f"`{label}`" for label in meta["labels"])
    return f"""# mmemo emotion recognizer, ONNX export{" (int8)" if meta["int8"] else ""}

Predicts an emotion ({labels}) from a transcript, a recording, or both, with NumPy and onnxruntime: no
PyTorch, no mmemo install. Probabilities are calibrated (temperature {meta["temperature"]:.3f}).

## Install

```
pip install {" ".join(RUNTIME_REQUIREMENTS)}
```

{", ".join(f"`{r}`" for r in RUNTIME_REQUIREMENTS[:3])} are always needed; `soundfile` reads audio files
and `scipy` resamples audio that is not at {meta["sampling_rate"]} Hz (each imported only when needed).

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
  Long recordings are classified whole (the PyTorch `EmotionRecognizer` splits them into speech segments).
- Give text, audio or both per item; text is cut at {meta["max_text_tokens"]} tokens.

`predict` returns a `Prediction` (label, probabilities, modalities, per_modality, segments; `.to_dict()` for
JSON), or a list of them.

## Files

- `text_encoder.onnx`, `audio_encoder.onnx`, `fusion.onnx`: the three graphs (opset {OPSET}; batch and time
  axes dynamic)
- `tokenizer.json`: the tokenizer (Hugging Face tokenizers format)
- `{onnx_runtime.META_FILE}`: labels, temperature, sampling rate and preprocessing settings
- `mmemo_onnx_runtime.py`: the runtime (a copy of `mmemo/onnx_runtime.py`)
"""


def parity(recognizer: EmotionRecognizer, runtime: onnx_runtime.OnnxEmotionRecognizer, seed: int = 0) -> float:
    """Max |Δ probability| between PyTorch and ONNX on a mixed batch (both / text-only / audio-only, padded)."""
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
    expected = recognizer.predict(text=texts, audio=audios, sampling_rate=rate)
    got = runtime.predict(text=texts, audio=audios, sampling_rate=rate)
    diff = 0.0
    for e, g in zip(expected, got):
        pairs = [(e.probabilities, g.probabilities)]
        pairs += [(e.per_modality[m], g.per_modality[m]) for m in e.per_modality]
        diff = max(diff, *(abs(p[k] - q[k]) for p, q in pairs for k in p))
    return float(diff)


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
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python bools; the graphs are checked by `parity`
        text_states = _TextGraph(model)(text["input_ids"], text["attention_mask"])
        audio_states, audio_mask = _AudioGraph(model)(audio["input_values"], audio["attention_mask"])
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
            _AudioGraph(model),
            (audio["input_values"], audio["attention_mask"]),
            out_dir / "audio_encoder.onnx",
            ["input_values", "attention_mask"],
            ["audio_states", "audio_mask"],
            {
                "input_values": {0: "batch", 1: "samples"},
                "attention_mask": {0: "batch", 1: "samples"},
                "audio_states": {0: "batch", 1: "frames"},
                "audio_mask": {0: "batch", 1: "frames"},
            },
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
            )
    finally:
        logging.disable(logging.NOTSET)
