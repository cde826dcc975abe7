"""Manifests: one row per utterance, JSONL or CSV (format in data_cards/manifest.md).

A row is a plain dict with the keys in `REQUIRED` (`id`, `audio`, `text`, `label`, `speaker`, `split`) and
optionally `start`, `end` (seconds into the audio file), `fold` and `corpus` (the corpus a pooled row comes
from; see `mmemo.data.pool`). `audio` may be empty for text-only rows.
Relative audio paths are resolved against the manifest's folder when the manifest is read.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from mmemo.errors import DataError
from mmemo.io import atomic_write

REQUIRED = ("id", "audio", "text", "label", "speaker", "split")
OPTIONAL = ("start", "end", "fold", "corpus")
SPLITS = ("train", "valid", "test")


def read_manifest(path: str | os.PathLike, *, resolve_audio: bool = True) -> list[dict]:
    """Read and validate a JSONL or CSV manifest.

    Args:
        path: the manifest file (`.jsonl`/`.json` or `.csv`).
        resolve_audio: make relative `audio` paths absolute against the manifest's folder.

    Returns:
        The rows as dicts with string `id/audio/text/label/speaker/split`, float `start`/`end` or None,
        and string `fold` and `corpus` or None.

    Raises:
        DataError: the file is missing, a row cannot be parsed, lacks a column, has a wrong type,
            an unknown split, an id that appeared before, or two labels that differ only in case ("Happy" and
            "happy": labels are matched exactly, after stripping whitespace). The message names the file and row.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest {path} does not exist; make one with `mmemo synth` or `mmemo prepare`")
    raw_rows = _read_csv(path) if path.suffix.lower() == ".csv" else _read_jsonl(path)
    rows, seen, label_lines = [], {}, {}
    for line_no, raw in raw_rows:
        row = validate_row(raw, where=f"{path}:{line_no}")
        if row["id"] in seen:
            raise DataError(
                f"{path}:{line_no}: duplicate id {row['id']!r} (first at line {seen[row['id']]}); ids must be unique"
            )
        seen[row["id"]] = line_no
        _check_label_case(row["label"], label_lines, f"{path}:{line_no}")
        if resolve_audio and row["audio"] and not os.path.isabs(row["audio"]):
            row["audio"] = str((path.parent / row["audio"]).resolve())
        rows.append(row)
    if not rows:
        raise DataError(f"manifest {path} has no rows")
    return rows


def write_manifest(rows: Iterable[dict], path: str | os.PathLike) -> Path:
    """Write rows as JSONL (or CSV when `path` ends in .csv) atomically; returns the path."""
    path = Path(path)
    rows = list(rows)
    with atomic_write(path, "w", encoding="utf-8", newline="") as f:
        if path.suffix.lower() == ".csv":
            writer = csv.DictWriter(f, fieldnames=list(REQUIRED) + list(OPTIONAL), extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in writer.fieldnames})
        else:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def label_set(rows: Iterable[dict]) -> list[str]:
    """The sorted label names that occur in `rows`."""
    return sorted({row["label"] for row in rows})


def _check_label_case(label: str, first_lines: dict[str, tuple[str, str]], where: str) -> None:
    """Labels are case-sensitive; two spellings of one name would silently become two classes, so refuse them."""
    first = first_lines.setdefault(label.casefold(), (label, where))
    if first[0] != label:
        raise DataError(
            f"{where}: label {label!r} differs only in case from {first[0]!r} ({first[1]}); "
            "labels are case-sensitive, so write every label the same way"
        )


def jsonl_objects(path: Path, encoding_errors: str = "strict") -> Iterator[tuple[int, dict | None, str | None]]:
    """Read a JSON Lines file line by line without stopping at a bad line.

    Args:
        path: the file.
        encoding_errors: how undecodable UTF-8 is handled ("strict" raises, "replace" substitutes).

    Yields:
        (line number, object, None) per non-blank line, or (line number, None, what is wrong) for a line that
        is not one JSON object: `read_manifest` raises on the first, `data check` lists them all.
    """
    with open(path, encoding="utf-8", errors=encoding_errors) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as e:
                yield line_no, None, f"not valid JSON ({e.msg})"
                continue
            if not isinstance(raw, dict):
                yield line_no, None, f"expected a JSON object, got {type(raw).__name__}"
                continue
            yield line_no, raw, None


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    out = []
    for line_no, raw, problem in jsonl_objects(path):
        if problem:
            raise DataError(f"{path}:{line_no}: {problem}; each line must be one JSON object")
        out.append((line_no, raw))
    return out


def _read_csv(path: Path) -> list[tuple[int, dict]]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        return [(line_no, dict(raw)) for line_no, raw in enumerate(reader, 2)]


def validate_row(raw: dict, where: str) -> dict:
    """Check one raw row and return it normalised (see `read_manifest`); raises DataError naming `where`."""
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise DataError(f"{where}: missing column(s) {', '.join(missing)}; a row needs {', '.join(REQUIRED)}")
    row = {}
    for key in REQUIRED:
        value = raw[key]
        if value is None:
            value = ""
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise DataError(f"{where}: column {key!r} must be a string, got {type(value).__name__} {value!r}")
        row[key] = str(value)
    row["label"] = row["label"].strip()
    row["split"] = row["split"].strip().lower()
    if not row["id"]:
        raise DataError(f"{where}: empty id")
    if not row["label"]:
        raise DataError(f"{where}: empty label")
    if row["split"] not in SPLITS:
        raise DataError(f"{where}: split {row['split']!r} is not one of {', '.join(SPLITS)}")
    row["start"], row["end"] = _span(raw, where)
    for key in ("fold", "corpus"):
        value = raw.get(key)
        row[key] = None if value in (None, "") else str(value)
    return row


def _span(raw: dict, where: str) -> tuple[float | None, float | None]:
    """A row's optional `start`/`end` seconds, checked (non-negative numbers, end after start)."""
    span = {}
    for key in ("start", "end"):
        value = raw.get(key)
        if value in (None, ""):
            span[key] = None
            continue
        try:
            span[key] = float(value)
        except (TypeError, ValueError):
            raise DataError(f"{where}: column {key!r} must be a number of seconds, got {value!r}") from None
        if span[key] < 0:
            raise DataError(f"{where}: column {key!r} is negative ({value!r})")
    if span["start"] is not None and span["end"] is not None and span["end"] <= span["start"]:
        raise DataError(f"{where}: end ({span['end']}) must be after start ({span['start']})")
    return span["start"], span["end"]


def read_inputs(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL or CSV file of inputs to predict: each row needs only `audio` and/or `text`.

    `id` is optional (the row number, from 1, stands in), and so are `label` (kept, for scoring), `split`,
    `speaker` (for a model that standardises its acoustic statistics per speaker), `start` and `end`; other columns
    are ignored. Relative audio paths resolve against the file's folder, as in
    `read_manifest`.

    Returns:
        Rows with string `id/audio/text`, `label`, `split` and `speaker` ("" when absent), float `start`/`end` or
        None.

    Raises:
        DataError: the file is missing or empty, a row cannot be parsed, has neither an `audio` nor a `text`
            column, has a value that is not a string, or repeats an id. The message names the file and row.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"input file {path} does not exist; give a .jsonl/.csv file or a folder of audio files")
    raw_rows = _read_csv(path) if path.suffix.lower() == ".csv" else _read_jsonl(path)
    rows, seen = [], {}
    for number, (line_no, raw) in enumerate(raw_rows, 1):
        where = f"{path}:{line_no}"
        if "audio" not in raw and "text" not in raw:
            raise DataError(f"{where}: no 'audio' or 'text' column; each row needs audio, text or both")
        row = {}
        for key in ("id", "audio", "text", "label", "split", "speaker"):
            value = raw.get(key)
            if value is None:
                value = ""
            if not isinstance(value, (str, int)) or isinstance(value, bool):
                raise DataError(f"{where}: column {key!r} must be a string, got {type(value).__name__} {value!r}")
            row[key] = str(value).strip() if key in ("id", "label", "split", "speaker") else str(value)
        row["id"] = row["id"] or str(number)
        row["split"] = row["split"].lower()
        if row["id"] in seen:
            raise DataError(
                f"{where}: duplicate id {row['id']!r} (first at line {seen[row['id']]}); ids must be unique"
            )
        seen[row["id"]] = line_no
        row["start"], row["end"] = _span(raw, where)
        if row["audio"] and not os.path.isabs(row["audio"]):
            row["audio"] = str((path.parent / row["audio"]).resolve())
        rows.append(row)
    if not rows:
        raise DataError(f"input file {path} has no rows")
    return rows
