"""EmoDB 5-fold speaker cross-validation with a small from-scratch model (configs/emodb_cv.yaml).

    python benchmarks/emodb_cv.py [EMODB_ROOT] [--variant audio_only] [--seeds 0 1 2] [--baseline]
                                  [--json results.json] [--out-dir DIR] [key=value ...]

EMODB_ROOT defaults to ../shared/data/emodb (next to the repository). The importer's `fold` column (five
gender-balanced speaker pairs) gives the folds; each fold is tested once, validated on the next fold and
trained on the other three. The corpus is read where it lies; only its manifest is written, into the run folder.
EmoDB's transcripts are ten fixed sentences spoken in every emotion, so audio carries the emotion and text-only
scores sit at chance (1/7 UA). `--variant` trains one of `mmemo ablate`'s variants instead of the config as
given (joint_md), e.g. `audio_only` for the dedicated audio model that the joint model's audio-only view is
measured against. `--baseline` also scores the classical baseline (`mmemo baseline`: acoustic functionals /
TF-IDF + logistic regression, plain and speaker-normalised) on the same folds and prints its tables.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from emodb_args import emodb_parser, root_and_overrides

from mmemo.ablate import VARIANTS, variant_config
from mmemo.config import load_config
from mmemo.cv import cross_validate, format_confusion, format_fold_table, write_results
from mmemo.data.corpora import prepare


def main(argv: list[str] | None = None) -> int:
    parser = emodb_parser(__doc__.split("\n\n")[0])
    parser.add_argument(
        "--variant",
        default="joint_md",
        choices=list(VARIANTS),
        help="which `mmemo ablate` variant to train (default joint_md: the config as given)",
    )
    parser.add_argument("--out-dir", default=None, help="default runs/emodb_cv, or runs/emodb_cv_VARIANT")
    args = parser.parse_args(argv)
    root, overrides = root_and_overrides(parser, args)

    out_dir = Path(args.out_dir or ("runs/emodb_cv" if args.variant == "joint_md" else f"runs/emodb_cv_{args.variant}"))
    cfg = load_config(args.config, ["train.overwrite=true", *overrides])
    if args.variant != "joint_md":
        cfg = variant_config(cfg, args.variant, cfg.train.seed, out_dir)
    manifest = out_dir.parent / f"{out_dir.name}_manifest.jsonl"
    rows = prepare("emodb", root, output=manifest, overwrite=True)
    print(f"EmoDB: {len(rows)} rows, {len({r['speaker'] for r in rows})} speakers -> {manifest}", flush=True)

    start = time.time()
    results = cross_validate(cfg, manifest, folds="fold", seeds=tuple(args.seeds), out_dir=out_dir)
    minutes = (time.time() - start) / 60
    print(f"\nEmoDB {len(results['folds'])}-fold speaker CV, variant {args.variant}, {minutes:.1f} min\n")
    print(format_fold_table(results))
    print()
    print(format_confusion(results, "audio"))
    extra = {"variant": args.variant, "minutes": round(minutes, 2)}
    if args.baseline:
        from mmemo.baseline import run_baseline

        for speaker_norm in (False, True):
            baseline = run_baseline(manifest, folds="fold", speaker_norm=speaker_norm, cache_dir=cfg.data.cache_dir)
            name = "baseline_speaker_norm" if speaker_norm else "baseline"
            extra[name] = {k: baseline[k] for k in ("mean", "std", "fold_means", "seconds")}
            print(
                f"\nClassical baseline{' (speaker-normalised)' if speaker_norm else ''}, same folds, "
                f"{baseline['seconds']:.0f} s\n"
            )
            print(format_fold_table(baseline))
    if args.json:
        write_results({**results, **extra}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
