"""Importer for a user's own corpus: a folder tree (label from the folder name or a regex on the path) or a CSV
with one row per utterance."""

from __future__ import annotations

import csv as csvlib
import io
import re
from pathlib import Path

from mmemo.data.corpora._common import (
    SPLIT_NAMES,
    Option,
    assign_speaker_splits,
    check_root,
    find_wavs,
    read_text,
    require,
    row,
    warn_skipped,
)
from mmemo.errors import DataError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")

OPTIONS = {
    "generic": {
        "label_from": Option(
            str, "folder", "folder: label = the audio file's folder name; regex: from --pattern", ("folder", "regex")
        ),
        "pattern": Option(
            str,
            None,
            "regex searched in each file's path relative to ROOT (no suffix), with named "
            "groups label and optionally speaker",
        ),
        "csv": Option(str, None, "a CSV with one row per utterance instead of a folder tree"),
        "audio_column": Option(str, "audio", "CSV column with the audio path (relative to ROOT or absolute)"),
        "text_column": Option(str, "text", "CSV column with the transcript (optional)"),
        "label_column": Option(str, "label", "CSV column with the label"),
        "speaker_column": Option(str, "speaker", "CSV column with the speaker (optional)"),
        "split_column": Option(str, "split", "CSV column with train/valid/test (optional)"),
    }
}
_SIDECARS = (".txt", ".lab")


def import_generic(
    root: Path,
    *,
    label_from: str = "folder",
    pattern: str | None = None,
    csv: str | None = None,
    audio_column: str = "audio",
    text_column: str = "text",
    label_column: str = "label",
    speaker_column: str = "speaker",
    split_column: str = "split",
) -> list[dict]:
    """Rows for a corpus laid out your own way.

    Folder tree (no `csv`): every .wav/.flac/.ogg/.mp3 under ROOT is one utterance. Its label is its folder's name
    (`label_from="folder"`) or the `label` group of `pattern` (`label_from="regex"`); its speaker is the
    `speaker` group of `pattern` when there is one, else ""; its text is a sidecar `<name>.txt` or `<name>.lab`
    next to it, else "". `pattern` is searched (re.search) in the path relative to ROOT without the suffix, e.g.
    `(?P<speaker>\\w+)/(?P<label>\\w+)_\\d+$`; files it does not match are skipped with a warning.

    CSV (`csv` given): one row per utterance with the named columns; audio paths are relative to ROOT or
    absolute, and an empty audio cell makes a text-only row. An `id` column is used when present (else the audio
    path), a `fold` column is kept.

    Without a split (no split column, or a folder tree) the split is speaker-disjoint: sorted speakers in 5
    contiguous groups, group 5 test, 4 valid, 1-3 train (`fold` = the group). With fewer than 3 speakers the
    split is per utterance (stable hash, 80/10/10) and a warning says so.

    Args:
        root: the corpus folder.
        label_from: "folder" or "regex" (folder trees only).
        pattern: the regex for `label_from="regex"` (named group `label`, optional `speaker`); with
            `label_from="folder"` only its `speaker` group is used.
        csv: the CSV file (absolute, relative to the current folder, or relative to ROOT).
        audio_column: CSV column with the audio path.
        text_column: CSV column with the transcript ("" when the default column is absent).
        label_column: CSV column with the label.
        speaker_column: CSV column with the speaker ("" when the default column is absent).
        split_column: CSV column with train/valid/test (dev/validation/evaluation mean valid).

    Returns:
        Rows with lowercased labels and absolute audio paths.

    Raises:
        DataError: ROOT or the CSV is missing, a named column is absent, a regex lacks a `label` group or does
            not compile, an audio file is missing, a split value is unknown, an id repeats, or nothing was found.
    """
    root = check_root(root, "generic")
    if csv:
        columns = {
            "audio": audio_column,
            "text": text_column,
            "label": label_column,
            "speaker": speaker_column,
            "split": split_column,
        }
        rows = _from_csv(root, _find_csv(root, csv), columns, OPTIONS["generic"])
    else:
        rows = _from_tree(root, label_from, _compile(pattern, label_from))
    if all("split" in r for r in rows):
        return rows
    return assign_speaker_splits(rows)


def _compile(pattern: str | None, label_from: str) -> re.Pattern | None:
    """The user's regex, checked for the groups `label_from` needs."""
    if label_from not in ("folder", "regex"):
        raise DataError(f"generic: label_from must be folder or regex, got {label_from!r}")
    if pattern is None:
        if label_from == "regex":
            raise DataError("generic: label_from=regex needs --pattern with a named group (?P<label>...)")
        return None
    try:
        compiled = re.compile(pattern)
    except re.error as e:
        raise DataError(f"generic: pattern {pattern!r} is not a valid regex ({e})") from None
    if label_from == "regex" and "label" not in compiled.groupindex:
        raise DataError(f"generic: pattern {pattern!r} has no named group (?P<label>...)")
    return compiled


def _from_tree(root: Path, label_from: str, pattern: re.Pattern | None) -> list[dict]:
    """One row per audio file under `root`."""
    rows, skipped = [], []
    for path in find_wavs(root, "generic", AUDIO_SUFFIXES):
        name = path.relative_to(root).with_suffix("").as_posix()
        match = pattern.search(name) if pattern else None
        if label_from == "regex":
            label = match["label"] if match else None
        else:
            label = path.parent.name if path.parent != root else None  # a file directly in ROOT has no label folder
        if not label or (pattern and match is None):
            skipped.append(path)
            continue
        speaker = (match.groupdict().get("speaker") or "") if match else ""
        rows.append(row("generic", name, path, _sidecar_text(path), label.strip().lower(), speaker))
    warn_skipped("generic", skipped, "their path gives no label (no label folder or no pattern match)")
    return require(rows, "generic", root, "put audio files in one folder per label, or pass --pattern/--csv")


def _sidecar_text(path: Path) -> str:
    """The transcript in `<name>.txt` or `<name>.lab` next to an audio file, else ""."""
    for suffix in _SIDECARS:
        sidecar = path.with_suffix(suffix)
        if sidecar.is_file():
            return " ".join(read_text(sidecar).split())
    return ""


def _find_csv(root: Path, csv: str) -> Path:
    """The CSV as given, or relative to ROOT."""
    for candidate in (Path(csv).expanduser(), root / csv):
        if candidate.is_file():
            return candidate
    raise DataError(f"generic: CSV {csv} does not exist (also looked in {root})")


def _from_csv(root: Path, path: Path, columns: dict[str, str], options: dict) -> list[dict]:
    """One row per CSV record; `columns` maps manifest keys to the user's column names."""
    reader = csvlib.DictReader(io.StringIO(read_text(path, ("utf-8-sig", "cp1252")), newline=""))
    header = reader.fieldnames or []
    for key, column in columns.items():
        # Required: audio and label; the others only when the user named a column that is not the default.
        if column not in header and (key in ("audio", "label") or column != options[f"{key}_column"].default):
            raise DataError(
                f"generic: {path} has no column {column!r} (columns: {', '.join(header)}); "
                f"pass --{key}-column with the right name"
            )
    rows, seen, missing = [], set(), []
    for line_no, record in enumerate(reader, 2):
        audio = (record[columns["audio"]] or "").strip()
        audio_path = (root / audio) if audio else None
        if audio_path and not audio_path.is_file():
            missing.append(f"{audio} (line {line_no})")
        uid = (record.get("id") or "").strip() or (Path(audio).with_suffix("").as_posix() if audio else str(line_no))
        if uid in seen:
            raise DataError(f"generic: {path}:{line_no}: id {uid!r} repeats; give each utterance its own id")
        seen.add(uid)
        label = (record[columns["label"]] or "").strip().lower()
        if not label:
            raise DataError(f"generic: {path}:{line_no}: empty label in column {columns['label']!r}")
        extra = {"fold": (record.get("fold") or "").strip() or None}
        if columns["split"] in header:
            raw_split = (record[columns["split"]] or "").strip().lower()
            if raw_split not in SPLIT_NAMES:
                raise DataError(
                    f"generic: {path}:{line_no}: split {raw_split!r} is not train/valid/test "
                    "(dev, validation and evaluation also mean valid)"
                )
            extra["split"] = SPLIT_NAMES[raw_split]
        rows.append(
            row(
                "generic",
                uid,
                audio_path or "",
                (record.get(columns["text"]) or "").strip(),
                label,
                (record.get(columns["speaker"]) or "").strip(),
                **extra,
            )
        )
    if missing:
        raise DataError(
            f"generic: {len(missing)} audio file(s) named in {path} do not exist under {root} "
            f"(e.g. {', '.join(missing[:3])}); fix the paths or ROOT"
        )
    return require(rows, "generic", root, f"{path} has no data rows")
