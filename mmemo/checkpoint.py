"""Training checkpoints that survive a kill at any instant, and resume from them.

A checkpoint is a folder `checkpoints/step-NNNNNNN/` holding
    model/              the current model as a model folder (config, safetensors weights, tokenizer, feature
                        extractor), so a resumed run rebuilds exactly what it had
    state.pt            optimizer and scheduler state, torch RNG states (tensors and numbers only:
                        loaded with torch.load(weights_only=True), never unpickled)
    progress.json       epoch, batches done in that epoch, best score so far, history, Python/NumPy RNG states
It is written to a temporary folder and renamed into place; then `checkpoints/latest` (a one-line file naming
it) is replaced atomically; older checkpoints are removed last. A kill at any point leaves `latest`
naming a complete checkpoint.

The training recipe (`mmemo.train`) keeps where it stands in a `TrainState` and checkpoints it with `save_state`.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from mmemo.distributed import barrier
from mmemo.errors import ModelLoadError
from mmemo.io import atomic_folder, atomic_write

if TYPE_CHECKING:
    from mmemo.train import Run


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint so a killed run resumes exactly."""

    epoch: int = 0  # epochs finished
    batch: int = 0  # batches finished in the current epoch
    step: int = 0  # optimizer steps in all (one per train.grad_accum batches, and one at each epoch's end)
    batches_seen: int = 0  # batches trained in all: the progress that modality-dropout schedules see
    epoch_loss: float = 0.0
    epoch_batches: int = 0
    best_ua: float = -1.0
    best_epoch: int = 0
    stale: int = 0
    stopped: bool = False
    skipped: int = 0  # bad clips skipped (data.on_bad_sample: skip) or samples dropped after running out of memory
    history: list = field(default_factory=list)


def save_state(run: Run, state: TrainState) -> None:
    """Checkpoint a training run at `state.step` under `run.out_dir/checkpoints` (rank 0 writes, every rank waits);
    nothing with `train.checkpoints` off."""
    if not run.cfg.train.checkpoints:
        return
    if run.main:
        save_checkpoint(
            run.out_dir / "checkpoints",
            state.step,
            run.recognizer,
            run.optimizer,
            run.scheduler,
            run.generator,
            dataclasses.asdict(state),
        )
    barrier(run.world_size)


def save_checkpoint(
    folder: Path, step: int, recognizer, optimizer, scheduler, generator: torch.Generator, progress: dict
) -> Path:
    """Write checkpoint `step` under `folder` atomically and point `folder/latest` at it."""
    target = folder / f"step-{step:07d}"
    with atomic_folder(target) as tmp:
        recognizer.save_pretrained(tmp / "model")
        state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "generator": generator.get_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
        torch.save(state, tmp / "state.pt")
        numpy_state = np.random.get_state()
        progress = {
            **progress,
            "step": step,
            "python_rng": _to_lists(random.getstate()),
            "numpy_rng": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
        }
        (tmp / "progress.json").write_text(json.dumps(progress), encoding="utf-8")
    with atomic_write(folder / "latest", "w", encoding="utf-8") as f:
        f.write(target.name + "\n")
    for old in folder.iterdir():
        if old != target and old.name not in ("latest",) and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return target


def latest_checkpoint(folder: Path) -> Path:
    """The checkpoint folder `folder/latest` names.

    Raises:
        ModelLoadError: there is no complete checkpoint under `folder`.
    """
    pointer = folder / "latest"
    if not pointer.is_file():
        raise ModelLoadError(
            f"no checkpoint to resume from in {folder} (a run writes its first one at the end "
            "of epoch 1, or every train.checkpoint_every steps, unless train.checkpoints is false); start the run "
            "without --resume"
        )
    target = folder / pointer.read_text(encoding="utf-8").strip()
    if not (target / "progress.json").is_file():
        raise ModelLoadError(f"checkpoint {target} is incomplete; start the run again without --resume")
    return target


def load_checkpoint(target: Path, optimizer, scheduler, generator: torch.Generator) -> dict:
    """Restore optimizer, scheduler and RNG states from checkpoint folder `target`; returns its progress dict.

    `scheduler` must be a LambdaLR built for this run: its step count is restored and the optimizer's learning
    rates are set to its value at that step. The model itself is loaded from `target/model` with `EmotionRecognizer.from_pretrained`.
    """
    state = torch.load(target / "state.pt", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    # The step count comes from the checkpoint, the schedule's shape from this run (a LambdaLR saves no function),
    # so a resume with more train.epochs continues on the longer schedule. The optimizer state still holds the
    # LR the old schedule gave at this step (0.0 at the end of a finished run): set this schedule's instead.
    for group, base_lr, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True):
        group["lr"] = base_lr * factor(scheduler.last_epoch)
    torch.set_rng_state(state["torch_rng"])
    generator.set_state(state["generator"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    progress = json.loads((target / "progress.json").read_text(encoding="utf-8"))
    random.setstate(_to_tuples(progress.pop("python_rng")))
    kind, keys, *rest = progress.pop("numpy_rng")
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    return progress


def _to_lists(value):
    return [_to_lists(v) for v in value] if isinstance(value, (tuple, list)) else value


def _to_tuples(value):
    return tuple(_to_tuples(v) for v in value) if isinstance(value, list) else value
