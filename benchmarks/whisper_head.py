"""The pretrained recipe's head on a frozen Whisper tower's cached states: which choices are worth what.

Trains the audio-only path of the real `EmotionModel` (`configs/whisper_base.yaml`'s head: a linear audio token
read by the fusion block and directly by the classifier) on the mean-pooled hidden states `pooled_tables` caches,
for each of the importer's five EmoDB speaker folds on the other four (as the recipe's refit on train + valid
does), and scores the held-out fold. Each variant changes one thing: the hidden states read, speaker instead of
global standardisation, the acoustic-statistics token, dropout, epochs, length-bucketed batches instead of random
ones, or how the global head trains (weight decay, label smoothing, learning rate, batch size, concatenation instead
of cross-attention). No text tower, no validation: minutes for all variants, where `mmemo cv` takes minutes per
seed. Prints the reference first (the linear probe on the same states at three regularisation strengths C), then
one table (UA per fold and mean over seeds); writes JSON.

    python benchmarks/whisper_head.py [EMODB_ROOT] --model models/whisper-base --seeds 0 1 2 --json docs/pretrained/head.json
"""

from __future__ import annotations

import copy
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from emodb_args import emodb_parser, root_and_overrides
from sklearn.metrics import recall_score
from whisper_probe import probe, standardised, tower_states

from mmemo.builders import build_recognizer
from mmemo.config import load_config
from mmemo.data.cache import AudioCache
from mmemo.data.dataset import clip_seconds

RECIPE = {
    "layers": [2, 3, 4],
    "norm": "global",
    "token": False,
    "dropout": 0.1,
    "epochs": 20,
    "buckets": False,
    # the recipe's training (AdamW, linear warmup over the first 5 % of steps and decay) and fusion block
    "lr": 1e-3,
    "weight_decay": 0.01,
    "batch": 16,
    "smoothing": 0.0,
    "fusion": "cross_attention",
}
SPEAKER_RECIPE = {"norm": "speaker", "layers": [1, 2, 3, 4, 5], "token": True}  # configs/whisper_base_speaker.yaml
VARIANTS = {
    "global (whisper_base: layers 2-4)": {},
    "global, length-bucketed batches": {"buckets": True},
    "global + acoustic token": {"token": True},
    "global, dropout 0.2": {"dropout": 0.2},
    "global, 40 epochs": {"epochs": 40},
    "global, layers 1-5": {"layers": [1, 2, 3, 4, 5]},
    "global, layers 2-3 (pruned K=3)": {"layers": [2, 3]},
    "global, layers 1-3 (pruned K=3)": {"layers": [1, 2, 3]},
    "speaker, layers 2-4": {"norm": "speaker"},
    "speaker, layers 2-4 + acoustic token": {"norm": "speaker", "token": True},
    "speaker, layers 1-5": {"norm": "speaker", "layers": [1, 2, 3, 4, 5]},
    "speaker, layers 1-5 + acoustic token (whisper_base_speaker)": SPEAKER_RECIPE,
    "speaker, whisper_base_speaker, length-bucketed batches": {**SPEAKER_RECIPE, "buckets": True},
    # regularising and training the global head otherwise (docs/pretrained.md: none clears the plateau near 0.93)
    "global, dropout 0.2, weight decay 0.1": {"dropout": 0.2, "weight_decay": 0.1},
    "global, weight decay 0.5, 40 epochs": {"weight_decay": 0.5, "epochs": 40},
    "global, label smoothing 0.1": {"smoothing": 0.1},
    "global, 10 epochs": {"epochs": 10},
    "global, lr 3e-4": {"lr": 3e-4},
    "global, batches of 64": {"batch": 64},
    "global, concatenation instead of cross-attention": {"fusion": "concat"},
}
WARMUP = 0.05


def main() -> None:
    parser = emodb_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a Whisper checkpoint folder or hub id")
    parser.add_argument("--only", nargs="+", help="run only the variants whose names contain one of these words")
    args = parser.parse_args()
    root, overrides = root_and_overrides(parser, args)
    torch.set_num_threads(1)
    variants = {n: v for n, v in VARIANTS.items() if not args.only or any(w in n for w in args.only)}
    rows, cfg, states, _ = tower_states(root, args.model, overrides)
    cache = AudioCache(cfg.data.cache_dir, cfg.model.sampling_rate)
    corpus = {
        "states": states,
        "functionals": np.stack([cache.functionals(row["audio"]) for row in rows]),
        "seconds": np.array([min(clip_seconds(row), cfg.data.max_audio_seconds) for row in rows]),
        "labels": np.array([sorted({r["label"] for r in rows}).index(r["label"]) for r in rows]),
        "speakers": np.array([r["speaker"] for r in rows]),
        "rows": rows,
        "folds": np.array([r["fold"] for r in rows]),
    }
    # the reference the head is held to, and how much of it is the choice of C (scored on the test folds)
    x = states[:, RECIPE["layers"]].reshape(len(rows), -1)
    probes = {c: probe(x, corpus["labels"], corpus["speakers"], corpus["folds"], "global", c) for c in (0.1, 1.0, 10.0)}
    print("linear probe, layers 2-4, global: " + ", ".join(f"C = {c:g}: {ua:.3f}" for c, ua in probes.items()))
    results, start = {}, time.time()
    print("| variant | UA per fold | seeds | mean UA |\n|---|---|---|---:|")
    for name, change in variants.items():
        uas = np.array([head_cv(corpus, {**RECIPE, **change}, cfg, overrides, seed) for seed in args.seeds])
        results[name] = {"change": change, "ua_per_seed_fold": uas.tolist(), "ua": float(uas.mean())}
        per_fold = " ".join(f"{u:.3f}" for u in uas.mean(0))
        per_seed = " ".join(f"{u:.3f}" for u in uas.mean(1))
        print(f"| {name} | {per_fold} | {per_seed} | {uas.mean():.3f} |", flush=True)
    print(f"{len(variants)} variants × {len(args.seeds)} seeds in {time.time() - start:.0f} s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        out = {"model": args.model, "recipe": RECIPE, "seeds": args.seeds, "probe_by_c": probes, "results": results}
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


def head_cv(corpus: dict, variant: dict, cfg, overrides: list[str], seed: int) -> list[float]:
    """Audio-only test UA per fold of the recipe's head trained on the other folds."""
    layers = variant["layers"]
    x = corpus["states"][:, layers].reshape(len(corpus["labels"]), -1)
    labels = torch.from_numpy(corpus["labels"])
    # Every fold starts from the same model and torch RNG state: built once (tower load, tokenizer), copied per fold.
    initial = build_head(cfg, overrides, variant, seed, corpus["rows"])
    rng_state = torch.get_rng_state()
    uas = []
    for fold in sorted(set(corpus["folds"])):
        test = corpus["folds"] == fold
        pooled = standardised(x, corpus["speakers"], test, variant["norm"]).reshape(len(x), len(layers), -1)
        audio = {"pooled": torch.from_numpy(np.clip(pooled, -5, 5)).float()}
        if variant["token"]:
            z = standardised(corpus["functionals"], corpus["speakers"], test, variant["norm"])
            audio["functionals"] = torch.from_numpy(np.clip(z, -5, 5)).float()
        model = copy.deepcopy(initial)
        torch.set_rng_state(rng_state)
        train_head(model, audio, labels, np.flatnonzero(~test), corpus["seconds"], variant, seed)
        model.eval()
        with torch.no_grad():
            predicted = model(None, {k: v[test] for k, v in audio.items()})["logits"].argmax(1).numpy()
        uas.append(recall_score(corpus["labels"][test], predicted, average="macro"))
    return uas


def build_head(cfg, overrides: list[str], variant: dict, seed: int, rows: list[dict]) -> torch.nn.Module:
    """The recipe's `EmotionModel` with the variant's settings; inputs arrive standardised (statistics 0 and 1)."""
    settings = [
        f"model.audio_encoder={cfg.model.audio_encoder}",
        "model.audio_layers=0",
        f"model.pooled_layers={variant['layers']}",
        f"model.acoustic_features={variant['token']}",
        f"model.dropout={variant['dropout']}",
        f"model.fusion={variant['fusion']}",
        *overrides,
    ]
    head_cfg = load_config("whisper_base", settings)
    head_cfg.model.labels = sorted({row["label"] for row in rows})
    torch.manual_seed(seed)
    model = build_recognizer(head_cfg.model, {"train": rows}, torch.device("cpu")).model
    for name in ("pooled", "acoustic"):
        if hasattr(model, f"{name}_mean"):
            getattr(model, f"{name}_mean").zero_()
            getattr(model, f"{name}_std").fill_(1.0)
    return model


def train_head(model, audio: dict, labels, train_rows: np.ndarray, seconds, variant: dict, seed: int) -> None:
    """AdamW with the recipe's schedule; batches random, or sorted by clip length as the loaders sort waveforms."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=variant["lr"], weight_decay=variant["weight_decay"])
    size = variant["batch"]
    steps = variant["epochs"] * -(-len(train_rows) // size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / (WARMUP * steps)) * max(0.0, 1 - s / steps)
    )
    rng = np.random.default_rng(seed)
    model.train()
    for epoch in range(variant["epochs"]):
        if variant["buckets"]:  # BucketBatchSampler's order: by duration with 0-0.3 s of jitter
            jitter = random.Random(seed * 100_003 + epoch)
            order = sorted(train_rows, key=lambda i: seconds[i] + jitter.uniform(0.0, 0.3))
            batches = [order[b : b + size] for b in range(0, len(order), size)]
            jitter.shuffle(batches)
        else:
            order = rng.permutation(train_rows)
            batches = [order[b : b + size] for b in range(0, len(order), size)]
        for batch in batches:
            logits = model(None, {k: v[batch] for k, v in audio.items()})["logits"]
            loss = torch.nn.functional.cross_entropy(logits, labels[batch], label_smoothing=variant["smoothing"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()


if __name__ == "__main__":
    main()
