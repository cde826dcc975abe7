"""Batch prediction to a file: every row of an input file (or every audio file under a folder) in, one
prediction per row out (.csv or .jsonl), scored when the input carries labels. `mmemo predict-batch` runs it.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from mmemo.data.audio import load_audio
from mmemo.data.dataset import clip_seconds
from mmemo.errors import DataError
from mmemo.inference import EmotionRecognizer, Prediction
from mmemo.io import atomic_write, check_output

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")


def batch_inputs(source: str | os.PathLike, split: str | None = None) -> list[dict]:
    """Rows ({id, audio, text, label, split, start, end}) from an input file, or one per audio file under a folder.

    An input file (.jsonl/.csv) needs only `audio` and/or `text` per row (see `mmemo.data.manifest.read_inputs`);
    a full manifest works too. A folder gives one row per audio file, searched recursively.

    Args:
        source: the input file or folder.
        split: keep only the rows of this split (needs a `split` column).

    Raises:
        DataError: the file is invalid, the folder holds no audio files, or `split` selects no row.
    """
    from mmemo.data.manifest import read_inputs

    source = Path(source)
    if not source.is_dir():
        rows = read_inputs(source)
    else:
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
        if not files:
            raise DataError(f"{source}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this folder or below")
        rows = [
            {
                "id": p.relative_to(source).with_suffix("").as_posix(),
                "audio": str(p),
                "text": "",
                "label": "",
                "split": "",
                "start": None,
                "end": None,
            }
            for p in files
        ]
    if split is None:
        return rows
    kept = [row for row in rows if row["split"] == split.lower()]
    if not kept:
        present = sorted({row["split"] for row in rows if row["split"]})
        found = f"its splits are {', '.join(present)}" if present else "it has no split column"
        raise DataError(f"{source}: no rows of split {split!r} ({found}); drop --split or choose another")
    return kept


def predict_to_file(
    recognizer: EmotionRecognizer,
    source: str | os.PathLike,
    output: str | os.PathLike,
    batch_size: int = 16,
    overwrite: bool = False,
    progress: bool = True,
    split: str | None = None,
) -> dict:
    """Predict every row of an input file (or every audio file under a folder); write one row per input.

    Inputs are sorted by duration (from file headers) so each mini-batch pads little; the output keeps input
    order. A row whose audio cannot be read gets an empty label and an `error` instead of stopping the run.
    When the input has a `label` column it is written as `true_label`, and the rows whose label is in the
    model's label set are scored (accuracy and UA, `mmemo.metrics`).

    Args:
        recognizer: the model.
        source: a .jsonl/.csv file whose rows have `audio` and/or `text` (optional `id`, `label`, `split`,
            `start`, `end`; a manifest works), or a folder of audio files.
        output: a `.csv` (id, path, [true_label,] label, prob_<label>..., error) or `.jsonl` file, written
            atomically.
        batch_size: inputs per forward pass.
        overwrite: replace an existing output file.
        progress: show a progress bar.
        split: predict only the rows of this split.

    Returns:
        {"output": Path, "rows": number of inputs, "errors": number that failed, "scores": metrics of the
        labelled rows (`classification_metrics`) or None, "unscored": labelled rows not scored (label outside
        the model's set, or the prediction failed)}.

    Raises:
        DataError: bad output suffix, output is `source` (even with `overwrite`) or exists without `overwrite`,
            or an unusable source.
    """
    from tqdm.auto import tqdm

    output = check_output(output, source, overwrite=overwrite, suffixes=(".csv", ".jsonl"), what="predictions")
    rows = batch_inputs(source, split)
    rate = recognizer.config.sampling_rate
    order = sorted(range(len(rows)), key=lambda i: clip_seconds(rows[i]))
    results = [None] * len(rows)  # a Prediction or an error message per row
    with tqdm(total=len(rows), unit="input", desc="predict", disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            chunk, texts, audios = [], [], []
            for i in order[start : start + batch_size]:
                row = rows[i]
                try:
                    audio = load_audio(row["audio"], rate, row.get("start"), row.get("end")) if row["audio"] else None
                except DataError as e:
                    results[i] = str(e)
                    continue
                if audio is None and not row["text"].strip():
                    results[i] = "row has neither text nor audio"
                    continue
                chunk.append(i)
                texts.append(row["text"])
                audios.append(audio)
            if chunk:
                predictions = recognizer.predict(text=texts, audio=audios, sampling_rate=rate, batch_size=batch_size)
                for i, prediction in zip(chunk, predictions):
                    results[i] = prediction
            bar.update(min(batch_size, len(order) - start))
    _write_results(output, rows, results, recognizer.labels)
    scores, unscored = _score(rows, results, recognizer.labels)
    return {
        "output": output,
        "rows": len(rows),
        "errors": sum(isinstance(r, str) for r in results),
        "scores": scores,
        "unscored": unscored,
    }


def _score(rows: list[dict], results: list, labels: list[str]) -> tuple[dict | None, int]:
    """Metrics over the predicted rows whose `label` is in the model's label set; and how many labelled rows
    could not be scored."""
    from mmemo.metrics import classification_metrics

    index = {label: i for i, label in enumerate(labels)}
    labelled = [(row, result) for row, result in zip(rows, results) if row["label"]]
    scored = [(row, result) for row, result in labelled if row["label"] in index and isinstance(result, Prediction)]
    if not scored:
        return None, len(labelled)
    y_true = [index[row["label"]] for row, _ in scored]
    y_pred = [index[result.label] for _, result in scored]
    return classification_metrics(y_true, y_pred, len(labels)), len(labelled) - len(scored)


def _write_results(output: Path, rows: list[dict], results: list, labels: list[str]) -> None:
    truth = any(row["label"] for row in rows)  # carry the input's labels next to the predictions
    with atomic_write(output, "w", encoding="utf-8", newline="") as f:
        if output.suffix.lower() == ".csv":
            writer = csv.writer(f)
            given = ["true_label"] if truth else []
            writer.writerow(["id", "path", *given, "label", *(f"prob_{label}" for label in labels), "error"])
            for row, result in zip(rows, results):
                given = [row["label"]] if truth else []
                if isinstance(result, Prediction):
                    probs = [f"{result.probabilities[label]:.6f}" for label in labels]
                    writer.writerow([row["id"], row["audio"], *given, result.label, *probs, ""])
                else:
                    writer.writerow([row["id"], row["audio"], *given, "", *[""] * len(labels), result])
        else:
            for row, result in zip(rows, results):
                record = {"id": row["id"], "path": row["audio"]} | ({"true_label": row["label"]} if truth else {})
                if isinstance(result, Prediction):
                    record |= {k: v for k, v in result.to_dict().items() if k != "segments" or v}
                else:
                    record |= {"label": None, "error": result}
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
