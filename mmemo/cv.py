"""Cross-validation: train one model per fold (and seed) and report each fold and the mean ± std.

    results = cross_validate(load_config("quickstart"), "data/emodb.jsonl", folds="fold", seeds=(0, 1, 2))
    results = cross_validate(load_config("pooled.yaml"), folds="corpus")  # leave one corpus out

Folds come from the manifest's `fold` column (`folds="fold"`), from speakers (`"speaker"`: leave one speaker
out), from K speaker groups (`K`: speakers in sorted order cut into K contiguous, near-equal groups, the same
rule the corpus importers use for `fold`) or from corpora (`"corpus"`: leave one corpus out). For fold f the
test split is fold f, the validation split (early stopping and checkpoint choice) is the next fold in order
(f+1, wrapping round), and the rest is training data, so with speaker folds all three splits are
speaker-disjoint. Leaving a corpus out is the field's cross-corpus test: every row of the held-out corpus is
test, the other corpora keep their own `valid` rows for validation and train on all the rest (`corpus_splits`).

Without a manifest argument the config's data is cross-validated: `data.manifest`, or the pooled corpora of
`data.manifests` (each through its label map, see `mmemo.data.pool`). Each fold gets its own manifest(s) and
one run folder per seed:

    OUT/
      cv_results.json         per run, per fold, mean/std over all runs, summed confusion matrices, per corpus
      fold-1/manifest.jsonl   the input rows with `split` rewritten for this fold (absolute audio paths)
      fold-1/<corpus>.jsonl   with data.manifests: each corpus's own rows (labels as in its manifest), split
                              rewritten; the fold's run lists them in data.manifests with the same label maps
      fold-1/seed-0/          a `train` run folder (config, metrics, model, report) without checkpoints
                              (train.checkpoints false): a cv run is never resumed

With several corpora each run also records its test scores per corpus, and the results their mean ± std over
runs (`corpus_means`, `corpus_std`; `format_corpus_table` prints them).
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
from mmemo.data.pool import corpora_of, corpus_names, read_corpora, read_lone_manifest
from mmemo.errors import ConfigError, DataError
from mmemo.io import write_json
from mmemo.metrics import CONDITION_NAMES, CONDITIONS, SCORE_HEADER, markdown_table, mean_and_std, score_cells

METRICS = ("wa", "ua", "macro_f1", "weighted_f1")


def assign_folds(rows: list[dict], folds: str | int | None = "fold") -> dict[str, str]:
    """Map each row id to its cross-validation fold.

    Args:
        rows: manifest rows (from `read_manifest` or `mmemo.data.pool.read_corpora`).
        folds: "fold" (the manifest's `fold` column), "speaker" (one fold per speaker), an int K (speakers
            sorted, cut into K contiguous groups named "1".."K"; a digit string counts as K), "corpus" (one fold
            per corpus: the rows' `corpus`), or None ("fold" when every row has one, else "speaker").

    Returns:
        Row id → fold name.

    Raises:
        DataError: `folds="fold"` but some rows have no `fold`, `folds="corpus"` but some rows have no `corpus`
            or there is only one corpus, K < 3 or more than the number of speakers, or fewer than three folds
            result (test, valid and train each need one; corpus folds need two, validation comes from the
            training corpora).
    """
    folds = fold_scheme(rows, folds)
    if folds == "corpus":
        return _corpus_folds(rows)
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
        raise ConfigError(f"folds must be 'fold', 'speaker', 'corpus' or a number of speaker groups, got {folds!r}")
    if len(set(fold_of.values())) < 3:
        raise DataError(
            f"only {len(set(fold_of.values()))} fold(s); cross-validation needs at least 3 "
            "(test, valid and train folds)"
        )
    return fold_of


def _corpus_folds(rows: list[dict]) -> dict[str, str]:
    """Row id → its corpus, for leave-one-corpus-out; at least two corpora."""
    missing = [r["id"] for r in rows if not r.get("corpus")]
    if missing:
        raise DataError(
            f"--folds corpus: {len(missing)} row(s) have no corpus (e.g. {missing[0]!r}); list the corpora in the "
            "config's data.manifests, or give the manifest a `corpus` column"
        )
    fold_of = {r["id"]: r["corpus"] for r in rows}
    if len(set(fold_of.values())) < 2:
        raise DataError(
            f"--folds corpus: every row is from corpus {rows[0]['corpus']!r}; leaving one corpus out needs at "
            "least 2 (list them in data.manifests, or use --folds fold, speaker or K)"
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


def corpus_splits(rows: list[dict], held_out: str) -> list[dict]:
    """Copies of `rows` split for leaving corpus `held_out` out: all of its rows test; the other corpora's rows
    keep `valid` where their own split is valid, and the rest of theirs (train and test) become train.

    Raises:
        DataError: the training corpora have no valid rows (early stopping and checkpoint choice need some).
    """
    out = [
        {**r, "split": "test" if r["corpus"] == held_out else "valid" if r["split"] == "valid" else "train"}
        for r in rows
    ]
    if not any(r["split"] == "valid" for r in out):
        training = sorted({r["corpus"] for r in rows} - {held_out})
        raise DataError(
            f"--folds corpus, held-out corpus {held_out!r}: the training corpora ({', '.join(training)}) have no "
            "`valid` rows; leaving a corpus out validates on the other corpora's valid splits, so give at least "
            "one of them some valid rows"
        )
    return out


def fold_plan(rows: list[dict], folds: str | int | None) -> list[tuple[str, str, list[dict]]]:
    """Every fold's test fold, where its validation rows come from, and its rows with `split` rewritten.

    The one definition of the folds that `cross_validate` and `mmemo.baseline.run_baseline` run.

    Args:
        rows: manifest rows; their `split` is ignored, except by corpus folds (see `corpus_splits`).
        folds: see `assign_folds`.

    Returns:
        [(test fold, validation: the next fold's name, or "<corpus>+... valid" for corpus folds, rows)], in
        `fold_order`.

    Raises:
        DataError: see `assign_folds` and `corpus_splits`.
    """
    fold_of = assign_folds(rows, folds)
    order = fold_order(fold_of.values())
    if fold_scheme(rows, folds) != "corpus":
        return [(fold, order[(i + 1) % len(order)], fold_splits(rows, fold_of, fold)) for i, fold in enumerate(order)]
    plans = []
    for corpus in order:
        fold_rows = corpus_splits(rows, corpus)
        valid = sorted({r["corpus"] for r in fold_rows if r["split"] == "valid"})
        plans.append((corpus, "+".join(valid) + " valid", fold_rows))
    return plans


def cv_rows(cfg: Config, manifest: str | os.PathLike | None = None) -> list[dict]:
    """The rows `cross_validate` folds: `manifest`'s, else the config's `data.manifest`, else its corpora pooled
    (`read_corpora`: label-mapped, ids and speakers prefixed when there are several).

    Raises:
        ConfigError: no manifest is given and the config's data is not valid (see `corpora_of`).
        DataError: a manifest is invalid.
    """
    return read_lone_manifest(manifest) if manifest else read_corpora(corpora_of(cfg.data))


def cross_validate(
    cfg: Config,
    manifest: str | os.PathLike | None = None,
    folds: str | int | None = "fold",
    seeds: tuple[int, ...] | list[int] = (0,),
    out_dir: str | os.PathLike | None = None,
    teacher: str | os.PathLike | None = None,
) -> dict:
    """Train and test one model per fold and seed with `mmemo.train.train`.

    Args:
        cfg: the training recipe; its data (`data.manifest` or `data.manifests`), `train.output_dir` and
            `train.seed` are set per run, and an empty `model.labels` becomes the data's whole (label-mapped)
            label set so every fold scores the same classes.
        manifest: the manifest to cross-validate (its `split` column is ignored); None: the config's data, one
            manifest or the pooled corpora of `data.manifests`.
        folds: see `assign_folds`.
        seeds: one run per seed per fold.
        out_dir: the cross-validation folder (default `cfg.train.output_dir`); it must be empty or missing
            unless `train.overwrite` is true.
        teacher: a teacher's cross-validation folder: each run distils from the teacher's model of the same fold
            (`mmemo.distil.fold_teacher`: same seed where it has one, every row split alike, else a DataError).

    Returns:
        {"manifest", "corpora", "folds_by", "folds", "seeds", "labels",
         "runs": [per run: fold, seed, valid_fold, test_speakers (held_out_corpus with corpus folds),
                  shared_speakers, n, best_epoch, run_dir, test: {condition: {wa, ua, macro_f1, weighted_f1, n}},
                  confusion: {condition: matrix}, and with several corpora test_by_corpus: {corpus: test}],
         "fold_means": {fold: {condition: metrics averaged over seeds}},
         "mean" and "std": {condition: {metric: value over all runs}},
         "confusion": {condition: matrix summed over runs (rows gold, columns predicted, in `labels` order)},
         and when the test rows span several corpora "corpus_means" and "corpus_std":
         {corpus: {condition: {metric: value over the runs that tested it}}}}.
        The same dict is written to OUT/cv_results.json.

    Raises:
        ConfigError: `out_dir` is not empty and `train.overwrite` is false, or `seeds` is empty; the config's
            data is not valid (see `mmemo.data.pool.corpora_of`).
        DataError: see `fold_plan`; anything `train` raises about a fold's data.
    """
    from mmemo.distil import fold_teacher  # these import torch and transformers; keep `assign_folds` light
    from mmemo.train import train

    out_dir = Path(out_dir or cfg.train.output_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not cfg.train.overwrite:
        raise ConfigError(
            f"output folder {out_dir} already exists; pass train.overwrite=true or choose another --out-dir"
        )
    if not seeds:
        raise ConfigError("give at least one seed")
    rows = cv_rows(cfg, manifest)
    # data.manifests: each fold rewrites every corpus's own manifest, so its run maps and prefixes them as usual
    corpora = None if manifest or cfg.data.manifest else corpora_of(cfg.data)
    raw = {c.name: read_manifest(c.path) for c in corpora or ()}
    plans = fold_plan(rows, folds)
    by_corpus = fold_scheme(rows, folds) == "corpus"
    names = corpus_names(rows)
    pooled = len(names) > 1
    order = [fold for fold, _, _ in plans]
    labels = list(cfg.model.labels) or label_set(rows)
    model_cfg = dataclasses.replace(cfg.model, labels=labels)

    # every fold's teacher found and checked before the first run trains
    teachers = {(f, s): str(fold_teacher(teacher, f, s, r)) for f, _, r in plans for s in seeds} if teacher else {}
    runs = []
    for i, (fold, valid_fold, fold_rows) in enumerate(plans):
        speakers = {s: {r["speaker"] for r in fold_rows if r["split"] == s} for s in ("train", "valid", "test")}
        shared = sorted(speakers["test"] & (speakers["train"] | speakers["valid"]))
        if shared:
            tqdm.write(
                f"warning: fold {fold} shares speakers {shared} between test and train/valid; its scores "
                "are not speaker-independent"
            )
        data = _write_fold_data(fold_rows, corpora, raw, out_dir / f"fold-{fold}")
        test_corpora = corpus_names([r for r in fold_rows if r["split"] == "test"])
        tested = f"held-out corpus {fold}" if by_corpus else f"test speakers {', '.join(sorted(speakers['test']))}"
        for seed in seeds:
            tqdm.write(f"cv fold {fold} ({i + 1}/{len(order)}), seed {seed}: {tested}")
            run_dir = out_dir / f"fold-{fold}" / f"seed-{seed}"
            run_teacher = teachers.get((fold, seed), cfg.train.teacher)
            run_cfg = dataclasses.replace(
                cfg,
                model=model_cfg,
                data=dataclasses.replace(cfg.data, **data),
                # a cv run is never resumed: no training state (a second copy of the weights, with the optimizer's)
                train=dataclasses.replace(
                    cfg.train, seed=seed, output_dir=str(run_dir), teacher=run_teacher, checkpoints=False
                ),
            )
            result = train(run_cfg)
            run = {
                "fold": fold,
                "seed": seed,
                "valid_fold": valid_fold,
                **({"held_out_corpus": fold} if by_corpus else {"test_speakers": sorted(speakers["test"])}),
                "shared_speakers": shared,
                "n": {s: sum(r["split"] == s for r in fold_rows) for s in ("train", "valid", "test")},
                "best_epoch": result["best_epoch"],
                "run_dir": str(run_dir),
                **({"teacher": run_teacher} if run_teacher else {}),
                "test": _scores(result["test"]),
                "confusion": {c: m["confusion"] for c, m in result["test"].items()},
            }
            if pooled:
                # train reports per corpus only when its test rows span several; one corpus's scores are the test's
                found = result.get("test_by_corpus") or (
                    {test_corpora[0]: result["test"]} if len(test_corpora) == 1 else {}
                )
                run["test_by_corpus"] = {name: _scores(scores) for name, scores in found.items()}
            runs.append(run)

    mean, std = condition_summary([r["test"] for r in runs])
    results = {
        "manifest": str(manifest or cfg.data.manifest or ""),
        "corpora": names if pooled else [],
        "folds_by": str(folds),
        "folds": order,
        "seeds": list(seeds),
        "labels": labels,
        "runs": runs,
        "fold_means": {f: condition_summary([r["test"] for r in runs if r["fold"] == f])[0] for f in order},
        "mean": mean,
        "std": std,
        "confusion": {c: np.sum([r["confusion"][c] for r in runs], axis=0).tolist() for c in CONDITIONS},
        **corpus_summary(runs),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_results(results, out_dir / "cv_results.json")
    return results


def _write_fold_data(fold_rows: list[dict], corpora, raw: dict[str, list[dict]], fold_dir: Path) -> dict:
    """Write one fold's manifest(s); returns the DataConfig fields (`manifest`, `manifests`) that point at them,
    absolute (a run's config.yaml then reads its data from any folder, as a distillation teacher's must).

    With `corpora` (the config's data.manifests) each corpus's raw rows (`raw`, labels as in its own manifest)
    are written with the fold's splits, and the entries keep their names, label maps and weights: the fold's run
    reads them exactly as a normal run does. Rows a label map drops are not in `fold_rows`; they get "train"
    and are dropped again.
    """
    if corpora is None:
        return {"manifest": str(write_manifest(fold_rows, fold_dir / "manifest.jsonl").resolve()), "manifests": []}
    split_of = {r["id"]: r["split"] for r in fold_rows}
    prefix = len(corpora) > 1  # read_corpora's ids: "name/id" when pooled
    entries = []
    for corpus in corpora:
        rows = [
            {**r, "split": split_of.get(f"{corpus.name}/{r['id']}" if prefix else r["id"], "train")}
            for r in raw[corpus.name]
        ]
        path = write_manifest(rows, fold_dir / f"{corpus.name}.jsonl").resolve()
        entry = {"path": str(path), "name": corpus.name, "label_map": dict(corpus.label_map)}
        entries.append({**entry, "weight": corpus.weight} if corpus.weight != 1.0 else entry)
    return {"manifest": "", "manifests": entries}


def condition_summary(scores: list[dict]) -> tuple[dict, dict]:
    """Mean and spread of several runs' scores, per condition (cross-validation's and the baseline's summary).

    Args:
        scores: one {condition: metrics} per run (`classification_metrics` under each condition).

    Returns:
        ({condition: {metric: mean over runs}}, the same with standard deviations); `n` is summed in both.
    """
    means, stds = {}, {}
    for c in CONDITIONS:
        mean, std = mean_and_std([s[c] for s in scores], METRICS)
        n = int(sum(s[c]["n"] for s in scores))
        means[c], stds[c] = {**mean, "n": n}, {**std, "n": n}
    return means, stds


def corpus_summary(runs: list[dict]) -> dict:
    """{"corpus_means", "corpus_std"}: {corpus: {condition: {metric}}} over the runs that tested each corpus
    (`n` summed), or {} when the runs' test rows are from fewer than two corpora."""
    names = sorted({name for run in runs for name in run.get("test_by_corpus", {})})
    if len(names) < 2:
        return {}
    means, stds = {}, {}
    for name in names:
        means[name], stds[name] = condition_summary(
            [r["test_by_corpus"][name] for r in runs if name in r["test_by_corpus"]]
        )
    return {"corpus_means": means, "corpus_std": stds}


def _scores(metrics: dict) -> dict:
    """{condition: metrics} as results keep them: the headline scores and n (no confusion, no per-class)."""
    return {c: {k: m[k] for k in (*METRICS, "n")} for c, m in metrics.items()}


def write_results(results: dict, path: str | os.PathLike) -> Path:
    """Write cross-validation results as JSON (NaN, e.g. text-only scores without text rows, becomes null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, results)
    return path


def format_fold_table(results: dict) -> str:
    """A Markdown table: one row per run (fold, seed), then mean and std rows; WA/UA/macro-F1 per condition.

    With corpus folds the first column is the held-out corpus and there is no speaker column: the table is then
    the per-corpus (cross-corpus) table.
    """
    by_corpus = results["folds_by"] == "corpus"
    lead = ["held-out corpus", "seed", "n"] if by_corpus else ["fold", "seed", "test speakers", "n"]
    rows = []
    for run in results["runs"]:
        speakers = [] if by_corpus else [" ".join(run["test_speakers"])]
        rows.append([run["fold"], str(run["seed"]), *speakers, str(run["n"]["test"]), *score_cells(run["test"])])
    count, blank = len(results["runs"]), [""] * (len(lead) - 3)
    rows.append(["**mean**", "", f"{count} runs", *blank, *score_cells(results["mean"])])
    rows.append(["std", "", "", *blank, *score_cells(results["std"])])
    return markdown_table(lead + SCORE_HEADER, rows, text_columns=len(lead))


def format_corpus_table(results: dict) -> str:
    """A Markdown table of the test scores per corpus, mean ± std over the runs that tested it; "" when the test
    rows are from one corpus, or the folds are corpora (then `format_fold_table` already is this table).

    n is the corpus's test rows per seed (text+audio).
    """
    means, stds = results.get("corpus_means"), results.get("corpus_std")
    if not means or results["folds_by"] == "corpus":
        return ""
    seeds = max(len(results["seeds"]), 1)
    rows = [[name, str(mean["both"]["n"] // seeds), *score_cells(mean, stds[name])] for name, mean in means.items()]
    return markdown_table(["corpus", "n", *SCORE_HEADER], rows)


def format_confusion(results: dict, condition: str = "both") -> str:
    """The summed confusion matrix of one condition as a Markdown table (rows gold, columns predicted)."""
    labels, matrix = results["labels"], results["confusion"][condition]
    lines = [
        f"| gold \\ predicted ({CONDITION_NAMES[condition]}) | " + " | ".join(labels) + " |",
        "|---|" + "---:|" * len(labels),
    ]
    lines += [f"| {label} | " + " | ".join(str(v) for v in row) + " |" for label, row in zip(labels, matrix)]
    return "\n".join(lines)
