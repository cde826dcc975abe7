"""The one device rule (`resolve_device`) for training, inference and benchmarks; imports no model."""

from __future__ import annotations

import torch

from mmemo.errors import ConfigError


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
