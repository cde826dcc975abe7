"""torchrun/DDP plumbing for the training recipe: process group, model wrapping (the device rule is `mmemo.device`).

A one-process run passes through every function here unchanged (world size 1).
"""

from __future__ import annotations

import contextlib
import os

import torch

from mmemo.config import Config
from mmemo.model import EmotionModel


def init_distributed(device: str) -> tuple[int, int]:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1); returns (rank, world size).

    NCCL on GPUs, gloo on CPUs. A one-process run does nothing.
    """
    import torch.distributed as dist

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1
    if not dist.is_initialized():
        gpu = device != "cpu" and torch.cuda.is_available()
        dist.init_process_group("nccl" if gpu else "gloo")
    return dist.get_rank(), world_size


def wrap_model(model: EmotionModel, cfg: Config, device: torch.device, world_size: int) -> torch.nn.Module:
    """Apply gradient checkpointing, torch.compile and DDP as configured; returns what the loss step calls.

    DDP needs `find_unused_parameters`: modality dropout (a whole tower unused in a step) and wav2vec2's
    layerdrop leave parameters without gradients.
    """
    if cfg.train.gradient_checkpointing:
        model.text_encoder.gradient_checkpointing(True)
        model.audio_encoder.gradient_checkpointing(True)
    forward = model
    if cfg.train.compile:
        model.text_encoder.disable_masking()  # host-side SpecAugment masks break the graph
        model.audio_encoder.disable_masking()
        forward = torch.compile(model)
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(
            forward, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    return forward


def no_sync(forward: torch.nn.Module, world_size: int, skip: bool):
    """DDP's no_sync() for micro-batches before an accumulation boundary; a no-op otherwise."""
    return forward.no_sync() if skip and world_size > 1 else contextlib.nullcontext()


def barrier(world_size: int) -> None:
    """Wait for every rank (a no-op in a one-process run)."""
    if world_size > 1:
        import torch.distributed as dist

        dist.barrier()
