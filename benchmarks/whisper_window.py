"""Whisper's own 30 s window against mmemo's clip-length encoding: does the padding carry emotion?

mmemo encodes each clip's own frames (`WhisperAudioEncoder`: about 11x cheaper than a 30 s window for a 3 s clip).
Whisper was trained on zero-padded 30 s windows, so its states for the same frames differ. This benchmark computes
both for every EmoDB clip (the same decoded, centre-cropped clips, through `mmemo.data.tower_cache`): the
clip-length states through the recipe's own code (`whisper_probe.tower_states`), the windowed ones through
transformers' stock pipeline (`WhisperFeatureExtractor` padding to 30 s, `WhisperEncoder`), each hidden state
mean-pooled over the clip's own frames. Then the linear probe of `whisper_probe.py` (C = 1) on each. Prints one
table, writes JSON.

    python benchmarks/whisper_window.py [EMODB_ROOT] --model models/whisper-base data.cache_dir=... --json OUT
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from transformers import WhisperFeatureExtractor
from whisper_probe import layer_table, parse_args, print_table, tower_states

from mmemo.data.tower_cache import pooled_table, tower_digest

FRAME_SAMPLES = 320  # one encoder position: 20 ms at 16 kHz


def main() -> None:
    args, root, overrides = parse_args(__doc__.splitlines()[0])
    rows, cfg, clip_states, clip_seconds = tower_states(root, args.model, overrides)
    start = time.time()
    window_states = windowed_states(rows, cfg)
    window_seconds = time.time() - start
    table = {
        f"{encoding}, {norm}": scores
        for encoding, states in (("clip", clip_states), ("30 s window", window_states))
        for norm, scores in layer_table(rows, states).items()
    }
    print_table(table)
    print(
        f"states of {len(rows)} clips, one thread: clip length {clip_seconds:.0f} s, 30 s window {window_seconds:.0f} s"
    )
    print("(a figure near zero: the cache held them)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        record = {"model": args.model, "ua": table, "seconds": {"clip": clip_seconds, "window": window_seconds}}
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")


def windowed_states(rows: list[dict], cfg) -> np.ndarray:
    """Every hidden state of the whole encoder on Whisper's 30 s window, mean-pooled over each clip's own frames:
    (N, layers, D), cached under `data.cache_dir` like the recipe's states (with a key of their own)."""
    from transformers import WhisperModel

    encoder = WhisperModel.from_pretrained(cfg.model.audio_encoder).get_encoder().eval()
    extractor = WhisperFeatureExtractor(feature_size=encoder.config.num_mel_bins)
    settings = {"tower": tower_digest(encoder, encoder.config.to_dict()), "window": "30 s, transformers"}

    @torch.no_grad()
    def encode(waves: list[np.ndarray]) -> np.ndarray:
        features = extractor(waves, sampling_rate=cfg.model.sampling_rate, return_tensors="pt").input_features
        hidden = torch.stack(encoder(features, output_hidden_states=True).hidden_states, 1)  # (B, L+1, 1500, D)
        frames = [-(-len(wave) // FRAME_SAMPLES) for wave in waves]
        return np.stack([states[:, :n].mean(1).numpy() for states, n in zip(hidden, frames)])

    table = pooled_table(
        rows,
        encode,
        settings,
        sampling_rate=cfg.model.sampling_rate,
        max_seconds=cfg.data.max_audio_seconds,
        cache_dir=cfg.data.cache_dir or None,
    )
    return table[0]


if __name__ == "__main__":
    main()
