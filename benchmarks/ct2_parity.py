"""Parity of `mmemo convert ct2-whisper` with CTranslate2's own runtime, on the real Whisper weights from pip.

    python benchmarks/ct2_parity.py [EMODB_ROOT] [--clips 5] [--repeats 3] [--work DIR]
                                    [--json docs/pretrained/ct2_parity.json]

For whisper tiny.en and base (the packages in whisper_packages.py; base is read from its two parts), on a few
real EmoDB clips (German; default ../shared/data/emodb):
- the converted transformers encoder's last hidden state against `ctranslate2.models.Whisper.encode()` on the
  same log-mel features (max and mean |diff|; the bound is 1e-3: the packages store float16, both run float32),
  with transformers' default SDPA attention (what mmemo runs) and with eager attention; and, to show how much of
  the difference is float32 rounding, each runtime against the same weights computed in float64;
- greedy decoding: the token ids transformers' `generate` and CTranslate2's `generate` give, with the same prompt
  (base: German, transcribe; tiny.en: English) and the same suppressed tokens;
- base's detected language on each clip, both ways;
- milliseconds per 30 s encoder window on one thread, both runtimes (median of --repeats);
- dequantisation on real weights: tiny.en requantised to int8 and int16 by CTranslate2's converter, read back:
  its encoder against the float one (what quantising cost) and against CTranslate2 running the quantised model
  in float32 (which dequantises the same way: this is the parity).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from emodb_args import DEFAULT_ROOT, REPO
from whisper_packages import LANGUAGE, converted, joined_model

from mmemo.convert import convert_ct2_whisper
from mmemo.data.audio import load_audio
from mmemo.io import write_json

BOUND = 1e-3
# per model, the largest over the clips: SDPA (the default) vs eager attention against CTranslate2, and each
# runtime's float32 result against the same weights computed in float64
FLOAT32_KEYS = ("max_abs_diff_eager", "float64_vs_transformers", "float64_vs_ctranslate2", "max_abs_state")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", default=str(DEFAULT_ROOT), help="the EmoDB release folder (holds wav/)")
    parser.add_argument("--clips", type=int, default=5, help="clips, spread over the corpus (default 5)")
    parser.add_argument("--repeats", type=int, default=3, help="timed encoder calls per runtime (default 3)")
    parser.add_argument("--work", default=None, help="where converted models go (default: a temporary folder)")
    parser.add_argument("--json", default=str(REPO / "docs" / "pretrained" / "ct2_parity.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    wavs = sorted((Path(args.root) / "wav").glob("*.wav"))
    if not wavs:
        raise SystemExit(f"{args.root}/wav holds no .wav files; give the EmoDB release folder")
    clips = wavs[:: max(1, len(wavs) // args.clips)][: args.clips]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        rows = [parity(name, clips, work, args.repeats) for name in ("tiny.en", "base")]
        quantised = dequantisation("tiny.en", clips[0], work)
    results = {
        "clips": [c.name for c in clips],
        "threads": 1,
        "bound": BOUND,
        "models": rows,
        "dequantised": quantised,
        "machine": "2 CPU cores shared with other jobs; times are indicative",
    }
    print(format_table(results))
    write_json(args.json, results)
    print(f"wrote {args.json}", file=sys.stderr)
    return results


def parity(name: str, clips: list[Path], work: Path, repeats: int) -> dict:
    """Encoder and greedy-decoding parity of one converted model with CTranslate2's runtime, and both speeds."""
    import ctranslate2
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizerFast

    start = time.perf_counter()
    result = converted(name, work)
    convert_seconds = time.perf_counter() - start
    print(f"{name}: {result.summary()} in {convert_seconds:.1f} s", file=sys.stderr)
    model = WhisperForConditionalGeneration.from_pretrained(result.out).eval()  # SDPA attention: what mmemo runs
    eager = WhisperForConditionalGeneration.from_pretrained(result.out, attn_implementation="eager").eval()
    exact = copy.deepcopy(eager).double()  # the same weights in float64: where float32 rounding is measured from
    features_of = WhisperFeatureExtractor.from_pretrained(result.out)
    tokenizer = WhisperTokenizerFast.from_pretrained(result.out)
    runtime = ctranslate2.models.Whisper(str(joined_model(name, work)), device="cpu", intra_threads=1)
    language = LANGUAGE[name]
    prompt = ["<|startoftranscript|>", *([f"<|{language}|>", "<|transcribe|>"] if language else []), "<|notimestamps|>"]
    prompt_ids = tokenizer.convert_tokens_to_ids(prompt)
    diffs, per_clip = [], []
    for clip in clips:
        features = features_of(load_audio(clip, 16000), sampling_rate=16000, return_tensors="np").input_features
        storage = ctranslate2.StorageView.from_array(features)
        theirs = np.array(runtime.encode(storage))
        with torch.inference_mode():
            ours = model.model.encoder(torch.from_numpy(features)).last_hidden_state.numpy()
            ours_eager = eager.model.encoder(torch.from_numpy(features)).last_hidden_state.numpy()
            reference = exact.model.encoder(torch.from_numpy(features).double()).last_hidden_state.numpy()
            generated = model.generate(torch.from_numpy(features), **({"language": language} if language else {}))
            detected = model.detect_language(torch.from_numpy(features)).tolist() if runtime.is_multilingual else []
        diff = np.abs(ours - theirs)
        diffs.append(diff)
        ours_ids = [t for t in generated[0].tolist() if t not in (*prompt_ids, tokenizer.eos_token_id)]
        theirs_ids = runtime.generate(storage, [prompt_ids], beam_size=1)[0].sequences_ids[0]
        entry = {
            "clip": clip.name,
            "max_abs_diff": float(diff.max()),
            "mean_abs_diff": float(diff.mean()),
            "max_abs_diff_eager": float(np.abs(ours_eager - theirs).max()),
            "float64_vs_transformers": float(np.abs(ours - reference).max()),
            "float64_vs_ctranslate2": float(np.abs(theirs - reference).max()),
            "max_abs_state": float(np.abs(reference).max()),
            "tokens_equal": ours_ids == theirs_ids,
            "transcript": tokenizer.decode(ours_ids).strip(),
            "ct2_transcript": tokenizer.decode(theirs_ids).strip(),
        }
        if runtime.is_multilingual:
            entry["language"] = tokenizer.convert_ids_to_tokens(detected[0])
            entry["ct2_language"] = runtime.detect_language(storage)[0][0][0]
        per_clip.append(entry)
        print(f"  {clip.name}: max |diff| {entry['max_abs_diff']:.2e}  {entry['transcript']!r}", file=sys.stderr)
    window = torch.from_numpy(features)
    return {
        "model": name,
        "summary": result.summary(),
        "convert_seconds": round(convert_seconds, 1),
        "max_abs_diff": float(max(d.max() for d in diffs)),
        "mean_abs_diff": float(np.mean([d.mean() for d in diffs])),
        "within_bound": bool(max(d.max() for d in diffs) <= BOUND),
        **{key: max(c[key] for c in per_clip) for key in FLOAT32_KEYS},
        "tokens_equal": sum(c["tokens_equal"] for c in per_clip),
        "clips": len(per_clip),
        "encode_ms_transformers": _median_ms(lambda: model.model.encoder(window), repeats),
        "encode_ms_ctranslate2": _median_ms(
            lambda: runtime.encode(ctranslate2.StorageView.from_array(features)), repeats
        ),
        "per_clip": per_clip,
    }


def dequantisation(name: str, clip: Path, work: Path) -> list[dict]:
    """The converted float model requantised by CTranslate2's converter (int8, int16), read back by ours: how far its
    encoder moves from the float one (the quantisation's rounding, nothing more, if dequantising is right)."""
    import ctranslate2
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    reference_dir = work / f"whisper-{name}"
    features = WhisperFeatureExtractor.from_pretrained(reference_dir)(
        load_audio(clip, 16000), sampling_rate=16000, return_tensors="pt"
    ).input_features
    with torch.inference_mode():
        reference = WhisperForConditionalGeneration.from_pretrained(reference_dir).model.encoder(features)
    reference = reference.last_hidden_state
    rows = []
    for quantization in ("int8", "int16"):
        ct2 = work / f"whisper-{name}-{quantization}-ct2"
        converter = ctranslate2.converters.TransformersConverter(str(reference_dir), copy_files=["tokenizer.json"])
        converter.convert(str(ct2), quantization=quantization, force=True)
        out = convert_ct2_whisper(ct2, work / f"whisper-{name}-{quantization}", overwrite=True).out
        with torch.inference_mode():
            states = WhisperForConditionalGeneration.from_pretrained(out).model.encoder(features).last_hidden_state
        # CTranslate2 computing in float32 dequantises the same way: the two should agree like the float models
        runtime = ctranslate2.models.Whisper(str(ct2), device="cpu", compute_type="float32", intra_threads=1)
        theirs = torch.from_numpy(np.array(runtime.encode(ctranslate2.StorageView.from_array(features.numpy()))))
        diff = (states - reference).abs()
        rows.append(
            {
                "model": f"{name} {quantization}",
                "max_abs_diff": float(diff.max()),
                "mean_abs_diff": float(diff.mean()),
                "relative_mean": float(diff.mean() / reference.abs().mean()),
                "max_abs_diff_ctranslate2": float((states - theirs).abs().max()),
            }
        )
    return rows


def _median_ms(call, repeats: int) -> float:
    with torch.inference_mode():
        call()  # warm up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times), 1)


def format_table(results: dict) -> str:
    lines = [
        f"encoder parity with CTranslate2 on {len(results['clips'])} EmoDB clips (bound {results['bound']:g}), "
        "1 thread",
        "",
        "| model | max abs diff | mean abs diff | max abs diff, eager attention | float32 vs float64: transformers "
        "/ CTranslate2 | max abs state | greedy tokens equal | encode ms / 30 s, transformers / CTranslate2 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["models"]:
        lines.append(
            f"| {row['model']} | {row['max_abs_diff']:.1e} | {row['mean_abs_diff']:.1e} | "
            f"{row['max_abs_diff_eager']:.1e} | {row['float64_vs_transformers']:.1e} / "
            f"{row['float64_vs_ctranslate2']:.1e} | {row['max_abs_state']:.0f} | {row['tokens_equal']}/{row['clips']} | "
            f"{row['encode_ms_transformers']:.0f} / {row['encode_ms_ctranslate2']:.0f} |"
        )
    lines += [
        "",
        "| requantised by CTranslate2, read back | max abs diff vs float | mean abs diff / mean abs | "
        "max abs diff vs CTranslate2 (float32 compute) |",
        "|---|---:|---:|---:|",
    ]
    for row in results["dequantised"]:
        lines.append(
            f"| {row['model']} | {row['max_abs_diff']:.1e} | {row['relative_mean']:.1e} | "
            f"{row['max_abs_diff_ctranslate2']:.1e} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
