"""The pretrained recipe's tower speed: whisper-base pooled states (configs/whisper_base.yaml's layers) per 3 s clip.

The cost the recipe pays once per clip (then cached) and at every prediction: log-mel of each clip alone, the
encoder over the clip's own frames, mean-pooling of the chosen hidden states. Synthetic voiced clips, batches of
`--batch`, on `--device`; prints a table, writes JSON. Used by benchmarks/gpu_check.sh when a GPU is lent.

    python benchmarks/whisper_tower_speed.py --model models/whisper-base --device cuda -o out.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from mmemo.builders import build_recognizer
from mmemo.config import load_config
from mmemo.device import resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a Whisper checkpoint folder (mmemo convert ct2-whisper)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("-o", "--output", default=None, help="also write the results here (JSON)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    cfg = load_config("whisper_base", [f"model.audio_encoder={args.model}", "model.labels=[a,b]"])
    rec = build_recognizer(cfg.model, {"train": [{"text": "a few words to train a tokenizer on"}]}, device)
    rate = rec.config.sampling_rate
    rng = np.random.default_rng(0)
    t = np.arange(3 * rate) / rate
    clips = [
        (0.2 * np.sin(2 * np.pi * (120 + 10 * i) * t) + 0.01 * rng.normal(size=t.size)).astype(np.float32)
        for i in range(args.clips)
    ]
    rec.pooled_states(clips[: args.batch], batch_size=args.batch)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    rec.pooled_states(clips, batch_size=args.batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    ms = 1000 * (time.perf_counter() - start) / len(clips)
    results = {
        "model": args.model,
        "device": str(device),
        "batch": args.batch,
        "clips": len(clips),
        "ms_per_3s_clip": ms,
    }
    print("| device | batch | ms per 3 s clip (log-mel + encoder + pooling) |")
    print("|---|---:|---:|")
    print(f"| {device} | {args.batch} | {ms:.1f} |")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
