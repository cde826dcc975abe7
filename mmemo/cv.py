"""Cross-validation: train one model per fold (and seed) and report each fold and the mean ± std.

    results = cross_validate(load_config("quickstart"), "data/emodb.jsonl", folds="fold", seeds=(0, 1, 2))

Folds come from the manifest's `fold` column (`folds="fold"`), from speakers (`"speaker"`: leave one speaker
out) or from K speaker groups (`K`: speakers in sorted order cut into K contiguous, near-equal groups, the same
rule the corpus importers use for `fold`). For fold f the test split is fold f, the validation split (early
stopping and checkpoint choice) is the next fold in order (f+1, wrapping round), and the rest is training data,
so with speaker folds all three splits are speaker-disjoint. Each fold gets its own manifest and one run folder
per seed:

    OUT/
      cv_results.json         per run, per fold, mean/std over all runs, summed confusion matrices
      fold-1/manifest.jsonl   the input rows with `split` rewritten for this fold (absolute audio paths)
      fold-1/seed-0/          a normal `train` run folder (config, metrics, model, report)
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mmemo.config import Config
from mmemo.data.corpora._common import contiguous_folds
from mmemo.data.manifest import label_set, read_manifest, write_manifest
from mmemo.errors import ConfigError, DataError
from mmemo.io import write_json
from mmemo.metrics import CONDITION_NAMES, CONDITIONS, mean_and_std

METRICS = ("wa", "ua", "macro_f1", "weighted_f1")


def assign_folds(rows: list[dict], folds: str | int | None = "fold") -> dict[str, str]:
    """Map each row id to its cross-validation fold.

    Args:
        rows: manifest rows (from `read_manifest`).
        folds: "fold" (the manifest's `fold` column), "speaker" (one fold per speaker), an int K (speakers
            sorted, cut into K contiguous groups named "1".."K"; a digit string counts as K), or None ("fold"
            when every row has one, else "speaker").

    Returns:
        Row id → fold name.

    Raises:
        DataError: `folds="fold"` but some rows have no `fold`, K < 3 or more than the number of speakers,
            or fewer than three folds result (test, valid and train each need one).
    """
    folds = fold_scheme(rows, folds)
    if folds == "fold":
        missing = [r["id"] for r in rows if r["fold"] is None]
        if missing:
            raise DataError(
                f"{len(missing)} row(s) have no `fold` (e.g. {missing[0]!r}); use --folds speaker or "
                "--folds K to group speakers instead"
            )
        fold_of = {r["id"]: r["fold"] for r in rows}
    elif folds == "speaker":
        fold_of = {r["id"]: r["speaker"] for r in rows}
    elif isinstance(folds, int) and not isinstance(folds, bool):
        speakers = {r["speaker"] for r in rows}
        if not 3 <= folds <= len(speakers):
            raise DataError(f"--folds {folds}: K must be between 3 and the number of speakers ({len(speakers)})")
        group = contiguous_folds(speakers, folds)
        fold_of = {r["id"]: group[r["speaker"]] for r in rows}
    else:
        raise ConfigError(f"folds must be 'fold', 'speaker' or a number of speaker groups, got {folds!r}")
    if len(set(fold_of.values())) < 3:
        raise DataError(
            f"only {len(set(fold_of.values()))} fold(s); cross-validation needs at least 3 "
            "(test, valid and train folds)"
        )
    return fold_of


def fold_scheme(rows: list[dict], folds: str | int | None) -> str | int:
    """`folds` as `assign_folds` reads it: None becomes "fold" when every row has one, else "speaker"; "5" becomes 5."""
    if folds is None:
        return "fold" if all(r["fold"] is not None for r in rows) else "speaker"
    return int(folds) if isinstance(folds, str) and folds.isdigit() else folds


def fold_order(names) -> list[str]:
    """Fold names in order: numerically when all are integers ("2" before "10"), else alphabetically."""
    names = set(names)
    return sorted(names, key=int) if all(n.lstrip("-").isdigit() for n in names) else sorted(names)


def fold_splits(rows: list[dict], fold_of: dict[str, str], test_fold: str) -> list[dict]:
    """Copies of `rows` with `split` = test for `test_fold`, valid for the fold after it, train otherwise."""
    order = fold_order(fold_of.values())
    valid_fold = order[(order.index(test_fold) + 1) % len(order)]
    split = {test_fold: "test", valid_fold: "valid"}
    return [{**r, "split": split.get(fold_of[r["id"]], "train")} for r in rows]


def cross_validate(
    cfg: Config,
    manifest: str | os.PathLike,
    folds: str | int | None = "fold",
    seeds: tuple[int, ...] | list[int] = (0,),
    out_dir: str | os.PathLike | None = None,
) -> dict:
    """Train and test one model per fold and seed with `mmemo.train.train`.

    Args:
        cfg: the training recipe; `data.manifest`, `train.output_dir` and `train.seed` are set per run, and an
            empty `model.labels` becomes the manifest's whole label set so every fold scores the same classes.
        manifest: the manifest to cross-validate (its `split` column is ignored).
        folds: see `assign_folds`.
        seeds: one run per seed per fold.
        out_dir: the cross-validation folder (default `cfg.train.output_dir`); it must be empty or missing
            unless `train.overwrite` is true.

    Returns:
        {"manifest", "folds_by", "folds", "seeds", "labels",
         "runs": [per run: fold, seed, valid_fold, test_speakers, shared_speakers, n, best_epoch, run_dir,
                  test: {condition: {wa, ua, macro_f1, weighted_f1, n}}, confusion: {condition: matrix}],
         "fold_means": {fold: {condition: metrics averaged over seeds}},
         "mean" and "std": {condition: {metric: value over all runs}},
         "confusion": {condition: matrix summed over runs (rows gold, columns predicted, in `labels` order)}}.
        The same dict is written to OUT/cv_results.json.

    Raises:
        ConfigError: `out_dir` is not empty and `train.overwrite` is false, or `seeds` is empty.
        DataError: see `assign_folds`; anything `train` raises about a fold's data.
    """
    from mmemo.train import train  # imports torch and transformers; keep `assign_folds` light

    out_dir = Path(out_dir or cfg.train.output_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not cfg.train.overwrite:
        raise ConfigError(
            f"output folder {out_dir} already exists; pass train.overwrite=true or choose another --out-dir"
        )
    if not seeds:
        raise ConfigError("give at least one seed")
    rows = read_manifest(manifest)
    fold_of = assign_folds(rows, folds)
    order = fold_order(fold_of.values())
    labels = list(cfg.model.labels) or label_set(rows)
    model_cfg = dataclasses.replace(cfg.model, labels=labels)

    runs = []
    for i, fold in enumerate(order):
        fold_rows = fold_splits(rows, fold_of, fold)
        speakers = {s: {r["speaker"] for r in fold_rows if r["split"] == s} for s in ("train", "valid", "test")}
        shared = sorted(speakers["test"] & (speakers["train"] | speakers["valid"]))
        if shared:
            tqdm.write(
                f"warning: fold {fold} shares speakers {shared} between test and train/valid; its scores "
                "are not speaker-independent"
            )
        fold_manifest = write_manifest(fold_rows, out_dir / f"fold-{fold}" / "manifest.jsonl")
        for seed in seeds:
            tqdm.write(
                f"cv fold {fold} ({i + 1}/{len(order)}), seed {seed}: test speakers "
                f"{', '.join(sorted(speakers['test']))}"
            )
            run_dir = out_dir / f"fold-{fold}" / f"seed-{seed}"
            run_cfg = dataclasses.replace(
                cfg,
                model=model_cfg,
                data=dataclasses.replace(cfg.data, manifest=str(fold_manifest)),
                train=dataclasses.replace(cfg.train, seed=seed, output_dir=str(run_dir)),
            )
            result = train(run_cfg)
            runs.append(
                {
                    "fold": fold,
                    "seed": seed,
                    "valid_fold": order[(i + 1) % len(order)],
                    "test_speakers": sorted(speakers["test"]),
                    "shared_speakers": shared,
                    "n": {s: sum(r["split"] == s for r in fold_rows) for s in ("train", "valid", "test")},
                    "best_epoch": result["best_epoch"],
                    "run_dir": str(run_dir),
                    "test": {c: {k: m[k] for k in (*METRICS, "n")} for c, m in result["test"].items()},
                    "confusion": {c: m["confusion"] for c, m in result["test"].items()},
                }
            )

    mean, std = _summary([r["test"] for r in runs])
    results = {
        "manifest": str(manifest),
        "folds_by": str(folds),
        "folds": order,
        "seeds": list(seeds),
        "labels": labels,
        "runs": runs,
        "fold_means": {f: _summary([r["test"] for r in runs if r["fold"] == f])[0] for f in order},
        "mean": mean,
        "std": std,
        "confusion": {c: np.sum([r["confusion"][c] for r in runs], axis=0).tolist() for c in CONDITIONS},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_results(results, out_dir / "cv_results.json")
    return results


def write_results(results: dict, path: str | os.PathLike) -> Path:
    """Write cross-validation results as JSON (NaN, e.g. text-only scores without text rows, becomes null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, _nan_to_none(results))
    return path


def format_fold_table(results: dict) -> str:
    """A Markdown table: one row per run (fold, seed), then mean and std rows; WA/UA/macro-F1 per condition."""
    header = ["fold", "seed", "test speakers", "n"]
    header += [f"{CONDITION_NAMES[c]} {k}" for c in CONDITIONS for k in ("WA", "UA", "F1")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 4 + "---:|" * (len(header) - 4)]

    def cells(scores: dict) -> list[str]:
        return [_num(scores[c][k]) for c in CONDITIONS for k in ("wa", "ua", "macro_f1")]

    for run in results["runs"]:
        lines.append(
            "| "
            + " | ".join(
                [
                    run["fold"],
                    str(run["seed"]),
                    " ".join(run["test_speakers"]),
                    str(run["n"]["test"]),
                    *cells(run["test"]),
                ]
            )
            + " |"
        )
    count = len(results["runs"])
    lines.append("| " + " | ".join(["**mean**", "", f"{count} runs", "", *cells(results["mean"])]) + " |")
    lines.append("| " + " | ".join(["std", "", "", "", *cells(results["std"])]) + " |")
    return "\n".join(lines)


def format_confusion(results: dict, condition: str = "both") -> str:
    """The summed confusion matrix of one condition as a Markdown table (rows gold, columns predicted)."""
    labels, matrix = results["labels"], results["confusion"][condition]
    lines = [
        f"| gold \\ predicted ({CONDITION_NAMES[condition]}) | " + " | ".join(labels) + " |",
        "|---|" + "---:|" * len(labels),
    ]
    lines += [f"| {label} | " + " | ".join(str(v) for v in row) + " |" for label, row in zip(labels, matrix)]
    return "\n".join(lines)


def _summary(scores: list[dict]) -> tuple[dict, dict]:
    """({condition: {metric: mean over runs}}, the same with standard deviations); `n` is summed in both."""
    means, stds = {}, {}
    for c in CONDITIONS:
        mean, std = mean_and_std([s[c] for s in scores], METRICS)
        n = int(sum(s[c]["n"] for s in scores))
        means[c], stds[c] = {**mean, "n": n}, {**std, "n": n}
    return means, stds


def _num(value) -> str:
    return "–" if value is None or value != value else f"{value:.3f}"


def _nan_to_none(value):
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value
