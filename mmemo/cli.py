"""The `mmemo` command line: each subcommand parses its arguments and calls one library function."""

from __future__ import annotations

import argparse
import json
import os
import sys

from mmemo.errors import MmemoError


def main(argv: list[str] | None = None) -> int:
    """Entry point for `mmemo` and `python -m mmemo`; returns the exit status."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except MmemoError as e:
        print(f"mmemo {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mmemo {args.command}: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmemo", description="Multimodal (text + speech) emotion recognition.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("synth", help="generate the synthetic paired corpus")
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=1000, help="number of utterances (default 1000)")
    p.add_argument("--speakers", type=int, default=12)
    p.add_argument("--overwrite", action="store_true", help="replace an existing corpus in OUT_DIR")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("config", help="a YAML file or a preset name in configs/")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.epochs=3")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="score a model on a manifest split (text+audio, text-only, audio-only)")
    p.add_argument("model_dir")
    p.add_argument("manifest")
    p.add_argument("--split", default="test", help="train, valid, test or all (default test)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="predict the emotion of a transcript, a recording or both")
    p.add_argument("model_dir")
    p.add_argument("--text", default=None)
    p.add_argument("--audio", default=None, help="an audio file (wav, flac, ogg, mp3, ...)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("prepare", help="turn a corpus release folder into a manifest (see data_cards/)")
    p.add_argument("corpus", help="iemocap, meld, crema_d, ravdess, emodb, tess, esd, casia or generic")
    p.add_argument("root", help="the folder the corpus release unpacked to")
    p.add_argument("-o", "--output", required=True, help="the manifest to write (.jsonl or .csv)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output manifest")
    _add_importer_options(p)
    p.set_defaults(func=cmd_prepare)
    return parser


def _add_importer_options(parser: argparse.ArgumentParser) -> None:
    """One flag per importer option (shared names are shared flags); `prepare` checks them per corpus."""
    from mmemo.data.corpora import OPTIONS

    seen = {}
    for corpus, options in OPTIONS.items():
        for name, option in options.items():
            seen.setdefault(name, (option, []))[1].append(corpus)
    group = parser.add_argument_group("corpus options")
    for name, (option, corpora) in sorted(seen.items()):
        flag = "--" + name.replace("_", "-")
        helptext = f"{option.help} ({', '.join(corpora)})"
        if option.type is bool:
            group.add_argument(flag, dest=f"opt_{name}", action="store_true", default=None, help=helptext)
        else:
            group.add_argument(flag, dest=f"opt_{name}", default=None, help=helptext)


def cmd_synth(args) -> None:
    from mmemo.data.synthetic import generate_corpus

    manifest = generate_corpus(args.out_dir, n=args.n, seed=args.seed, n_speakers=args.speakers,
                               overwrite=args.overwrite)
    print(f"synthetic corpus: {manifest}")


def cmd_train(args) -> None:
    from mmemo.config import load_config
    from mmemo.metrics import format_table
    from mmemo.train import train

    result = train(load_config(args.config, args.overrides))
    final = result["test"] or result["valid"]
    print(format_table(final, f"{'test' if result['test'] else 'valid'} scores, best epoch {result['best_epoch']}"))
    print(f"run folder: {result['out_dir']}  model: {result['model_dir']}")


def cmd_evaluate(args) -> None:
    from mmemo.evaluate import evaluate_manifest
    from mmemo.metrics import format_table

    results = evaluate_manifest(args.model_dir, args.manifest, split=args.split, batch_size=args.batch_size)
    if args.json:
        print(json.dumps({c: {k: v for k, v in m.items() if k != "confusion"} for c, m in results.items()}))
    else:
        print(format_table(results, f"{args.model_dir} on {args.manifest} ({args.split})"))


def cmd_prepare(args) -> None:
    from mmemo.data.corpora import prepare
    from mmemo.data.manifest import label_set

    options = {k[4:]: v for k, v in vars(args).items() if k.startswith("opt_") and v is not None}
    rows = prepare(args.corpus, args.root, output=args.output, overwrite=args.overwrite, **options)
    splits = {s: sum(r["split"] == s for r in rows) for s in ("train", "valid", "test")}
    print(f"{args.output}: {len(rows)} rows, {len({r['speaker'] for r in rows})} speakers, "
          f"labels {label_set(rows)}, splits {splits}")


def cmd_predict(args) -> None:
    from mmemo.errors import DataError
    from mmemo.inference import EmotionRecognizer

    if not args.text and not args.audio:
        raise DataError("give --text, --audio or both")
    recognizer = EmotionRecognizer.from_pretrained(args.model_dir)
    print(json.dumps(recognizer.predict(text=args.text, audio=args.audio).to_dict(), ensure_ascii=False))
