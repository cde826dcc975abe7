"""Does the pooled audit (`mmemo data audit CONFIG.yaml`) point at the corpus with the label errors? EmoDB as two.

    python benchmarks/audit_pooled.py [EMODB_ROOT] [--flip male|female] [--rate 0.1] [--seed 0] [--top 0.15]
                                      [--cache-dir ~/.cache/mmemo/audio] [--json out.json]

EMODB_ROOT is the EmoDB release (default ../shared/data/emodb next to the repository), imported as
`mmemo prepare emodb` does. Its speakers are split into two pseudo-corpora, male (03 10 11 12 15) and female (08 09 13 14 16), pooled by a
config with two `data.manifests`; a fraction `--rate` of ONE corpus's rows (`--flip`, chosen with `--seed`)
gets another label (`audit_planted.plant_flips`). The pool is audited with the out-of-fold baseline
(`audit_manifest`, the code the CLI runs) under three fold schemes: the `fold` column (the default: EmoDB's
speaker pairs, one speaker of each corpus per fold), one fold per speaker, and leave one corpus out. Reported:
recall and precision of the flips in the top `--top` of the pooled ranking, and each corpus's suspect rate, with
the unflipped pool's rates beside them (the two corpora differ before any flip).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml
from audit_planted import plant_flips, score

from mmemo.audit import audit_manifest
from mmemo.data.corpora import prepare
from mmemo.data.manifest import write_manifest

REPO = Path(__file__).resolve().parent.parent
SPEAKERS = {"male": ("03", "10", "11", "12", "15"), "female": ("08", "09", "13", "14", "16")}
FOLDS = (None, "speaker", "corpus")


def rates(report) -> dict[str, float]:
    """Each corpus's share of suspects among its scored rows."""
    out = {}
    for name in report.corpora:
        flags = [r["suspect"] for r in report.ranked if r["corpus"] == name]
        out[name] = sum(flags) / len(flags)
    return out


def write_pool(rows: list[dict], folder: Path, tag: str) -> Path:
    """The two pseudo-corpora's manifests and a config pooling them; returns the config."""
    entries = []
    for name, speakers in SPEAKERS.items():
        part = [r for r in rows if r["speaker"] in speakers]
        entries.append({"path": str(write_manifest(part, folder / f"{tag}-{name}.jsonl")), "name": name})
    config = folder / f"{tag}.yaml"
    config.write_text(yaml.safe_dump({"data": {"manifests": entries}}), encoding="utf-8")
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", default=str(REPO.parent / "shared" / "data" / "emodb"))
    parser.add_argument("--flip", default="male", choices=sorted(SPEAKERS), help="the corpus whose labels flip")
    parser.add_argument("--rate", type=float, default=0.1, help="fraction of that corpus's rows flipped")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top", type=float, default=0.15, help="fraction of the pooled ranking that is scored")
    parser.add_argument("--cache-dir", default="~/.cache/mmemo/audio", help="decoded clips and functionals")
    parser.add_argument("--jobs", type=int, default=2, help="processes extracting functionals on the first run")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows = prepare("emodb", args.root, output=Path(tmp) / "emodb.jsonl")
    flip_rows = [r for r in rows if r["speaker"] in SPEAKERS[args.flip]]
    flipped_part, flipped = plant_flips(flip_rows, args.rate, args.seed)
    flipped_rows = [r for r in rows if r["speaker"] not in SPEAKERS[args.flip]] + flipped_part
    flipped = {f"{args.flip}/{i}" for i in flipped}  # pooled ids are "corpus/id"
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        clean_config = write_pool(rows, Path(tmp), "clean")
        flipped_config = write_pool(flipped_rows, Path(tmp), "flipped")
        for folds in FOLDS:
            options = {"folds": folds, "cache_dir": args.cache_dir, "n_jobs": args.jobs}
            clean = audit_manifest(clean_config, **options)
            report = audit_manifest(flipped_config, **options)
            results.append(
                {
                    "folds": report.source.rsplit("out of fold by ", 1)[1],
                    **score(report, flipped, args.top),
                    "suspect_rate": rates(report),
                    "unflipped_suspect_rate": rates(clean),
                }
            )
    seconds = time.perf_counter() - started

    names = sorted(SPEAKERS)
    top = f"top {args.top:.0%}"
    print(f"EmoDB pooled as {', '.join(names)}; {len(flipped)} of {args.flip}'s {len(flip_rows)} labels flipped")
    head = " | ".join(f"{n} suspects (unflipped)" for n in names)
    print(f"| folds | {top} recall | {top} precision | {head} |")
    print("|---|---:|---:|" + "---:|" * len(names))
    for r in results:
        cells = " | ".join(f"{r['suspect_rate'][n]:.1%} ({r['unflipped_suspect_rate'][n]:.1%})" for n in names)
        print(f"| {r['folds']} | {r['top_recall']:.3f} | {r['top_precision']:.3f} | {cells} |")
    print(f"\nrandom ranking: {top} recall {args.top:.3f}; {seconds:.0f} s in all")
    if args.json:
        summary = {"flip": args.flip, "rate": args.rate, "seed": args.seed, "flipped": len(flipped), "runs": results}
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
