"""How the demo model hears voices it never trained on: held-out speakers' audio-only UA with no speaker profile and
with each speaker enrolled (`enrol_speaker`) from some of their clips.

The test split's speakers (the importer's split: EmoDB speakers the model never saw) are scored through
`EmotionRecognizer.predict`, as the demo scores a recording: once with no profile, once with a profile per speaker
enrolled from `--enrol` of their clips (chosen at random, labels unused), scoring only the clips not used to enrol.
Prints a table, writes JSON.

    python benchmarks/demo_voices.py runs/whisper_base/model data/emodb.jsonl --json docs/pretrained/demo_voices.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import recall_score

from mmemo.data.audio import load_audio
from mmemo.data.manifest import read_manifest
from mmemo.inference import EmotionRecognizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="the trained model folder")
    parser.add_argument("manifest", help="a manifest with split and speaker fields (e.g. data/emodb.jsonl)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--enrol", type=int, default=10, help="clips per speaker to enrol from (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rec = EmotionRecognizer.from_pretrained(args.model, device="cpu")
    rate = rec.config.sampling_rate
    rows = [r for r in read_manifest(args.manifest) if r.get("split") == args.split and r.get("label") in rec.labels]
    rng = np.random.default_rng(args.seed)
    gold, plain, enrolled = [], [], []
    for speaker in sorted({r["speaker"] for r in rows}):
        mine = [r for r in rows if r["speaker"] == speaker]
        waves = [load_audio(r["audio"], rate) for r in mine]
        chosen = set(rng.choice(len(mine), size=min(args.enrol, len(mine) - 1), replace=False).tolist())
        profile = rec.enrol_speaker([waves[i] for i in sorted(chosen)], sampling_rate=rate)
        rest = [i for i in range(len(mine)) if i not in chosen]
        gold += [mine[i]["label"] for i in rest]
        plain += [p.label for p in rec.predict(audio=[waves[i] for i in rest], sampling_rate=rate)]
        with_profile = rec.predict(audio=[waves[i] for i in rest], sampling_rate=rate, speaker_profile=profile)
        enrolled += [p.label for p in with_profile]
    results = {
        "model": args.model,
        "split": args.split,
        "speakers": sorted({r["speaker"] for r in rows}),
        "scored_clips": len(gold),
        "enrol_clips_per_speaker": args.enrol,
        "ua_no_profile": recall_score(gold, plain, average="macro"),
        "ua_enrolled": recall_score(gold, enrolled, average="macro"),
    }
    print(f"| {args.split} speakers {' '.join(results['speakers'])} ({len(gold)} clips) | audio-only UA |")
    print("|---|---:|")
    print(f"| no speaker profile | {results['ua_no_profile']:.3f} |")
    print(f"| each speaker enrolled from {args.enrol} other clips | {results['ua_enrolled']:.3f} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
