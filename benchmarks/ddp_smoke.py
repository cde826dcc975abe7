"""DDP smoke test: a tiny EmotionModel under DistributedDataParallel takes a few training steps on each rank's
own random batch; afterwards every rank must hold identical weights (DDP averaged the gradients).

    torchrun --standalone --nproc_per_node 2 benchmarks/ddp_smoke.py            # NCCL, one GPU per rank
    torchrun --standalone --nproc_per_node 2 benchmarks/ddp_smoke.py --cpu      # gloo on CPU
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from mmemo.bench.train import build_model, plain_step
from mmemo.builders import load_feature_extractor
from mmemo.config import ModelConfig
from mmemo.data.dataset import Collator
from mmemo.data.text import train_wordpiece


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cpu", action="store_true", help="gloo on CPU instead of NCCL on GPUs")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    cuda = not args.cpu
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    torch.manual_seed(rank)  # different initial weights per rank on purpose: DDP must broadcast rank 0's
    model = build_model("tiny", sdpa=True, freeze_cnn=True, vocab_size=500).to(device).train()
    # No unused parameters: layerdrop and SpecAugment are off in the bench sizes, both modalities present.
    ddp = DistributedDataParallel(model, device_ids=[local_rank] if cuda else None)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    rng = np.random.default_rng(100 + rank)  # each rank its own data
    collator = Collator(
        train_wordpiece(["a short sentence", "another one here"], 100), load_feature_extractor(ModelConfig())
    )
    for _ in range(args.steps):
        items = [
            {
                "id": str(i),
                "text": "a short sentence",
                "label": int(rng.integers(4)),
                "audio": rng.normal(0, 0.1, int(rng.uniform(0.5, 1.5) * 16000)).astype(np.float32),
            }
            for i in range(4)
        ]
        loss = plain_step(ddp, optimizer, collator(items), device, bf16=cuda, non_blocking=True)
    flat = torch.cat([p.detach().float().flatten() for p in model.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    spread = max((g - gathered[0]).abs().max().item() for g in gathered)
    ok = spread == 0.0
    if rank == 0:
        print(
            f"DDP smoke ({'nccl' if cuda else 'gloo'}): {world} ranks, {args.steps} steps, last loss "
            f"{loss.item():.3f}, max weight difference across ranks {spread:.2e}: {'OK' if ok else 'FAIL'}"
        )
    dist.destroy_process_group()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
