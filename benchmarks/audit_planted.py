"""How many planted label errors does `mmemo data audit` find on EmoDB? Flip labels on purpose, audit, count.

    python benchmarks/audit_planted.py [EMODB_ROOT] [--rate 0.1] [--top 0.15] [--seeds 0 1 2] [--json out.json]
                                       [--folds fold] [--modality both] [--cache-dir ~/.cache/mmemo/audio]

EMODB_ROOT defaults to ../shared/data/emodb (next to the repository). For each seed, a fraction `--rate` of the
rows (chosen with that seed) gets a different label, chosen uniformly among the other six; the manifest with the
flips is audited with the out-of-fold baseline (`audit_manifest`, the code `mmemo data audit` runs), ranked both
by self-confidence and by margin. Reported per ranking: precision and recall of the flipped rows within the top
`--top` fraction of the ranking (a random ranking has precision = rate, recall = top), and of the suspect flag.
The unflipped corpus is audited too: its suspects are rows the baseline disagrees with before any flip (EmoDB's
own hard or ambiguous recordings, and the baseline's errors). Decoded clips and their functionals are cached
(`--cache-dir`), so a rerun costs the logistic regressions only (seconds).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mmemo.audit import RANK_BY, audit_manifest
from mmemo.data.corpora import prepare
from mmemo.data.manifest import label_set, write_manifest

REPO = Path(__file__).resolve().parent.parent


def plant_flips(rows: list[dict], rate: float, seed: int) -> tuple[list[dict], set[str]]:
    """Copies of `rows` with round(rate × len) labels changed to another label (seeded); returns the flipped ids."""
    labels = label_set(rows)
    rng = random.Random(seed)
    rows = [dict(r) for r in rows]
    chosen = rng.sample(range(len(rows)), round(rate * len(rows)))
    for i in chosen:
        rows[i]["label"] = rng.choice([label for label in labels if label != rows[i]["label"]])
    return rows, {rows[i]["id"] for i in chosen}


def score(report, flipped: set[str], top: float) -> dict:
    """Precision/recall of the flipped rows in the top fraction of the ranking and among the flagged suspects."""
    k = round(top * len(report.ranked))
    hits = len(flipped & {r["id"] for r in report.ranked[:k]})
    flagged = {r["id"] for r in report.suspects}
    found = len(flipped & flagged)
    return {
        "top_k": k,
        "top_hits": hits,
        "top_precision": hits / k,
        "top_recall": hits / len(flipped),
        "suspects": len(flagged),
        "suspect_precision": found / len(flagged) if flagged else float("nan"),
        "suspect_recall": found / len(flipped),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", default=str(REPO.parent / "shared" / "data" / "emodb"))
    parser.add_argument("--rate", type=float, default=0.1, help="fraction of rows whose label is flipped")
    parser.add_argument("--top", type=float, default=0.15, help="fraction of the ranking that is scored")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one set of flips per seed")
    parser.add_argument("--folds", default=None, help="as `mmemo data audit --folds` (default: the fold column)")
    parser.add_argument("--modality", default="both", choices=["both", "audio", "text"])
    parser.add_argument("--cache-dir", default="~/.cache/mmemo/audio", help="decoded clips and functionals")
    parser.add_argument("--jobs", type=int, default=2, help="processes extracting functionals on the first run")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    options = {"folds": args.folds, "condition": args.modality, "cache_dir": args.cache_dir, "n_jobs": args.jobs}

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows = prepare("emodb", args.root, output=Path(tmp) / "emodb.jsonl")
        clean = audit_manifest(Path(tmp) / "emodb.jsonl", **options)
        print(f"EmoDB: {len(rows)} rows; {clean.source}")
        print(f"unflipped corpus: {len(clean.suspects)} suspects ({len(clean.suspects) / len(rows):.1%})\n")
        runs = []
        for seed in args.seeds:
            flipped_rows, flipped = plant_flips(rows, args.rate, seed)
            manifest = write_manifest(flipped_rows, Path(tmp) / f"flipped-{seed}.jsonl")
            for rank_by in RANK_BY:
                report = audit_manifest(manifest, rank_by=rank_by, **options)
                runs.append(
                    {"seed": seed, "rank_by": rank_by, "flipped": len(flipped), **score(report, flipped, args.top)}
                )

    keys = ("top_precision", "top_recall", "suspect_precision", "suspect_recall", "suspects")
    mean = {
        rank_by: {k: float(np.mean([r[k] for r in runs if r["rank_by"] == rank_by])) for k in keys}
        for rank_by in RANK_BY
    }
    top = f"top {args.top:.0%}"
    print(f"| seed | ranking | flipped | {top} hits | {top} precision | {top} recall | suspects | precision | recall |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        print(
            f"| {r['seed']} | {r['rank_by']} | {r['flipped']} | {r['top_hits']}/{r['top_k']} | "
            f"{r['top_precision']:.3f} | {r['top_recall']:.3f} | {r['suspects']} | {r['suspect_precision']:.3f} | "
            f"{r['suspect_recall']:.3f} |"
        )
    for rank_by, m in mean.items():
        print(
            f"| **mean** | {rank_by} | | | {m['top_precision']:.3f} | {m['top_recall']:.3f} | {m['suspects']:.0f} | "
            f"{m['suspect_precision']:.3f} | {m['suspect_recall']:.3f} |"
        )
    seconds = time.perf_counter() - started
    print(f"\nrandom ranking: {top} precision {args.rate:.3f}, recall {args.top:.3f}; {seconds:.0f} s in all")
    if args.json:
        results = {
            "corpus": "emodb",
            "rows": len(rows),
            "source": clean.source,
            "rate": args.rate,
            "top": args.top,
            "seeds": args.seeds,
            "unflipped_suspects": len(clean.suspects),
            "runs": runs,
            "mean": mean,
            "seconds": round(seconds, 1),
        }
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
