"""What a training run reports: the start-of-run header line, report.md and the two figures in the run folder, and
the final model card."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from mmemo.builders import data_name
from mmemo.config import Config
from mmemo.data.dataset import padding_ratio
from mmemo.data.pool import rows_per_corpus
from mmemo.metrics import CONDITION_NAMES, CONDITIONS, format_by_corpus, format_table
from mmemo.model import count_parameters
from mmemo.model_card import ModelCard

if TYPE_CHECKING:
    from mmemo.checkpoint import TrainState
    from mmemo.train import Run


def write_report(
    out_dir: Path,
    cfg: Config,
    labels: list[str],
    history: list[dict],
    best_epoch: int,
    valid: dict,
    test: dict | None,
    calibration: dict,
    by_corpus: dict | None = None,
    refit_of_epoch: int | None = None,
) -> None:
    """report.md, confusion_matrix.png and training_curves.png in the run folder; `by_corpus` ({split: {corpus:
    scores}}, from `mmemo.evaluate.score_by_corpus`) adds a per-corpus table per split when several were pooled.
    `refit_of_epoch`: this run is a refit (`train.refit`) of a first run whose best epoch that was; `valid` is then
    the first run's (the refit trained on those rows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    final = test or valid
    split = "test" if test else "valid"
    trained = f"best epoch {best_epoch} of {len(history)} (by validation UA, {CONDITION_NAMES[cfg.train.monitor]})"
    if refit_of_epoch is not None:
        trained = (
            f"refit on train + valid for {len(history)} epochs, the last kept; the validation scores are the first "
            f"run's (train only, best epoch {refit_of_epoch}), as the refit trained on those rows"
        )
    lines = [
        f"# mmemo run: {out_dir.name}",
        "",
        f"Data: `{data_name(cfg)}`; labels: {', '.join(labels)}; {trained}.",
        "",
        format_table(valid, "## Validation"),
        "",
        format_table(final, f"## {split.capitalize()}") if test else "",
        "",
        *[
            format_by_corpus(scores, f"## {name.capitalize()} by corpus") + "\n"
            for name, scores in (by_corpus or {}).items()
            if scores
        ],
        f"Calibration (temperature scaling on validation, text+audio): T = "
        f"{calibration['temperature']:.3f}, expected calibration error {calibration['ece_before']:.3f} → "
        f"{calibration['ece_after']:.3f}."
        + (f" **Warning:** {calibration['warning']}." if calibration.get("warning") else ""),
        "",
        "![confusion matrix](confusion_matrix.png)",
        "",
        "![training curves](training_curves.png)",
        "",
    ]
    (out_dir / "report.md").write_text("\n".join(lines), encoding="utf-8")

    fig, ax = plt.subplots(figsize=(5, 4.5))
    ConfusionMatrixDisplay(np.array(final["both"]["confusion"]), display_labels=labels).plot(ax=ax, colorbar=False)
    ax.set_title(f"{split}, text+audio (UA {final['both']['ua']:.3f})")
    fig.tight_layout()
    fig.savefig(out_dir / "confusion_matrix.png", dpi=120)
    plt.close(fig)

    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(epochs, [h["train_loss"] for h in history], marker="o")
    left.set(title="training loss", xlabel="epoch")
    for cond in CONDITIONS:
        right.plot(epochs, [h[f"valid_{cond}_ua"] for h in history], marker="o", label=cond)
    right.set(title="validation UA", xlabel="epoch", ylim=(0, 1))
    right.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "training_curves.png", dpi=120)
    plt.close(fig)


def print_header(run: Run) -> None:
    """One line at the start of training: split sizes, labels, parameters, device, padding, modality dropout."""
    sizes = {name: len(loader.dataset) for name, loader in run.loaders.items()}
    sampler = run.loaders["train"].batch_sampler
    pad = padding_ratio(sampler.batches(), sampler.durations)
    tqdm.write(
        f"mmemo train: {sizes} rows, labels {run.recognizer.labels}, "
        f"{count_parameters(run.model) / 1e6:.2f}M parameters "
        f"({count_parameters(run.model, trainable_only=True) / 1e6:.2f}M trainable), device {run.device}, "
        f"padding ratio {pad:.2f}, modality dropout {run.cfg.train.modality_dropout}"
    )
    by_corpus = rows_per_corpus({name: loader.dataset.rows for name, loader in run.loaders.items()})
    if len(by_corpus) > 1:
        listing = "; ".join(
            f"{corpus} " + " ".join(f"{name} {counts.get(name, 0)}" for name in run.loaders)
            for corpus, counts in by_corpus.items()
        )
        tqdm.write(f"corpora ({run.cfg.data.corpus_sampling} sampling): {listing}")


def save_run_config(out_dir: Path, cfg: Config, model_config, resume: bool) -> None:
    """Write the run folder's config.yaml (with the model section as built); a resume with a different config first
    keeps the one the run started with as config.original.yaml (once: later resumes keep the first original)."""
    cfg = copy.deepcopy(cfg)
    cfg.model = model_config
    path, original = out_dir / "config.yaml", out_dir / "config.original.yaml"
    if resume and path.is_file():
        if path.read_text(encoding="utf-8") == cfg.to_yaml():
            return
        if not original.exists():
            path.replace(original)
    cfg.save(path)


def print_calibration(calibration: dict) -> None:
    """One line on the temperature fit, with its warning when the fit ended at a bound."""
    tqdm.write(
        f"calibration: temperature {calibration['temperature']:.3f}, validation ECE "
        f"{calibration['ece_before']:.3f} -> {calibration['ece_after']:.3f}"
        + (f"  WARNING: {calibration['warning']}" if calibration.get("warning") else "")
    )


def print_by_corpus(by_corpus: dict) -> None:
    """The final split's per-corpus table (test, else valid) on the terminal, when several corpora were pooled."""
    split = "test" if by_corpus.get("test") else "valid"
    if by_corpus.get(split):
        tqdm.write(format_by_corpus(by_corpus[split], f"{split} by corpus:"))


def print_epoch(epoch: int, loss: float, valid: dict, by_corpus: dict, monitor: str, improved: bool) -> None:
    """One line per epoch: training loss, validation UA per condition (and per corpus when pooled), * when best."""
    corpora = "".join(f" {name} {scores[monitor]['ua']:.3f}" for name, scores in by_corpus.items())
    tqdm.write(
        f"epoch {epoch}: loss {loss:.4f}  valid UA both {valid['both']['ua']:.3f} "
        f"text {valid['text']['ua']:.3f} audio {valid['audio']['ua']:.3f}"
        + (f"  ({monitor} by corpus:{corpora})" if by_corpus else "")
        + ("  *" if improved else "")
    )


def save_results(
    run: Run,
    state: TrainState,
    valid: dict,
    test: dict | None,
    calibration: dict,
    by_corpus: dict,
    refit_of_epoch: int | None = None,
) -> None:
    """The end of a run on rank 0: the best model saved again with its card (config.json gains the temperature,
    README.md the final scores and calibration), the calibration and per-corpus lines on the terminal, and
    report.md with its figures (`write_report`; `refit_of_epoch` as there)."""
    final = "test" if test else "valid"
    card = ModelCard.from_loaders(
        run.loaders, data_name(run.cfg), test or valid, final, calibration, by_corpus.get(final)
    )
    run.recognizer.save_pretrained(run.out_dir / "model", card=card)
    print_calibration(calibration)
    print_by_corpus(by_corpus)
    write_report(
        run.out_dir,
        run.cfg,
        run.recognizer.labels,
        state.history,
        state.best_epoch,
        valid,
        test,
        calibration,
        by_corpus,
        refit_of_epoch,
    )
