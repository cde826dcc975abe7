"""Per-layer linear probe of a frozen Whisper encoder on EmoDB: which hidden states carry emotion.

Each clip's hidden states are mean-pooled per layer through the pooled head's own code (`mmemo.builders.pooled_tables`,
so the probe reads exactly what `configs/whisper_base.yaml` trains on, from the same cache), standardised with the
training folds' statistics ("global": no speaker information) or each speaker's own ("speaker"), and a logistic
regression (scikit-learn defaults, C = 1) is fitted on the other four of the importer's five speaker folds, as
`mmemo baseline` does. Prints one table (UA per layer and for layer sets), writes JSON.

    python benchmarks/whisper_probe.py [EMODB_ROOT] --model models/whisper-base --json docs/pretrained/probe.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from emodb_args import emodb_parser, root_and_overrides
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import recall_score

from mmemo.builders import build_recognizer, pooled_tables
from mmemo.config import Config, load_config
from mmemo.data.corpora import prepare

SETS = {"2-4": [2, 3, 4], "1-5": [1, 2, 3, 4, 5], "all": None}
ALL_LAYERS = ("model.audio_layers=0", "model.pooled_layers=[]")  # the whole tower (the recipe prunes it), every state


def main() -> None:
    args, root, overrides = parse_args(__doc__.splitlines()[0])
    rows, _, states, seconds = tower_states(root, args.model, overrides)
    table = layer_table(rows, states)
    print_table(table)
    print(f"pooled states of {len(rows)} clips: {seconds:.0f} s (from the cache when it holds them)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"model": args.model, "ua": table, "seconds": seconds}, indent=2) + "\n")


def parse_args(description: str) -> tuple[argparse.Namespace, str, list[str]]:
    """The probe benchmarks' command line (EmoDB's folder, overrides, `--model`, `--json`); torch on one thread."""
    parser = emodb_parser(description)
    parser.add_argument("--model", required=True, help="a Whisper checkpoint folder or hub id")
    args = parser.parse_args()
    root, overrides = root_and_overrides(parser, args)
    torch.set_num_threads(1)
    return args, root, overrides


def layer_table(rows: list[dict], states: np.ndarray) -> dict[str, dict[str, float]]:
    """The probe's UA for each hidden state and each set in `SETS`, standardised globally and per speaker:
    {norm: {"layer i" or "layers NAME": UA}}."""
    labels, speakers, folds = (np.array([r[key] for r in rows]) for key in ("label", "speaker", "fold"))
    layers = states.shape[1]
    columns = {f"layer {i}": [i] for i in range(layers)} | {
        f"layers {name}": chosen or list(range(layers)) for name, chosen in SETS.items()
    }
    return {
        norm: {
            name: probe(states[:, chosen].reshape(len(rows), -1), labels, speakers, folds, norm)
            for name, chosen in columns.items()
        }
        for norm in ("global", "speaker")
    }


def print_table(table: dict[str, dict[str, float]]) -> None:
    """One Markdown row per entry of `table` (its name, then the UA of each column)."""
    columns = list(next(iter(table.values())))
    print(f"| EmoDB, 5 speaker folds, UA | {' | '.join(columns)} |")
    print(f"|---|{'---:|' * len(columns)}")
    for row, scores in table.items():
        print(f"| {row} | {' | '.join(f'{scores[name]:.3f}' for name in columns)} |")


def tower_states(root: str, model: str, overrides: list[str]) -> tuple[list[dict], Config, np.ndarray, float]:
    """EmoDB's rows (the importer's folds), the `whisper_base` config they were read with, every hidden state of the
    whole tower mean-pooled per clip (N, layers, D; through the recipe's cache), and the seconds those states took."""
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "emodb.jsonl"
        rows = prepare("emodb", root, output=manifest, overwrite=True)
        cfg = load_config(
            "whisper_base", [f"data.manifest={manifest}", f"model.audio_encoder={model}", *ALL_LAYERS, *overrides]
        )
        start = time.time()
        recognizer = build_recognizer(cfg.model, {"train": rows}, torch.device("cpu"))
        states = pooled_tables(recognizer, {"all": rows}, cfg, None, set_statistics=False)["all"][0]
        return rows, cfg, states, time.time() - start


def probe(x: np.ndarray, labels, speakers, folds, norm: str, c: float = 1.0) -> float:
    """Mean UA over the folds of a logistic regression (inverse regularisation `c`) trained on the other folds."""
    x = x.astype(np.float64)
    uas = []
    for fold in sorted(set(folds)):
        test = folds == fold
        z = standardised(x, speakers, test, norm)
        clf = LogisticRegression(C=c, max_iter=3000).fit(z[~test], labels[~test])
        uas.append(recall_score(labels[test], clf.predict(z[test]), average="macro"))
    return float(np.mean(uas))


def standardised(x: np.ndarray, speakers: np.ndarray, test: np.ndarray, norm: str) -> np.ndarray:
    """Every dimension z-scored by each speaker's own clips ("speaker") or by the training clips' ("global")."""
    if norm == "global":
        return (x - x[~test].mean(0)) / (x[~test].std(0) + 1e-3)
    z = np.empty_like(x)
    for speaker in set(speakers):
        own = speakers == speaker
        z[own] = (x[own] - x[own].mean(0)) / (x[own].std(0) + 1e-3)
    return z


if __name__ == "__main__":
    main()
