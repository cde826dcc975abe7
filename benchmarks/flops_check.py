"""Count the training FLOPs of one sample (6 s of audio + 20 tokens, forward + backward) with FlopCounterMode
and set them beside the hand arithmetic in docs/benchmarks.md.

    PYTHONPATH=. python benchmarks/flops_check.py [--size base] [--device cpu|cuda] [--seconds 6] [--tokens 20]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from mmemo.bench.measure import flop_formulas
from mmemo.bench.train import build_model, plain_step
from mmemo.builders import load_feature_extractor
from mmemo.config import ModelConfig
from mmemo.data.dataset import Collator
from mmemo.data.text import train_wordpiece


def count(size: str, freeze_cnn: bool, seconds: float, tokens: int, device: torch.device) -> dict:
    """{"train": forward + backward FLOPs, "forward": {part: forward FLOPs}} for one sample.

    The parts come from the forward pass only: FlopCounterMode's module tracking misattributes backward ops.
    """
    from mmemo.data.dataset import move_batch

    words = [f"w{i}" for i in range(tokens - 2)]  # + [CLS] and [SEP]
    tokenizer = train_wordpiece([" ".join(words)], 1000)
    collator = Collator(tokenizer, load_feature_extractor(ModelConfig()))
    batch = collator(
        [
            {
                "id": "x",
                "text": " ".join(words),
                "label": 0,
                "audio": np.random.default_rng(0).normal(0, 0.1, int(seconds * 16000)).astype(np.float32),
            }
        ]
    )
    assert batch["text"]["input_ids"].shape[1] == tokens, batch["text"]["input_ids"].shape
    torch.manual_seed(0)
    model = build_model(size, sdpa=True, freeze_cnn=freeze_cnn).to(device).train()
    with FlopCounterMode(display=False, custom_mapping=flop_formulas()) as counter:
        plain_step(model, None, batch, device, bf16=False, non_blocking=False)
    train = counter.get_total_flops()
    on_device = move_batch(batch, device)
    with FlopCounterMode(display=False, depth=None, custom_mapping=flop_formulas()) as counter:
        model(on_device["text"], on_device["audio"], on_device["text_present"], on_device["audio_present"])
    by_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    total, text = counter.get_total_flops(), _find(by_module, "text_encoder")
    audio, cnn = _find(by_module, "audio_encoder"), _find(by_module, "audio_encoder.model.feature_extractor")
    return {
        "train": train,
        "forward": {
            "total": total,
            "text tower": text,
            "audio CNN": cnn,
            "audio transformer": audio - cnn,
            "fusion + head": total - text - audio,
        },
    }


def _find(by_module: dict, suffix: str) -> int:
    matches = [v for k, v in by_module.items() if k.endswith(suffix)]
    return max(matches) if matches else 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="base")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--tokens", type=int, default=20)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(
        f"FlopCounterMode, one training step (forward + backward) on {args.seconds:g} s + {args.tokens} tokens, "
        f"{args.size} size, GFLOP:"
    )
    print(
        "| CNN | forward + backward | forward | text tower (fwd) | audio CNN (fwd) | audio transformer (fwd) | "
        "fusion + head (fwd) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for freeze in (False, True):
        c = count(args.size, freeze, args.seconds, args.tokens, device)
        f = c["forward"]
        print(
            f"| {'frozen' if freeze else 'trainable'} | {c['train'] / 1e9:.1f} | {f['total'] / 1e9:.1f} | "
            f"{f['text tower'] / 1e9:.1f} | {f['audio CNN'] / 1e9:.1f} | {f['audio transformer'] / 1e9:.1f} | "
            f"{f['fusion + head'] / 1e9:.2f} |"
        )


if __name__ == "__main__":
    main()
