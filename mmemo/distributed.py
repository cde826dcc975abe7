"""Devices and torchrun/DDP plumbing for the training recipe: device choice, process group, model wrapping.

A one-process run passes through every function here unchanged (world size 1).
"""

from __future__ import annotations

import contextlib
import os

import torch

from mmemo.config import Config
from mmemo.errors import ConfigError
from mmemo.model import EmotionModel


def resolve_device(
    name: str | torch.device, local_rank: int | None = None, *, int8: bool = False, setting: str = "train.device"
) -> torch.device:
    """The one device rule for training, inference and benchmarks.

    "auto" becomes the GPU when torch sees one (the CPU for `int8`: quantized layers run on the CPU only), else
    the CPU. Under torchrun (`local_rank` given) "cuda" and "auto" become this process's GPU, which is also made
    the current one. Any other name is checked as given.

    Args:
        name: "auto", "cpu", "cuda", "cuda:N" or any other torch device name, or a torch.device.
        local_rank: this process's GPU under torchrun; None in a one-process run.
        int8: the model is quantized to int8, so "auto" means the CPU.
        setting: where the name came from, for messages ("train.device" for a config, "--device" for the CLI).

    Returns:
        the torch.device.

    Raises:
        ConfigError: an unknown device name, or a CUDA device this computer does not have.
    """
    if str(name) == "auto":
        name = "cuda" if torch.cuda.is_available() and not int8 else "cpu"
    if str(name) == "cuda" and local_rank is not None:
        name = f"cuda:{local_rank}"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {str(name)!r} in {setting}; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"{setting}={device} but this computer has no CUDA GPU (torch sees none); use {setting}=cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"{setting}={device} but this computer has {torch.cuda.device_count()} CUDA GPU(s), numbered from 0; "
                f"use {setting}=cuda:0"
            )
        if local_rank is not None:
            torch.cuda.set_device(device)
    return device


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
