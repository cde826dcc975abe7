"""A backward pass that survives running out of memory: the batch is split in halves instead of lost.

`mmemo.train` runs every batch's backward through `backward_splitting`, so a batch that happens to hold the longest
clips of the epoch costs a warning and a slower step rather than the run.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from mmemo.data.dataset import split_batch


def backward_splitting(
    loss_of: Callable[[dict], torch.Tensor], batch: dict, weight: float, device: torch.device
) -> tuple[float | None, int]:
    """Backward `loss_of(batch) * weight`, adding to the gradients; on out-of-memory split the batch in halves (down
    to single samples, skipped with a warning) and accumulate their gradients, so no sample is silently lost.

    Args:
        loss_of: the loss step on a batch (a batch's mean loss, a scalar tensor).
        batch: a collated batch (`mmemo.data.dataset.Collator`), on the host.
        weight: the batch's share of the optimizer step's gradient (1 / train.grad_accum for a whole batch).
        device: where the model runs; on CUDA the allocator's cache is emptied before retrying.

    Returns:
        (the weighted loss, or None when every sample was skipped; the number of samples skipped).
    """
    try:
        loss = loss_of(batch)
        (loss * weight).backward()
        return loss.item() * weight, 0
    except torch.OutOfMemoryError:
        size = len(batch["ids"])
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if size == 1:
            warnings.warn(f"out of memory on a single sample ({batch['ids'][0]}); skipped it")
            return None, 1
        warnings.warn(f"out of memory on a batch of {size}; retrying it as two halves")
        halves = [split_batch(batch, part) for part in (slice(0, size // 2), slice(size // 2, size))]
        results = [backward_splitting(loss_of, half, weight * len(half["ids"]) / size, device) for half in halves]
        kept = [loss for loss, _ in results if loss is not None]
        return (sum(kept) if kept else None), sum(skipped for _, skipped in results)
