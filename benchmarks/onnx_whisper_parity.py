"""Parity of `mmemo export` (ONNX fp32 and int8, the torch-free runtime) with PyTorch for a Whisper-tower model,
on real EmoDB clips.

    python benchmarks/onnx_whisper_parity.py MODEL_DIR [EMODB_ROOT] [--every 5] [--threads 2]
                                             [--json docs/pretrained/onnx_whisper_parity.json]

MODEL_DIR is a trained model folder (the pooled whisper-base recipe, `configs/whisper_base.yaml`); it is exported
to a temporary folder, fp32 and int8, exactly as `mmemo export` does (which runs its own, synthetic, parity check).
The clips are every K-th EmoDB clip in name order with their importer transcripts (`--every 5`: 107 clips, every
speaker, sentence and emotion), up to the recognizer's 8 s window: PyTorch splits longer audio into speech segments
while the runtime classifies it whole, so those are not a parity question and are left out (and counted).

Measured, as max |Δ probability| over every label of the fused and the per-modality (text alone, audio alone)
probabilities:
- ONNX fp32 against PyTorch fp32, both in length-sorted batches of 16 ("batched") and one clip at a time ("alone");
- each runtime's batched result against its own alone one (does a clip's answer depend on its batch?);
- the same with a speaker profile (one speaker enrolled from six of their clips, their clips predicted with it);
- ONNX int8 and PyTorch int8 (`from_pretrained(int8=True)`) against PyTorch fp32: max and mean |Δ probability| and
  how often the top label agrees;
- the runtime's NumPy log-mel against transformers' `WhisperFeatureExtractor` (what the collator calls) per clip.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from emodb_args import DEFAULT_ROOT, REPO

from mmemo.data.audio import load_audio
from mmemo.data.corpora import prepare
from mmemo.export import FP32_TOLERANCE, export_onnx
from mmemo.inference import EmotionRecognizer
from mmemo.io import write_json
from mmemo.onnx_runtime import OnnxEmotionRecognizer, whisper_log_mel
from mmemo.segmentation import WINDOW_SECONDS

RATE = 16000
PROFILE_CLIPS = 6


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", help="a trained model folder with a Whisper audio tower")
    parser.add_argument("root", nargs="?", default=str(DEFAULT_ROOT), help="the EmoDB release folder (holds wav/)")
    parser.add_argument("--every", type=int, default=5, help="every K-th clip in name order (default 5; 1 = all)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch and onnxruntime (default 2)")
    parser.add_argument("--json", default=str(REPO / "docs" / "pretrained" / "onnx_whisper_parity.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = sorted(prepare("emodb", args.root), key=lambda row: row["id"])[:: args.every]
    waves = [load_audio(row["audio"], RATE) for row in rows]
    kept = [i for i, w in enumerate(waves) if len(w) <= WINDOW_SECONDS * RATE]
    longer = len(rows) - len(kept)
    rows, waves = [rows[i] for i in kept], [waves[i] for i in kept]
    texts = [row["text"] for row in rows]
    rec = EmotionRecognizer.from_pretrained(args.model_dir)
    results = {
        "model": str(args.model_dir),
        "audio_encoder": rec.config.audio_encoder,
        "audio_head": rec.config.audio_head,
        "clips": len(rows),
        "left_out_longer_than_window": longer,
        "seconds": [round(min(map(len, waves)) / RATE, 2), round(max(map(len, waves)) / RATE, 2)],
        "threads": args.threads,
        "fp32_bound": FP32_TOLERANCE,
    }
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(args.model_dir, Path(tmp) / "fp32")
        int8 = export_onnx(args.model_dir, Path(tmp) / "int8", int8=True)
        results["export_check"] = {"fp32": fp32["max_abs_diff"], "int8": int8["max_abs_diff"]}
        onnx = OnnxEmotionRecognizer(fp32["out_dir"], threads=args.threads)
        onnx_int8 = OnnxEmotionRecognizer(int8["out_dir"], threads=args.threads)
        print(f"{len(rows)} clips; predicting (PyTorch and ONNX, batched and alone)", file=sys.stderr)
        torch_batched = rec.predict(text=texts, audio=waves, sampling_rate=RATE)
        torch_alone = [rec.predict(text=t, audio=w, sampling_rate=RATE) for t, w in zip(texts, waves)]
        onnx_batched = onnx.predict(text=texts, audio=waves, sampling_rate=RATE)
        onnx_alone = [onnx.predict(text=t, audio=w, sampling_rate=RATE) for t, w in zip(texts, waves)]
        results["fp32"] = {
            "batched": max_diff(torch_batched, onnx_batched),
            "alone": max_diff(torch_alone, onnx_alone),
            "onnx_batched_vs_alone": max_diff(onnx_batched, onnx_alone),
            "pytorch_batched_vs_alone": max_diff(torch_batched, torch_alone),
            "labels_agree": agreement(torch_batched, onnx_batched),
        }
        results["speaker_profile"] = profile_parity(rec, onnx, rows, waves, texts)
        print("int8", file=sys.stderr)
        quantized = EmotionRecognizer.from_pretrained(args.model_dir, int8=True)
        results["int8"] = {
            "onnx_int8": {
                **int8_diff(torch_batched, onnx_int8.predict(text=texts, audio=waves, sampling_rate=RATE)),
                "size_mb": folder_mb(int8["out_dir"]),
            },
            "pytorch_int8": int8_diff(torch_batched, quantized.predict(text=texts, audio=waves, sampling_rate=RATE)),
            "onnx_fp32_size_mb": folder_mb(fp32["out_dir"]),
        }
        filters = np.load(Path(fp32["out_dir"]) / "mel_filters.npy")
    fe = rec.feature_extractor
    results["log_mel_max_abs_diff"] = max(
        float(
            np.abs(whisper_log_mel(w, filters) - fe(w, sampling_rate=RATE, padding="longest").input_features[0]).max()
        )
        for w in waves
    )
    results["machine"] = "2 CPU cores shared with other jobs"
    print(format_table(results))
    write_json(args.json, results)
    print(f"wrote {args.json}", file=sys.stderr)
    return results


def profile_parity(rec, onnx, rows: list[dict], waves: list[np.ndarray], texts: list[str]) -> dict:
    """One speaker enrolled (PyTorch, as `mmemo enrol` does) from their first clips, their clips predicted with it."""
    speaker = rows[0]["speaker"]
    mine = [i for i, row in enumerate(rows) if row["speaker"] == speaker]
    profile = rec.enrol_speaker([waves[i] for i in mine[:PROFILE_CLIPS]], sampling_rate=RATE)
    audio, text = [waves[i] for i in mine], [texts[i] for i in mine]
    expected = rec.predict(text=text, audio=audio, sampling_rate=RATE, speaker_profile=profile)
    got = onnx.predict(text=text, audio=audio, sampling_rate=RATE, speaker_profile=profile)
    plain = rec.predict(text=text, audio=audio, sampling_rate=RATE)
    return {
        "speaker": speaker,
        "clips": len(mine),
        "batched": max_diff(expected, got),
        "profile_changes_probabilities_by": max_diff(plain, expected),
    }


def max_diff(expected, got) -> float:
    """Max |Δ probability| over fused and per-modality probabilities of two lists of predictions."""
    diff = 0.0
    for e, g in zip(expected, got):
        pairs = [(e.probabilities, g.probabilities)] + [(e.per_modality[m], g.per_modality[m]) for m in e.per_modality]
        diff = max(diff, *(abs(p[k] - q[k]) for p, q in pairs for k in p))
    return float(diff)


def int8_diff(expected, got) -> dict:
    diffs = [abs(e.probabilities[k] - g.probabilities[k]) for e, g in zip(expected, got) for k in e.probabilities]
    audio = [(e.per_modality["audio"], g.per_modality["audio"]) for e, g in zip(expected, got)]
    return {
        "max_abs_diff": max_diff(expected, got),
        "mean_abs_diff_fused": float(np.mean(diffs)),
        "mean_abs_diff_audio": float(np.mean([abs(p[k] - q[k]) for p, q in audio for k in p])),
        "labels_agree": agreement(expected, got),
        "audio_labels_agree": float(np.mean([max(p, key=p.get) == max(q, key=q.get) for p, q in audio])),
    }


def agreement(expected, got) -> float:
    return float(np.mean([e.label == g.label for e, g in zip(expected, got)]))


def folder_mb(folder) -> float:
    return round(sum(f.stat().st_size for f in Path(folder).glob("*.onnx")) / 1e6, 1)


def format_table(r: dict) -> str:
    fp32, profile, int8 = r["fp32"], r["speaker_profile"], r["int8"]
    lines = [
        f"ONNX parity, {r['model']} ({r['audio_head']} head over {r['audio_encoder']}): {r['clips']} EmoDB clips "
        f"of {r['seconds'][0]}-{r['seconds'][1]} s with transcripts, max |Δ probability| (fused and per modality)",
        "",
        "| comparison | max abs diff | top labels agree |",
        "|---|---:|---:|",
        f"| ONNX fp32 vs PyTorch, batches of 16 | {fp32['batched']:.1e} | {fp32['labels_agree']:.3f} |",
        f"| ONNX fp32 vs PyTorch, one clip at a time | {fp32['alone']:.1e} | |",
        f"| ONNX fp32 batched vs alone | {fp32['onnx_batched_vs_alone']:.1e} | |",
        f"| PyTorch batched vs alone | {fp32['pytorch_batched_vs_alone']:.1e} | |",
        f"| ONNX fp32 vs PyTorch, speaker profile ({profile['clips']} clips of speaker {profile['speaker']}) "
        f"| {profile['batched']:.1e} | |",
        f"| (what the profile changes, PyTorch) | {profile['profile_changes_probabilities_by']:.2f} | |",
        f"| ONNX int8 vs PyTorch fp32 | {int8['onnx_int8']['max_abs_diff']:.3f} (mean fused "
        f"{int8['onnx_int8']['mean_abs_diff_fused']:.4f}) | {int8['onnx_int8']['labels_agree']:.3f} |",
        f"| PyTorch int8 vs PyTorch fp32 | {int8['pytorch_int8']['max_abs_diff']:.3f} (mean fused "
        f"{int8['pytorch_int8']['mean_abs_diff_fused']:.4f}) | {int8['pytorch_int8']['labels_agree']:.3f} |",
        "",
        f"log-mel (runtime NumPy vs transformers): max abs diff {r['log_mel_max_abs_diff']:.1e}; "
        f"ONNX size fp32 {int8['onnx_fp32_size_mb']} MB, int8 {int8['onnx_int8']['size_mb']} MB",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
