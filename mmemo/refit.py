"""`train.refit`: once early stopping has chosen the epoch count on the valid split (or `train.refit_epochs` has
set it), a second run trains from the same seed on train + valid for that many epochs, and its last epoch becomes
the run's model.

`mmemo.train.train` runs the refit in `<output_dir>/refit/` with `refit_config`, then `adopt_refit` puts its model
and test scores in the first run's place.
"""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

from mmemo.config import Config
from mmemo.errors import ModelLoadError
from mmemo.io import atomic_folder


def refit_config(cfg: Config, epochs: int) -> Config:
    """The refit's config: `cfg` writing to `<output_dir>/refit`, for `epochs` epochs, without early stopping, and
    without checkpoints (a killed refit starts again from its beginning, so they would never be read)."""
    refit_cfg = copy.deepcopy(cfg)
    refit_cfg.train.output_dir = str(Path(cfg.train.output_dir) / "refit")
    refit_cfg.train.epochs, refit_cfg.train.patience, refit_cfg.train.overwrite = epochs, 0, True
    refit_cfg.train.checkpoints = False
    return refit_cfg


def check_resumable(out_dir: str | os.PathLike) -> None:
    """Refuse to resume a run whose refit has finished: its model/ is then the refit's, trained on the valid rows,
    and the first run's best model, which resuming would build on, is gone (a run killed during its refit resumes:
    its refit starts again).

    Raises:
        ModelLoadError: `<out_dir>/refit/report.md` exists.
    """
    if (Path(out_dir) / "refit" / "report.md").is_file():
        raise ModelLoadError(
            f"{out_dir} finished its refit: model/ holds the refit's model (trained on train + valid), not the first "
            "run's best epoch, so the run cannot be resumed or extended; start a new run (another "
            "train.output_dir) with the train.epochs you want"
        )


def adopt_refit(first: dict, refit: dict, main: bool, epochs: int) -> dict:
    """The run's result once its refit has trained: rank 0 (`main`) moves the refit's model over the first run's
    `model_dir` (one copy of the weights on disk, not two) and copies its report.md and confusion matrix (the first
    run's training curves stay); the result has the refit's test scores and the first run's folder, best epoch and
    validation scores (the refit trained on the valid rows).

    Args:
        first: the first run's result (`mmemo.train.train`).
        refit: the refit's result.
        main: this is the process that writes files.
        epochs: the epochs the refit trained.
    """
    if main:
        with atomic_folder(first["model_dir"]) as tmp:
            os.replace(refit["model_dir"], tmp)  # a folder's rename onto an empty one: all or nothing
        for name in ("report.md", "confusion_matrix.png"):  # the run folder describes the model it holds
            shutil.copy2(Path(refit["out_dir"]) / name, Path(first["out_dir"]) / name)
    keep = ("out_dir", "model_dir", "best_epoch", "valid", "valid_by_corpus")
    return {**refit, **{key: first[key] for key in keep}, "refit_epochs": epochs}
