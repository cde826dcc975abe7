"""The command line the EmoDB benchmarks share: `[EMODB_ROOT] [key=value ...]` and the common options."""

from __future__ import annotations

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_ROOT = REPO.parent / "shared" / "data" / "emodb"  # where CI and the README keep the corpus


def emodb_parser(description: str) -> argparse.ArgumentParser:
    """A parser with EMODB_ROOT and config overrides as positional words, and --config/--seeds/--baseline/--json."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "args",
        nargs="*",
        metavar="[EMODB_ROOT] [key=value ...]",
        help="the EmoDB release folder (holds wav/; default ../shared/data/emodb) and config "
        "overrides such as train.epochs=10",
    )
    parser.add_argument("--config", default="emodb_cv", help="a YAML file or preset (default emodb_cv)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--baseline", action="store_true", help="also score the classical baseline on the same folds")
    parser.add_argument("--json", default=None, help="also write the results here")
    return parser


def root_and_overrides(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[str, list[str]]:
    """The EmoDB folder (the default when none is given) and the `key=value` overrides among the positional words."""
    overrides = [a for a in args.args if "=" in a]
    roots = [a for a in args.args if "=" not in a] or [str(DEFAULT_ROOT)]
    if len(roots) > 1:
        parser.error(f"one EMODB_ROOT, got {roots}")
    return roots[0], overrides
