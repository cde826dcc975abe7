"""Cross-corpus on real speech: EmoDB cut into two pseudo-corpora, pooled training and leave-one-corpus-out CV.

    python benchmarks/cross_corpus.py [EMODB_ROOT] [--partition gender mixed] [--seeds 0 1 2] [--baseline]
                                      [--json results.json] [--out-dir DIR] [key=value ...]

Only one real corpus is on this machine, so two "corpora" are cut from EmoDB by speaker, each keeping the
importer's speaker-disjoint splits (valid speakers 12 and 14, test speakers 15 and 16, one of each per corpus):

- `gender`: male speakers (03 10 11 12 15) and female speakers (08 09 13 14 16), a domain shift (voice pitch
  and timbre) of the kind a new corpus brings;
- `mixed`: the same sizes with both genders on each side (03 09 12 13 15 and 08 10 11 14 16), the control: the
  data is as scarce, but nothing shifts.

The second corpus of each pair is written with EmoDB's own German label names (Wut, Freude, ...) and read
through a label map back into the English set, so the run exercises `data.manifests` label maps the way a
second, differently labelled corpus would. For each partition the script trains once on the pooled corpora (each
corpus's own splits: a per-corpus test table) and runs leave-one-corpus-out CV (`--folds corpus`: train on one
pseudo-corpus, test on every row of the other). mixed minus gender is the cost of the shift. `--baseline` also
scores the classical baseline (plain and speaker-normalised) on the same leave-one-corpus-out folds.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from emodb_args import emodb_parser, root_and_overrides

from mmemo.config import load_config
from mmemo.cv import cross_validate, format_fold_table, write_results
from mmemo.data.corpora import prepare
from mmemo.data.manifest import write_manifest
from mmemo.metrics import format_by_corpus

PARTITIONS = {
    "gender": (("emodb_male", {"03", "10", "11", "12", "15"}), ("emodb_female", {"08", "09", "13", "14", "16"})),
    "mixed": (("emodb_a", {"03", "09", "12", "13", "15"}), ("emodb_b", {"08", "10", "11", "14", "16"})),
}
GERMAN = {
    "angry": "Wut",
    "happy": "Freude",
    "sad": "Trauer",
    "fearful": "Angst",
    "disgusted": "Ekel",
    "bored": "Langeweile",
    "neutral": "Neutral",
}


def write_corpora(rows: list[dict], partition: str, folder: Path) -> list[dict]:
    """The two pseudo-corpora's manifests; returns their `data.manifests` entries (the second maps German labels)."""
    entries = []
    for i, (name, speakers) in enumerate(PARTITIONS[partition]):
        german = i == 1
        part = [{**r, "label": GERMAN[r["label"]] if german else r["label"]} for r in rows if r["speaker"] in speakers]
        path = write_manifest(part, folder / f"{name}.jsonl")
        entries.append(
            {"path": str(path), "name": name, **({"label_map": {v: k for k, v in GERMAN.items()}} if german else {})}
        )
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = emodb_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--partition", nargs="+", default=list(PARTITIONS), choices=list(PARTITIONS))
    parser.add_argument("--out-dir", default="runs/cross_corpus")
    args = parser.parse_args(argv)
    root, overrides = root_and_overrides(parser, args)

    out_dir = Path(args.out_dir)
    cfg = load_config(args.config, ["train.overwrite=true", *overrides])
    rows = prepare("emodb", root, output=out_dir / "emodb.jsonl", overwrite=True)
    summary = {}
    for partition in args.partition:
        folder = out_dir / partition
        entries = write_corpora(rows, partition, folder)
        pooled = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, manifest="", manifests=entries))
        summary[partition] = run_partition(pooled, partition, folder, args.seeds, args.baseline)
    if args.json:
        write_results({"config": args.config, "overrides": overrides, "partitions": summary}, args.json)
    return 0


def run_partition(cfg, partition: str, folder: Path, seeds: list[int], baseline: bool) -> dict:
    """Pooled training (per-corpus test table) and leave-one-corpus-out CV for one partition."""
    from mmemo.train import train

    out = {}
    start = time.time()
    run_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, output_dir=str(folder / "pooled")))
    result = train(run_cfg)
    out["pooled"] = {
        "minutes": round((time.time() - start) / 60, 2),
        "test": result["test"],
        "test_by_corpus": result["test_by_corpus"],
    }
    print(f"\n{partition}: pooled training, {out['pooled']['minutes']} min\n")
    print(format_by_corpus(result["test_by_corpus"]))

    start = time.time()
    results = cross_validate(cfg, None, folds="corpus", seeds=tuple(seeds), out_dir=folder / "loco")
    out["loco"] = {**results, "minutes": round((time.time() - start) / 60, 2)}
    print(f"\n{partition}: leave-one-corpus-out, {out['loco']['minutes']} min\n")
    print(format_fold_table(results))
    if baseline:
        from mmemo.baseline import run_baseline
        from mmemo.data.pool import corpora_of, read_corpora

        pooled_rows = read_corpora(corpora_of(cfg.data))
        for speaker_norm in (False, True):
            floor = run_baseline(
                rows=pooled_rows, folds="corpus", speaker_norm=speaker_norm, cache_dir=cfg.data.cache_dir
            )
            name = "baseline_speaker_norm" if speaker_norm else "baseline"
            out[name] = {k: floor[k] for k in ("mean", "std", "fold_means", "seconds")}
            print(f"\n{partition}: classical baseline{' (speaker-normalised)' if speaker_norm else ''}, same folds\n")
            print(format_fold_table(floor))
    return out


if __name__ == "__main__":
    sys.exit(main())
