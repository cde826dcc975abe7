"""EmoDB 5-fold speaker cross-validation with a small from-scratch model (configs/emodb_cv.yaml).

    python benchmarks/emodb_cv.py [EMODB_ROOT] [--variant audio_only] [--json results.json] [--out-dir DIR] [key=value ...]

EMODB_ROOT defaults to ../shared/data/emodb (next to the repository). The importer's `fold` column (five
gender-balanced speaker pairs) gives the folds; each fold is tested once, validated on the next fold and
trained on the other three. The corpus is read where it lies; only its manifest is written, into the run folder.
EmoDB's transcripts are ten fixed sentences spoken in every emotion, so audio carries the emotion and text-only
scores sit at chance (1/7 UA). `--variant` trains one of `mmemo ablate`'s variants instead of the config as
given (joint_md), e.g. `audio_only` for the dedicated audio model that the joint model's audio-only view is
measured against.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mmemo.ablate import VARIANTS, variant_config
from mmemo.config import load_config
from mmemo.cv import cross_validate, format_confusion, format_fold_table, write_results
from mmemo.data.corpora import prepare

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "args",
        nargs="*",
        metavar="[EMODB_ROOT] [key=value ...]",
        help="the EmoDB release folder (holds wav/; default ../shared/data/emodb) and config "
        "overrides such as train.epochs=10",
    )
    parser.add_argument("--config", default="emodb_cv", help="a YAML file or preset (default emodb_cv)")
    parser.add_argument(
        "--variant",
        default="joint_md",
        choices=list(VARIANTS),
        help="which `mmemo ablate` variant to train (default joint_md: the config as given)",
    )
    parser.add_argument("--out-dir", default=None, help="default runs/emodb_cv, or runs/emodb_cv_VARIANT")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    overrides = [a for a in args.args if "=" in a]
    roots = [a for a in args.args if "=" not in a] or [str(REPO.parent / "shared" / "data" / "emodb")]
    if len(roots) > 1:
        parser.error(f"one EMODB_ROOT, got {roots}")

    out_dir = Path(args.out_dir or ("runs/emodb_cv" if args.variant == "joint_md" else f"runs/emodb_cv_{args.variant}"))
    cfg = load_config(args.config, ["train.overwrite=true", *overrides])
    if args.variant != "joint_md":
        cfg = variant_config(cfg, args.variant, cfg.train.seed, out_dir)
    manifest = out_dir.parent / f"{out_dir.name}_manifest.jsonl"
    rows = prepare("emodb", roots[0], output=manifest, overwrite=True)
    print(f"EmoDB: {len(rows)} rows, {len({r['speaker'] for r in rows})} speakers -> {manifest}", flush=True)

    start = time.time()
    results = cross_validate(cfg, manifest, folds="fold", seeds=tuple(args.seeds), out_dir=out_dir)
    minutes = (time.time() - start) / 60
    print(f"\nEmoDB {len(results['folds'])}-fold speaker CV, variant {args.variant}, {minutes:.1f} min\n")
    print(format_fold_table(results))
    print()
    print(format_confusion(results, "audio"))
    if args.json:
        write_results({**results, "variant": args.variant, "minutes": round(minutes, 2)}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
