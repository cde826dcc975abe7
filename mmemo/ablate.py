"""Ablation: the same recipe and budget trained five ways, each scored under the conditions it can serve.

    joint_md     the config as given, with modality dropout (independent 0.3/0.3 if the config has none)
    joint_nomd   the same without modality dropout
    text_only    a dedicated text model (audio never shown in training), scored text-only
    audio_only   a dedicated audio model, scored audio-only
    concat       late fusion (masked mean of each stream, concatenated) instead of cross-attention, with
                 modality dropout

Each variant picks its best epoch by validation UA on the condition it is scored on first (text_only by
text-only UA, ...). Scores are test-split means (and standard deviations) over seeds.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

from mmemo.config import Config
from mmemo.errors import not_one_of
from mmemo.metrics import CONDITION_NAMES, CONDITIONS, mean_and_std

DEFAULT_DROPOUT = {"name": "independent", "p_text": 0.3, "p_audio": 0.3}
VARIANTS = {  # name -> (config changes, conditions it is scored on)
    "joint_md": ({}, CONDITIONS),
    "joint_nomd": ({"modality_dropout": {"name": "none"}}, CONDITIONS),
    "text_only": ({"modality_dropout": {"name": "text_only"}, "monitor": "text"}, ("text",)),
    "audio_only": ({"modality_dropout": {"name": "audio_only"}, "monitor": "audio"}, ("audio",)),
    "concat": ({"fusion": "concat", "pooling": "mean"}, CONDITIONS),
}
SCORES = ("ua", "wa", "macro_f1")


def ablate(cfg: Config, seeds=(0,), out_dir: str | os.PathLike | None = None, variants=tuple(VARIANTS)) -> dict:
    """Train every variant for every seed and aggregate test scores.

    Args:
        cfg: the base recipe (its manifest needs train, valid and test splits).
        seeds: training seeds; results are means over them.
        out_dir: where the runs go (default: `<train.output_dir>-ablation`), one folder per variant and seed.
        variants: a subset of VARIANTS to run.

    Returns:
        {variant: {condition: {"ua", "wa", "macro_f1", "ua_std", "wa_std", "macro_f1_std", "n_runs"}}}.

    Raises:
        ConfigError: a variant is not one of VARIANTS (the closest is named), before anything is trained.
    """
    from mmemo.train import train

    for name in variants:
        if name not in VARIANTS:
            raise not_one_of("variant", name, VARIANTS)
    out_dir = Path(out_dir or f"{cfg.train.output_dir}-ablation")
    results = {}
    for name in variants:
        changes, conditions = VARIANTS[name]
        runs = []
        for seed in seeds:
            run_cfg = variant_config(cfg, name, seed, out_dir / name / f"seed-{seed}")
            runs.append(train(run_cfg)["test"])
        results[name] = {c: _mean_std([r[c] for r in runs]) for c in conditions}
    return results


def variant_config(cfg: Config, name: str, seed: int, output_dir: Path) -> Config:
    """The base config changed into variant `name` for one seed."""
    changes, _ = VARIANTS[name]
    cfg = copy.deepcopy(cfg)
    if cfg.train.modality_dropout.get("name", "none") == "none":
        cfg.train.modality_dropout = dict(DEFAULT_DROPOUT)
    if "fusion" in changes:
        cfg.model.fusion = changes["fusion"]
        cfg.model.text_pooling = cfg.model.audio_pooling = changes["pooling"]
    cfg.train.modality_dropout = changes.get("modality_dropout", cfg.train.modality_dropout)
    cfg.train.monitor = changes.get("monitor", "both")
    cfg.train.seed, cfg.train.output_dir, cfg.train.overwrite = seed, str(output_dir), True
    return cfg


def format_ablation(results: dict) -> str:
    """One Markdown table: a row per variant, UA/WA/macro-F1 per evaluation condition (mean ± std)."""
    header = "| variant | " + " | ".join(f"{CONDITION_NAMES[c]} UA | WA | F1" for c in CONDITIONS) + " |"
    lines = [header, "|---|" + "---:|" * 3 * len(CONDITIONS)]
    for variant, by_condition in results.items():
        cells = []
        for cond in CONDITIONS:
            m = by_condition.get(cond)
            cells += [f"{m[s]:.3f}±{m[s + '_std']:.3f}" if m else "–" for s in SCORES] if m else ["–"] * 3
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mean_std(scores: list[dict]) -> dict:
    mean, std = mean_and_std(scores, SCORES)
    return {**mean, **{f"{k}_std": v for k, v in std.items()}, "n_runs": len(scores)}
