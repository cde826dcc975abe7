"""Compressed models side by side (docs/compression.md): size, CPU latency and EmoDB cross-validated UA.

`latency` times `EmotionRecognizer.predict` (what users run: feature extraction, acoustic functionals, both towers,
fusion, all three conditions) on one 5 s clip of real speech with a 20-word transcript, for each model folder as
fp32 and torch int8 (`from_pretrained(int8=True)`), on one CPU thread and on two. All variants stay loaded and take
turns call by call, so a machine whose load changes during the run moves them alike. With `--encoder` it also
times a Whisper tower pruned to each of `--layers` (`model.audio_layers`): the log-mel features and the tower's
pooled forward separately.

`equivalence` checks that a tower pruned to K layers pools the same hidden states as the full one on real clips
(hidden states 0..K are the same computation pruned or not), so pruned depths that still reach every pooled layer
need no cross-validation of their own.

`int8` times one model folder as fp32 and under each choice of `EmotionRecognizer.quantize` (weights per tensor or
per channel, a Whisper tower's convolutions fp32 or int8); `quantised` scores a cv folder's fold models fp32 and
int8 (the same choices as flags).

`table` joins those timings with `mmemo cv` results (the test UA of each fold and seed): mean over folds, ± the
std over seeds' fold means, as docs/real_speech.md reports.

    python benchmarks/compression.py latency --model teacher=runs/teacher/fold-1/seed-0/model \\
        --model k3=runs/prune-k3/fold-1/seed-0/model --encoder /work/weights/whisper-base --layers 1 2 3 4 5 6 \\
        --json docs/compression/latency.json
    python benchmarks/compression.py table docs/compression/latency.json --ua teacher=runs/teacher/cv_results.json \\
        --json docs/compression/table.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
EMODB_WAV = REPO.parent / "shared" / "data" / "emodb" / "wav"
CLIP_SECONDS = 5.0
RATE = 16000
# Three of EmoDB's sentences: 20 words, what `mmemo bench predict` pairs with its clip.
TRANSCRIPT = (
    "Der Lappen liegt auf dem Eisschrank. Das will sie am Mittwoch abgeben. "
    "An den Wochenenden bin ich jetzt immer nach Hause gefahren."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("latency", help="time model folders (fp32, int8; 1 and 2 threads) and pruned towers")
    p.add_argument("--model", action="append", default=[], metavar="NAME=DIR", help="a model folder to time")
    p.add_argument(
        "--encoder",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a pretrained Whisper to time pruned to every depth from 1 to all its layers",
    )
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=30, help="timed calls per variant and thread count")
    p.add_argument("--wav-dir", default=str(EMODB_WAV), help="speech for the 5 s clip (default: EmoDB's wav/)")
    p.add_argument("--json", default=None)
    p = sub.add_parser("equivalence", help="pooled states of pruned towers against the full tower on real clips")
    p.add_argument("encoder", help="a pretrained Whisper folder or hub id")
    p.add_argument("--layers", type=int, nargs="+", required=True, help="kept-layer counts to compare")
    p.add_argument("--pooled", type=int, nargs="+", default=[2, 3, 4], help="the pooled hidden states")
    p.add_argument("--clips", type=int, default=8, help="EmoDB clips compared (the first, sorted by name)")
    p.add_argument("--wav-dir", default=str(EMODB_WAV))
    p.add_argument("--json", default=None)
    p = sub.add_parser("table", help="the docs table: latency JSON + cv results")
    p.add_argument("latency", help="a JSON written by `latency`")
    p.add_argument("--ua", action="append", default=[], metavar="NAME=JSON[,JSON...]", help="cv_results of a model")
    p.add_argument("--int8-ua", action="append", default=[], metavar="NAME=JSON", help="`quantised` results")
    p.add_argument("--json", default=None)
    p = sub.add_parser("quantised", help="a cv folder's fold models scored fp32 and int8 (mmemo evaluate's way)")
    p.add_argument("cv_dir")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--per-tensor", action="store_true", help="int8 scales per weight, not per output channel")
    p.add_argument("--fp32-convolutions", action="store_true", help="keep a Whisper tower's convolutions fp32")
    p.add_argument("--onnx", action="store_true", help="also score each model's ONNX int8 export")
    p.add_argument("--json", default=None)
    p = sub.add_parser("int8", help="one model folder's latency as fp32 and under each int8 choice, one thread")
    p.add_argument("model")
    p.add_argument("--repeats", type=int, default=60, help="timed calls per variant")
    p.add_argument("--wav-dir", default=str(EMODB_WAV))
    p.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.command == "latency":
        models, encoders = dict(_pair(m) for m in args.model), dict(_pair(e) for e in args.encoder)
        results = latency(models, encoders, args.threads, args.repeats, args.wav_dir)
        print(format_latency(results))
    elif args.command == "equivalence":
        results = equivalence(args.encoder, args.layers, tuple(args.pooled), args.clips, args.wav_dir)
        for k, row in results["by_layers"].items():
            print(f"K={k}: pooled states {row['pooled']} max |pruned - full| = {row['max_abs_diff']:.2e}")
    elif args.command == "quantised":
        results = quantised(args.cv_dir, args.seeds, not args.per_tensor, not args.fp32_convolutions, args.onnx)
        for precision in results:
            summary = cv_summary_of(results[precision])
            print(
                f"{precision}: audio-only UA {summary['audio']['mean']:.3f}, text+audio {summary['both']['mean']:.3f}"
            )
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(results["int8"], indent=2) + "\n")
            for precision in set(results) - {"int8"}:
                also = Path(args.json).with_name(f"{Path(args.json).stem}_{precision}.json")
                also.write_text(json.dumps(results[precision], indent=2) + "\n")
        return
    elif args.command == "int8":
        results = int8_choices(args.model, args.repeats, args.wav_dir)
        print("| variant | 5 s clip + text p50 (ms) | p95 (ms) | CPU p50 (ms) |\n|---|---:|---:|---:|")
        for name, ms in results["latency_ms"].items():
            print(f"| {name} | {ms['p50']:.1f} | {ms['p95']:.1f} | {ms['cpu_p50']:.1f} |")
    else:
        ua, int8_ua = (dict(_pair(u) for u in given) for given in (args.ua, args.int8_ua))
        results = table(json.loads(Path(args.latency).read_text()), ua, int8_ua)
        print(format_table(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


def latency(models: dict, encoders: dict, threads: list[int], repeats: int, wav_dir) -> dict:
    """{"machine", "models": {name: size and ms per variant and thread count}, "encoders": {name: by depth}}."""
    from mmemo.inference import EmotionRecognizer
    from mmemo.model import count_parameters

    clip = speech_clip(wav_dir)
    out = {"machine": _machine(), "clip_seconds": CLIP_SECONDS, "transcript_words": len(TRANSCRIPT.split())}
    predictors, info = {}, {}
    for name, folder in models.items():
        fp32 = EmotionRecognizer.from_pretrained(folder)
        predictors[(name, "fp32")] = fp32.predict
        predictors[(name, "int8")] = EmotionRecognizer.from_pretrained(folder, int8=True).predict
        files = [f for f in Path(folder).iterdir() if f.is_file()]
        info[name] = {
            "dir": str(folder),
            "parameters": count_parameters(fp32.model),
            "audio_parameters": count_parameters(fp32.model.audio_encoder),
            "audio_layers": fp32.model.audio_encoder.num_layers,
            "weights_mb": round((Path(folder) / "model.safetensors").stat().st_size / 1e6, 2),
            "folder_mb": round(sum(f.stat().st_size for f in files) / 1e6, 2),
            "latency_ms": {"fp32": {}, "int8": {}},
        }
    for n in threads if predictors else ():
        torch.set_num_threads(n)
        times = _interleaved(predictors, lambda p: p(text=TRANSCRIPT, audio=clip, sampling_rate=RATE), repeats)
        for (name, variant), seconds in times.items():
            info[name]["latency_ms"][variant][str(n)] = _percentiles(seconds)
    out["models"] = info
    out["encoders"] = {name: encoder_latency(folder, threads, repeats, clip) for name, folder in encoders.items()}
    out["machine_after"] = _machine()
    return out


def encoder_latency(encoder: str, threads: list[int], repeats: int, clip: np.ndarray) -> dict:
    """Per kept-layer count (1 to all): tower parameters, the pruned tower's pooled forward ms, and log-mel ms."""
    from transformers import AutoConfig

    from mmemo.builders import load_feature_extractor
    from mmemo.config import ModelConfig
    from mmemo.data.dataset import Collator
    from mmemo.encoders import WhisperAudioEncoder, build_encoders

    text = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    towers = {}
    for k in range(1, AutoConfig.from_pretrained(encoder).encoder_layers + 1):
        cfg = ModelConfig(audio_encoder=encoder, audio_layers=k, text_config=text)
        towers[k] = WhisperAudioEncoder(build_encoders(cfg, vocab_size=10)[1]).eval()
    collator = Collator(None, load_feature_extractor(ModelConfig(audio_encoder=encoder)))
    features = collator.pad_audio([clip])
    out = {k: {"parameters": sum(p.numel() for p in t.parameters()), "tower_ms": {}} for k, t in towers.items()}
    log_mel = {}
    for n in threads:
        torch.set_num_threads(n)
        calls = {k: _pooled_call(t, features, k) for k, t in towers.items()}
        calls["log-mel"] = lambda: collator.pad_audio([clip])
        times = _interleaved(calls, lambda call: call(), repeats)
        log_mel[str(n)] = _percentiles(times.pop("log-mel"))
        for k, seconds in times.items():
            out[k]["tower_ms"][str(n)] = _percentiles(seconds)
    return {"log_mel_ms": log_mel, "by_layers": out}


def equivalence(encoder: str, layers: list[int], pooled: tuple[int, ...], clips: int, wav_dir) -> dict:
    """The largest absolute difference between the full tower's and each pruned tower's pooled states (B, len, D)
    over `clips` real clips, padded together as training pads them."""
    from mmemo.builders import load_feature_extractor
    from mmemo.config import ModelConfig
    from mmemo.data.audio import load_audio
    from mmemo.data.dataset import Collator
    from mmemo.encoders import WhisperAudioEncoder, build_encoders

    text = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}

    def tower(k: int):
        cfg = ModelConfig(audio_encoder=encoder, audio_layers=k, text_config=text)
        return WhisperAudioEncoder(build_encoders(cfg, vocab_size=10)[1]).eval()

    files = sorted(Path(wav_dir).glob("*.wav"))[:clips]
    collator = Collator(None, load_feature_extractor(ModelConfig(audio_encoder=encoder)))
    features = collator.pad_audio([load_audio(f, RATE) for f in files])
    with torch.inference_mode():
        full = tower(0).pooled(features["input_features"], features["attention_mask"], pooled)  # (B, len, D)
        out = {"encoder": encoder, "clips": [f.name for f in files], "by_layers": {}}
        for k in layers:
            states = tower(k).pooled(features["input_features"], features["attention_mask"], pooled)
            diff = float((states - full).abs().max())
            out["by_layers"][str(k)] = {
                "pooled": list(pooled),
                "max_abs_diff": diff,
                "full_max_abs": float(full.abs().max()),
            }
    return out


def _pooled_call(tower, features: dict, k: int):
    layers = tuple(range(k + 1))

    @torch.inference_mode()
    def call():
        return tower.pooled(features["input_features"], features["attention_mask"], layers)

    return call


def table(latency: dict, ua: dict, int8_ua: dict) -> dict:
    """One row per model: parameters, sizes, latencies and audio-only / text+audio UA over its cv results."""
    rows = {}
    for name, info in latency["models"].items():
        row = {key: info[key] for key in ("parameters", "audio_layers", "weights_mb", "latency_ms")}
        if name in ua:
            row["ua"] = cv_summary(ua[name].split(","))
        if name in int8_ua:
            row["int8_ua"] = cv_summary(int8_ua[name].split(","))
        rows[name] = row
    return {"machine": latency["machine"], "rows": rows}


def quantised(
    cv_dir: str, seeds: list[int], per_channel: bool = True, convolutions: bool = True, onnx: bool = False
) -> dict:
    """Each fold model (of `seeds`) in a cv folder scored on its fold's test split as `mmemo evaluate` scores (whole
    clips), fp32 and torch int8 (`EmotionRecognizer.quantize(per_channel, convolutions)`), and with `onnx` its ONNX
    int8 export (`mmemo export --onnx --int8`) through the export's own runtime: {"fp32": {"runs": [...]}, "int8":
    ..., "onnx_int8": ...}, cv_results-shaped."""
    import tempfile

    from mmemo.data.manifest import read_manifest
    from mmemo.evaluate import row_logits, score
    from mmemo.export import export_onnx
    from mmemo.inference import EmotionRecognizer
    from mmemo.onnx_runtime import OnnxEmotionRecognizer

    out = {"fp32": {"runs": []}, "int8": {"runs": []}} | ({"onnx_int8": {"runs": []}} if onnx else {})
    for folder in sorted(p.parent for seed in seeds for p in Path(cv_dir).glob(f"fold-*/seed-{seed}/model")):
        run = {"fold": folder.parent.name.removeprefix("fold-"), "seed": int(folder.name.removeprefix("seed-"))}
        rows = [r for r in read_manifest(folder.parent / "manifest.jsonl") if r["split"] == "test"]
        for precision in out:
            recognizer = EmotionRecognizer.from_pretrained(folder / "model")
            if precision == "int8":
                recognizer.quantize(per_channel=per_channel, convolutions=convolutions)
            if precision == "onnx_int8":
                with tempfile.TemporaryDirectory() as tmp:
                    export_onnx(folder / "model", tmp, int8=True, overwrite=True)
                    logits = row_logits(_OnnxRows(recognizer, OnnxEmotionRecognizer(tmp)), rows)
            else:
                logits = row_logits(recognizer, rows)
            scores = score(logits, len(recognizer.labels))
            test = {c: {"ua": scores[c]["ua"]} for c in ("both", "text", "audio")}
            out[precision]["runs"].append({"fold": run["fold"], "seed": run["seed"], "test": test})
    return out


class _OnnxRows:
    """An ONNX export in the row-scoring loop's place of an `EmotionRecognizer`: the export predicts; its model
    folder's recognizer supplies the settings and speaker profiles the loop asks for."""

    def __init__(self, recognizer, runtime):
        self.config, self.labels, self.predict = recognizer.config, runtime.labels, runtime.predict
        self.uses_profiles = recognizer.uses_profiles
        self.enrolment_statistics, self.profile_from = recognizer.enrolment_statistics, recognizer.profile_from


def int8_choices(folder: str, repeats: int, wav_dir) -> dict:
    """One model folder's `predict` on the 5 s speech clip + transcript, one thread, as fp32 and as int8 with each
    choice of `EmotionRecognizer.quantize` (weights per tensor or per channel; a Whisper tower's front-end
    convolutions fp32 or int8), called in turns: {"machine", "latency_ms": {variant: percentiles}}."""
    from mmemo.inference import EmotionRecognizer

    torch.set_num_threads(1)
    clip = speech_clip(wav_dir)
    predictors = {"fp32": EmotionRecognizer.from_pretrained(folder).predict}
    for per_channel in (False, True):
        for convolutions in (False, True):
            weights, convs = "per channel" if per_channel else "per tensor", "int8" if convolutions else "fp32"
            name = f"int8, {weights}, convolutions {convs}"
            recognizer = EmotionRecognizer.from_pretrained(folder)
            predictors[name] = recognizer.quantize(per_channel=per_channel, convolutions=convolutions).predict
    times = _interleaved(predictors, lambda p: p(text=TRANSCRIPT, audio=clip, sampling_rate=RATE), repeats)
    return {
        "machine": _machine(),
        "model": str(folder),
        "latency_ms": {name: _percentiles(seconds) for name, seconds in times.items()},
        "machine_after": _machine(),
    }


def cv_summary(paths: list[str]) -> dict:
    """Test UA per condition from cv results files: mean over all runs, std over seeds' fold means, run count."""
    return cv_summary_of({"runs": [run for path in paths for run in json.loads(Path(path).read_text())["runs"]]})


def cv_summary_of(results: dict) -> dict:
    """`cv_summary` of results already read."""
    runs = results["runs"]
    out = {"runs": len(runs), "seeds": sorted({run["seed"] for run in runs})}
    for condition in ("both", "audio"):
        by_seed = {}
        for run in runs:
            by_seed.setdefault(run["seed"], []).append(run["test"][condition]["ua"])
        means = [float(np.mean(v)) for v in by_seed.values()]
        out[condition] = {"mean": float(np.mean(means)), "seed_std": float(np.std(means)) if len(means) > 1 else None}
        out[condition]["folds"] = {s: len(v) for s, v in by_seed.items()}
    return out


def format_latency(results: dict) -> str:
    lines = ["| model | parameters (M) | weights (MB) | variant | threads | p50 (ms) | p95 (ms) | CPU p50 (ms) |", "|---|---:|---:|---|---:|---:|---:|---:|"]  # fmt: skip
    for name, info in results["models"].items():
        for variant, by_threads in info["latency_ms"].items():
            for n, t in by_threads.items():
                lines.append(
                    f"| {name} | {info['parameters'] / 1e6:.2f} | {info['weights_mb']:.1f} | {variant} | {n} "
                    f"| {t['p50']:.1f} | {t['p95']:.1f} | {t['cpu_p50']:.1f} |"
                )
    for name, enc in results.get("encoders", {}).items():
        lines += ["", f"| {name}: kept layers | tower parameters (M) | threads | tower p50 (ms) | p95 (ms) | CPU p50 (ms) |", "|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for k, info in enc["by_layers"].items():
            for n, t in info["tower_ms"].items():
                lines.append(
                    f"| {k} | {info['parameters'] / 1e6:.2f} | {n} | {t['p50']:.1f} | {t['p95']:.1f} | {t['cpu_p50']:.1f} |"
                )
        mel = ", ".join(f"{n} thread(s) p50 {t['p50']:.1f} ms (CPU {t['cpu_p50']:.1f})" for n, t in enc["log_mel_ms"].items())  # fmt: skip
        lines.append(f"\n{name}: log-mel features of the 5 s clip: {mel}")
    load = results["machine"]["load_average"], results["machine_after"]["load_average"]
    lines.append(f"load average (1, 5, 15 min) before {load[0]}, after {load[1]} on {os.cpu_count()} cores")
    return "\n".join(lines)


def format_table(results: dict) -> str:
    """The docs table: a row per model and precision."""
    head = "| model | precision | parameters (M) | weights on disk (MB) | 1 core p50 / p95 (ms) | 1 core CPU p50 (ms) | 2 cores p50 / p95 (ms) | audio-only UA | text+audio UA |"  # fmt: skip
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, row in results["rows"].items():
        for variant in ("fp32", "int8"):
            one, two = row["latency_ms"][variant]["1"], row["latency_ms"][variant]["2"]
            ua = row.get("ua") if variant == "fp32" else row.get("int8_ua")
            scores = [_ua_cell(ua, c) if ua else "–" for c in ("audio", "both")]
            size = f"{row['weights_mb']:.1f}" if variant == "fp32" else "(quantised at load)"
            cells = [
                name,
                f"torch {variant}",
                f"{row['parameters'] / 1e6:.2f}",
                size,
                f"{one['p50']:.0f} / {one['p95']:.0f}",
                f"{one['cpu_p50']:.0f}",
                f"{two['p50']:.0f} / {two['p95']:.0f}",
                *scores,
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ua_cell(ua: dict, condition: str) -> str:
    score = ua[condition]
    spread = f" ± {score['seed_std']:.3f}" if score["seed_std"] is not None else ""
    return f"{score['mean']:.3f}{spread} ({len(ua['seeds'])} seed{'s' if len(ua['seeds']) > 1 else ''})"


def speech_clip(wav_dir) -> np.ndarray:
    """5 s of real speech: EmoDB clips (sorted by name) joined end to end and cut to length; noise without them."""
    from mmemo.data.audio import load_audio

    files = sorted(Path(wav_dir).glob("*.wav"))
    if not files:
        print(f"no .wav files in {wav_dir}: timing a noise clip instead")
        return np.random.default_rng(0).normal(0, 0.1, int(CLIP_SECONDS * RATE)).astype(np.float32)
    parts, total = [], 0
    for f in files:
        parts.append(load_audio(f, RATE))
        total += len(parts[-1])
        if total >= CLIP_SECONDS * RATE:
            break
    return np.concatenate(parts)[: int(CLIP_SECONDS * RATE)].astype(np.float32)


def _interleaved(calls: dict, call, repeats: int, warmup: int = 3) -> dict:
    """(wall seconds, process CPU seconds) per call for each entry, in rounds that call every entry once (each round
    starts one later)."""
    for target in calls.values():
        for _ in range(warmup):
            call(target)
    names, times = list(calls), {name: ([], []) for name in calls}
    for round_ in range(repeats):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            start, cpu = time.perf_counter(), time.process_time()
            call(calls[name])
            times[name][0].append(time.perf_counter() - start)
            times[name][1].append(time.process_time() - cpu)
    return times


def _percentiles(times: tuple[list[float], list[float]]) -> dict:
    """Wall-clock p50/p95 and the p50 of the process's CPU time (all its threads) in ms. On a machine shared with
    other work the wall clock includes waiting for a core; one thread's CPU time is what the call itself costs."""
    wall, cpu = (np.asarray(t) * 1000 for t in times)
    return {
        "p50": round(float(np.percentile(wall, 50)), 2),
        "p95": round(float(np.percentile(wall, 95)), 2),
        "cpu_p50": round(float(np.percentile(cpu, 50)), 2),
    }


def _machine() -> dict:
    return {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()], "torch": torch.__version__}


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep:
        raise SystemExit(f"expected NAME=VALUE, got {text!r}")
    return name, value


if __name__ == "__main__":
    main()
