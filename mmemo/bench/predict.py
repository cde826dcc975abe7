"""`mmemo bench predict`: CPU latency of one model as PyTorch fp32 and int8 and as ONNX fp32 and int8,
beside plain Hugging Face pipelines of the same encoder sizes (text pipeline + audio pipeline).

Without `--model`, the model has random weights at the chosen size ("base": BERT-base 12×768 text tower and
wav2vec2-base 12×768 audio tower, built from configs, nothing downloaded) and a WordPiece tokenizer trained on
generated sentences; weights do not change the speed. With `--model`, any trained folder (a Whisper tower with the
pooled head, say). Five workloads: a 5 s clip with a 20-word transcript (p50/p95 over `repeats` calls), a 3 s clip
with it, the 3 s clip alone (audio preprocessing + audio tower + head: the encoder's cost per clip), the transcript
alone, and one batch of 32 5 s clip+transcript pairs.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mmemo.bench.sizes import PREDICT
from mmemo.config import ModelConfig

VARIANTS = ("fp32", "int8", "onnx", "onnx_int8", "baseline")
CLIP_SECONDS = 5.0
SHORT_CLIP_SECONDS = 3.0
TRANSCRIPT_WORDS = 20
BATCH = 32
LABELS = ["angry", "happy", "neutral", "sad"]
SIZES = PREDICT


def bench_predict(
    size: str = "base",
    model_dir: str | os.PathLike | None = None,
    threads: int = 2,
    repeats: int = 20,
    log=print,
    variants: tuple[str, ...] = VARIANTS,
) -> dict:
    """Time every variant; returns {variant: {"clip_text_p50_ms", "clip_text_p95_ms", "clip3_text_p50_ms",
    "audio3_p50_ms", "text_p50_ms", "batch32_ms"}} (clip_text: the 5 s clip, clip3 and audio3: the 3 s one).

    Args:
        size: "tiny" or "base" (random weights); ignored when `model_dir` is given.
        model_dir: a trained model folder to time instead.
        threads: CPU threads for torch and onnxruntime.
        repeats: timed calls per single-input workload (after two warm-up calls); the batch runs
            max(1, repeats // 10) times and its median is reported. Variants take turns call by call.
        log: where progress lines go.
        variants: the variants to time, from `VARIANTS`; fp32 always (the speed-ups are over it). Leaving out
            "baseline" saves most of the time for a Whisper tower, whose plain pipeline encodes 30 s windows.

    Raises:
        ValueError: an unknown size or variant.
    """
    from mmemo.export import export_onnx
    from mmemo.inference import EmotionRecognizer
    from mmemo.onnx_runtime import OnnxEmotionRecognizer

    if size not in SIZES and model_dir is None:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"variants must be among {', '.join(VARIANTS)}, got {', '.join(sorted(unknown))}")
    variants = ("fp32", *(v for v in VARIANTS[1:] if v in variants))
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="mmemo-bench-") as tmp:
        tmp = Path(tmp)
        if model_dir is None:
            log(f"building a random {size} model")
            model_dir = _random_model(size, rng).save_pretrained(tmp / "model")
        for name, int8 in (("onnx", False), ("onnx_int8", True)):
            if name in variants:
                parity = export_onnx(model_dir, tmp / name, int8=int8)["max_abs_diff"]
                log(f"exported {name}: max |Δ probability| against PyTorch fp32 {parity:.2e}")
        # All variants stay loaded so that every timed round calls each of them once: a machine that speeds up
        # or slows down during the run moves every variant alike.
        build = {
            "fp32": lambda: EmotionRecognizer.from_pretrained(model_dir).predict,
            "int8": lambda: EmotionRecognizer.from_pretrained(model_dir, int8=True).predict,
            "onnx": lambda: OnnxEmotionRecognizer(tmp / "onnx", threads=threads).predict,
            "onnx_int8": lambda: OnnxEmotionRecognizer(tmp / "onnx_int8", threads=threads).predict,
            "baseline": lambda: _baseline(EmotionRecognizer.from_pretrained(model_dir)),
        }
        predictors = {name: build[name]() for name in variants}
        rate = json.loads((Path(model_dir) / "config.json").read_text())["model"]["sampling_rate"]
        transcripts = random_sentences(rng, BATCH, words=TRANSCRIPT_WORDS)
        clips = [rng.normal(0, 0.1, int(CLIP_SECONDS * rate)).astype(np.float32) for _ in range(BATCH)]
        short = clips[1][: int(SHORT_CLIP_SECONDS * rate)]
        log(f"timing {', '.join(predictors)} in turn")
        workloads = {
            "clip_text": lambda p: p(text=transcripts[0], audio=clips[0], sampling_rate=rate),
            "clip3_text": lambda p: p(text=transcripts[0], audio=short, sampling_rate=rate),
            "audio3": lambda p: p(audio=short, sampling_rate=rate),
            "text": lambda p: p(text=transcripts[0]),
        }
        # Every round calls every (variant, workload) pair once: a change in the machine's load between workloads
        # would otherwise show up as a difference between them.
        calls = {(n, w): functools.partial(work, p) for n, p in predictors.items() for w, work in workloads.items()}
        single = _interleaved(calls, lambda call: call(), repeats)
        batch = _interleaved(
            predictors,
            lambda p: p(text=transcripts, audio=clips, sampling_rate=rate, batch_size=BATCH),
            max(1, repeats // 10),
            warmup=0,
        )
        results = {
            name: {
                "clip_text_p50_ms": _ms(single[name, "clip_text"], 50),
                "clip_text_p95_ms": _ms(single[name, "clip_text"], 95),
                "clip3_text_p50_ms": _ms(single[name, "clip3_text"], 50),
                "audio3_p50_ms": _ms(single[name, "audio3"], 50),
                "text_p50_ms": _ms(single[name, "text"], 50),
                "batch32_ms": _ms(batch[name], 50),
            }
            for name in predictors
        }
        for name, r in results.items():
            log(f"{name}: {r}")
    return results


def format_results(results: dict, title: str) -> str:
    """A Markdown table of `bench_predict` results with speed-ups over fp32."""
    lines = [
        title,
        "",
        "| variant | 5 s clip + text p50 (ms) | p95 (ms) | 3 s clip + text p50 (ms) | 3 s clip alone p50 (ms) "
        "| text p50 (ms) | batch of 32 (ms) | speed-up vs fp32 (5 s clip+text) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = results["fp32"]["clip_text_p50_ms"]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['clip_text_p50_ms']:.1f} | {r['clip_text_p95_ms']:.1f} | {r['clip3_text_p50_ms']:.1f} "
            f"| {r['audio3_p50_ms']:.1f} | {r['text_p50_ms']:.1f} | {r['batch32_ms']:.0f} "
            f"| {base / r['clip_text_p50_ms']:.2f}× |"
        )
    return "\n".join(lines)


def _random_model(size: str, rng: np.random.Generator):
    from mmemo.builders import load_feature_extractor
    from mmemo.data.text import train_wordpiece
    from mmemo.encoders import build_encoders
    from mmemo.inference import EmotionRecognizer
    from mmemo.model import EmotionModel

    cfg = ModelConfig(**copy.deepcopy(SIZES[size]), labels=list(LABELS))
    tokenizer = train_wordpiece(random_sentences(rng), vocab_size=30522)
    text_model, audio_model = build_encoders(cfg, vocab_size=len(tokenizer))
    model = EmotionModel(cfg, len(LABELS), text_model, audio_model)
    return EmotionRecognizer(model, tokenizer, load_feature_extractor(cfg), cfg)


def random_sentences(rng: np.random.Generator, n: int = 2000, words: int | None = None) -> list[str]:
    """Random sentences (of `words` words, else 5-30) over the synthetic corpus's cue words and made-up words: the
    benchmarks' transcripts and tokenizer corpus."""
    from mmemo.data.synthetic import PLEASANT_CUES, UNPLEASANT_CUES

    vocabulary = sorted({w.strip(".?,").lower() for s in PLEASANT_CUES + UNPLEASANT_CUES for w in s.split()})
    syllables = ["ka", "lo", "mi", "tre", "sun", "bar", "el", "on", "dis", "ter", "ra", "po", "ing", "ment"]
    vocabulary += ["".join(np.random.default_rng(i).choice(syllables, 1 + i % 3)) for i in range(500)]
    return [" ".join(rng.choice(vocabulary, words or rng.integers(5, 30))) + "." for _ in range(n)]


def _baseline(recognizer):
    """Plain transformers: a text-classification pipeline, then an audio-classification one, same encoder sizes."""
    from transformers import AutoModelForAudioClassification, AutoModelForSequenceClassification, pipeline

    def build(auto, config):
        config = copy.deepcopy(config)
        config.num_labels = len(LABELS)
        return auto.from_config(config).eval()

    text_pipe = pipeline(
        "text-classification",
        device="cpu",
        tokenizer=recognizer.tokenizer,
        model=build(AutoModelForSequenceClassification, recognizer.model.text_encoder.hf_config),
    )
    audio_pipe = pipeline(
        "audio-classification",
        device="cpu",
        feature_extractor=recognizer.feature_extractor,
        model=build(AutoModelForAudioClassification, recognizer.model.audio_encoder.hf_config),
    )

    def predict(text=None, audio=None, sampling_rate=None, batch_size=1):
        out = text_pipe(text, batch_size=batch_size) if text is not None else None
        if audio is not None:
            audio = (
                [{"raw": a, "sampling_rate": sampling_rate} for a in audio]
                if isinstance(audio, list)
                else {"raw": audio, "sampling_rate": sampling_rate}
            )
            out = (out, audio_pipe(audio, batch_size=batch_size))
        return out

    return predict


def _interleaved(predictors: dict, call, repeats: int, warmup: int = 2) -> dict:
    """Seconds per `call(predictor)` for each predictor, taken in rounds that call every predictor once.

    Each round starts one predictor later than the one before, so none always runs right after the same other.
    """
    for predict in predictors.values():
        for _ in range(warmup):
            call(predict)
    names = list(predictors)
    times = {name: [] for name in names}
    for round_ in range(repeats):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            start = time.perf_counter()
            call(predictors[name])
            times[name].append(time.perf_counter() - start)
    return times


def _ms(times: list[float], percentile: float) -> float:
    return round(float(np.percentile(times, percentile)) * 1000, 2)
