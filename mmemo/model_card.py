"""The model card: the README.md a model folder carries, in the Hugging Face layout (YAML front matter + Markdown).

`ModelCard` holds what the model itself cannot know (the data it was trained on, its test scores, its
calibration, language and licence); `render_model_card` puts it together with what the recognizer knows (labels,
encoders, temperature). `EmotionRecognizer.save_pretrained` writes the card as README.md and keeps the
`ModelCard` fields in config.json, so a loaded model can be saved or pushed again without losing them.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mmemo.data.pool import rows_per_corpus
from mmemo.metrics import CONDITION_NAMES, format_by_corpus, format_table

CARD_SCORES = ("n", "wa", "ua", "macro_f1", "weighted_f1")  # the columns of `format_table`
TAGS = ("mmemo", "emotion-recognition", "speech-emotion-recognition", "multimodal", "audio-classification")


@dataclass(frozen=True)
class ModelCard:
    """What a model card says beyond the model itself; every field is optional.

    Attributes:
        manifest: the training manifest's file name (or "corpora a, b" for a pooled run).
        corpora: rows per split per corpus, when several corpora were pooled: {"emodb": {"train": 300, ...}}.
        rows: rows per split, e.g. {"train": 168, "valid": 36, "test": 36}.
        speakers: distinct speakers per split.
        label_counts: rows per label per split.
        test: scores per condition ("both", "text", "audio") from `mmemo.metrics.classification_metrics`.
        test_by_corpus: the same per corpus, when the test rows came from several (`mmemo.evaluate.score_by_corpus`).
        test_split: the split `test` was measured on ("test", or "valid" when there was no test split).
        calibration: {"temperature", "ece_before", "ece_after"} from `mmemo.calibration.calibrate`.
        language: ISO 639-1 code(s) of the transcripts and speech, when known.
        license: the licence of the weights; None says "unknown" (the data's licence decides it).
    """

    manifest: str | None = None
    corpora: dict[str, dict[str, int]] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    speakers: dict[str, int] = field(default_factory=dict)
    label_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    test: dict[str, dict] | None = None
    test_by_corpus: dict[str, dict] = field(default_factory=dict)
    test_split: str = "test"
    calibration: dict | None = None
    language: str | list[str] | None = None
    license: str | None = None

    @classmethod
    def from_loaders(
        cls,
        loaders: dict,
        manifest: str | None,
        test: dict | None = None,
        test_split: str = "test",
        calibration: dict | None = None,
        test_by_corpus: dict | None = None,
    ) -> ModelCard:
        """A training run's card: the data summary of its loaders' rows, and the final scores once known."""
        splits = {name: loader.dataset.rows for name, loader in loaders.items()}
        name = Path(manifest).name if manifest else None  # not the user's absolute path: the card may be published
        return cls.from_splits(
            splits,
            manifest=name,
            test=test,
            test_split=test_split,
            calibration=calibration,
            test_by_corpus=test_by_corpus or {},
        )

    @classmethod
    def from_splits(cls, splits: dict[str, list[dict]], manifest: str | None = None, **fields) -> ModelCard:
        """A card whose data summary (rows, speakers, label counts per split) is counted from manifest rows."""
        splits = {name: rows for name, rows in splits.items() if rows}
        by_corpus = rows_per_corpus(splits)
        return cls(
            manifest=manifest,
            corpora=by_corpus if len(by_corpus) > 1 else {},
            rows={name: len(rows) for name, rows in splits.items()},
            speakers={name: len({r["speaker"] for r in rows}) for name, rows in splits.items()},
            label_counts={
                name: dict(sorted(Counter(r["label"] for r in rows).items())) for name, rows in splits.items()
            },
            **fields,
        )

    def to_dict(self) -> dict:
        """JSON-ready fields; test scores keep only what the README shows (no confusion matrices, no per-class)."""
        data = dataclasses.asdict(self)
        if self.test:
            data["test"] = _card_scores(self.test)
        data["test_by_corpus"] = {name: _card_scores(scores) for name, scores in self.test_by_corpus.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ModelCard:
        """The inverse of `to_dict`; unknown keys (from a newer mmemo) are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _card_scores(scores: dict[str, dict]) -> dict[str, dict]:
    return {c: {k: m[k] for k in CARD_SCORES if k in m} for c, m in scores.items()}


def render_model_card(recognizer, card: ModelCard) -> str:
    """README.md text for a model folder: front matter, labels, architecture, data, scores, use and limits."""
    front = {"library_name": "mmemo", "tags": list(TAGS), "pipeline_tag": "audio-classification"}
    if card.language:
        front["language"] = card.language
    front["license"] = card.license or "unknown"
    labels = recognizer.labels
    text, audio = (describe_encoder(m) for m in (recognizer.model.text_encoder, recognizer.model.audio_encoder))
    scratch = [
        name
        for name, checkpoint in (("text", recognizer.config.text_encoder), ("audio", recognizer.config.audio_encoder))
        if not checkpoint
    ]
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).rstrip(),
        "---",
        "",
        "# mmemo emotion recognizer",
        "",
        "Multimodal (text + speech) emotion recognition trained with mmemo: a text encoder and an audio encoder feed",
        " a fusion head. Modality dropout in training lets this one checkpoint classify a transcript",
        "alone, a recording alone, or both.",
        "",
        f"**Labels** ({len(labels)}): {', '.join(f'`{label}`' for label in labels)}",
        "",
        f"- text encoder: {text}",
        f"- audio encoder: {audio}",
        f"- fusion: {recognizer.config.fusion}, dim {recognizer.config.fusion_dim}, "
        f"{recognizer.config.fusion_layers} layer(s); audio at {recognizer.config.sampling_rate} Hz",
        f"- calibration temperature: {recognizer.temperature:.3f}",
        "",
        "## Usage",
        "",
        "```python",
        "from mmemo import EmotionRecognizer",
        "",
        'rec = EmotionRecognizer.from_pretrained("path/or/hub-id")',
        'rec(text="I cannot believe it.", audio="clip.wav")  # or text only, or audio only',
        "```",
        "",
        "or `mmemo predict MODEL --text '...' --audio clip.wav` on the command line.",
        "",
        "## Training data",
        "",
    ]
    lines += _data_section(card)
    lines += ["", *_label_map_section(recognizer.config.label_maps), "## Evaluation", ""]
    if card.test:
        lines += [
            format_table(card.test).replace("| condition |", "| input |"),
            "",
            f"On the {card.test_split} split; WA is accuracy, UA balanced accuracy (mean per-class recall). "
            f"{', '.join(CONDITION_NAMES.values())} are the same checkpoint given both inputs or one.",
        ]
        if card.test_by_corpus:
            lines += ["", format_by_corpus(card.test_by_corpus, f"Per corpus ({card.test_split} split):")]
    else:
        lines.append("No test scores were recorded for this folder (see the training run's report.md, if any).")
    if card.calibration:
        c = card.calibration
        lines += [
            "",
            f"Probabilities are calibrated by temperature scaling on the validation split: T = {c['temperature']:.3f}, "
            f"expected calibration error {c['ece_before']:.3f} before, {c['ece_after']:.3f} after.",
        ]
    total = sum(card.rows.values())
    lines += [
        "",
        "## Intended use",
        "",
        "Research on emotion recognition from speech and transcripts, and demos of it: comparing what text and",
        "voice each say, exploring a corpus, prototyping. Outputs are probabilities over the labels above.",
        "",
        "## Limitations",
        "",
        f"- Trained on {total} labelled clips of {f'{len(card.corpora)} corpora' if card.corpora else 'one corpus'}"
        if total
        else "- Trained on one labelled corpus",
        "  (see Training data); scores on other speakers, languages, microphones or recording conditions will be",
        "  lower, possibly much lower.",
        *(
            [
                f"- The {' and '.join(scratch)} encoder{'s were' if len(scratch) > 1 else ' was'} trained from "
                "scratch (no pretraining) on these clips only."
            ]
            if scratch
            else []
        ),
        "- Emotion corpora are mostly acted or elicited speech with a few categorical labels; real emotions are",
        "  mixed, subtle and culture-dependent, and a label is one annotator's reading, not a person's state.",
        "- Do not use it to make or support decisions about people (hiring, health, policing, education,",
        "  credit, insurance) or to monitor people without their informed consent.",
        "",
    ]
    return "\n".join(lines)


def _data_section(card: ModelCard) -> list[str]:
    if not card.rows:
        return ["Not recorded."]
    lines = [f"Manifest: `{card.manifest}`" if card.manifest else "Manifest: not recorded", ""]
    labels = sorted({label for counts in card.label_counts.values() for label in counts})
    lines += [
        "| split | rows | speakers | " + " | ".join(labels) + " |",
        "|---|---:|---:|" + "---:|" * len(labels),
    ]
    for split, n in card.rows.items():
        counts = card.label_counts.get(split, {})
        cells = " | ".join(str(counts.get(label, 0)) for label in labels)
        lines.append(f"| {split} | {n} | {card.speakers.get(split, '?')} | {cells} |")
    if card.corpora:
        splits = list(card.rows)
        lines += ["", "| corpus | " + " | ".join(splits) + " |", "|---|" + "---:|" * len(splits)]
        lines += [
            f"| {corpus} | " + " | ".join(str(counts.get(split, 0)) for split in splits) + " |"
            for corpus, counts in card.corpora.items()
        ]
    return lines


def _label_map_section(label_maps: dict) -> list[str]:
    """The corpora's label maps into this model's label set (empty when no corpus mapped its labels)."""
    if not label_maps:
        return []
    lines = ["## Label maps", "", "Each corpus's labels were mapped into this label set before training:", ""]
    for corpus, mapping in label_maps.items():
        moves = ", ".join(f"`{a}` → `{b}`" if b is not None else f"`{a}` dropped" for a, b in mapping.items())
        lines.append(f"- {corpus}: {moves}")
    return [*lines, ""]


def describe_encoder(encoder) -> str:
    """One line on an encoder wrapper (mmemo.encoders): class, model type, width, depth and parameter count."""
    config = encoder.hf_config
    params = sum(p.numel() for p in encoder.parameters())
    return (
        f"{type(encoder).__name__} ({config.model_type}), hidden {config.hidden_size}, "
        f"{config.num_hidden_layers} layer(s), {params / 1e6:.2f}M parameters"
    )
