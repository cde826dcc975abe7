"""Check a manifest before training: decode every row and list everything that would fail or mislead.

    report = check_manifest("data/iemocap.jsonl", labels=["angry", "happy", "neutral", "sad"])
    print(format_report(report))
    if report.ok: write_clean(report, "data/iemocap.clean.jsonl")

Unlike `read_manifest`, which stops at the first bad row, the check reads rows leniently and reports each problem
with its line number, what is wrong and what to do. Row errors (the row is dropped by `write_clean`): unparsable
or invalid rows, duplicate ids (the later rows), missing, unreadable, empty, truncated or NaN/inf audio, clips
shorter than `min_seconds`, rows with neither text nor audio, and unknown labels (not in `labels`, or, without
`labels`, in valid/test but not in train). Manifest errors (no row can be dropped to fix them): speakers shared
between splits, i.e. leakage, and an empty manifest. Warnings: empty text on a row with audio (an audio-only
row) and clips longer than `max_seconds` (training crops them to `data.max_audio_seconds`).
"""

from __future__ import annotations

import csv
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from mmemo.data.audio import load_audio
from mmemo.data.manifest import REQUIRED, SPLITS, jsonl_objects, validate_row, write_manifest
from mmemo.errors import DataError
from mmemo.io import check_output
from mmemo.progress import progress_bar


@dataclass(frozen=True)
class Problem:
    """One finding: `line` and `id` are None for problems of the whole manifest (such as leakage)."""

    kind: str  # short name, e.g. "missing-file", "leakage"
    message: str  # what is wrong
    fix: str  # what to do
    line: int | None = None
    id: str | None = None

    def __str__(self) -> str:
        where = f"line {self.line}" + (f" ({self.id})" if self.id else "") if self.line else "manifest"
        return f"{where}: [{self.kind}] {self.message}; {self.fix}"


@dataclass(frozen=True)
class CheckReport:
    """What `check_manifest` found: errors, warnings, summary tables and the rows that passed."""

    path: Path
    rows: int  # data rows read (good and bad)
    errors: tuple[Problem, ...]
    warnings: tuple[Problem, ...]
    # "labels": {label: {split: count}}, "durations": {split: {min, p5, median, p95, max}},
    # "text_chars" / "text_words": {split: quantiles}, "speakers": {split: count}
    tables: dict = field(default_factory=dict)
    good_rows: tuple[dict, ...] = ()  # validated rows without row errors, audio paths absolute

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def manifest_errors(self) -> tuple[Problem, ...]:
        """Errors of the whole manifest (leakage), which dropping rows cannot fix."""
        return tuple(p for p in self.errors if p.line is None)

    def to_dict(self) -> dict:
        def problems(ps):
            return [{"kind": p.kind, "line": p.line, "id": p.id, "message": p.message, "fix": p.fix} for p in ps]

        return {
            "path": str(self.path),
            "rows": self.rows,
            "good_rows": len(self.good_rows),
            "ok": self.ok,
            "errors": problems(self.errors),
            "warnings": problems(self.warnings),
            "tables": self.tables,
        }


def check_manifest(
    path: str | os.PathLike,
    *,
    labels: list[str] | None = None,
    min_seconds: float = 0.1,
    max_seconds: float = 30.0,
    progress: bool = True,
) -> CheckReport:
    """Read, validate and decode every row of a manifest and summarise it.

    Args:
        path: a JSONL or CSV manifest.
        labels: the allowed label set; None checks only that valid/test labels occur in train.
        min_seconds: shorter clips are errors (too short for the audio encoder's convolutions).
        max_seconds: longer clips are warnings (training crops them).
        progress: show a progress bar while decoding.

    Returns:
        A CheckReport; `report.ok` is False when there is any error.

    Raises:
        DataError: `path` is not a file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest {path} does not exist")
    errors, warnings = [], []
    rows = []  # (line, row) of rows that passed validation
    first_line = {}
    raw_rows = _read_lenient(path, errors)
    n_rows = len(raw_rows) + sum(p.line is not None for p in errors)  # + lines that did not parse
    for line, raw in raw_rows:
        try:
            row = validate_row(raw, where=f"{path}:{line}")
        except DataError as e:
            reason = str(e).removeprefix(f"{path}:{line}: ")
            errors.append(
                Problem(
                    "invalid-row",
                    reason,
                    "fix the row or remove it",
                    line,
                    str(raw.get("id")) if raw.get("id") else None,
                )
            )
            continue
        if row["id"] in first_line:
            errors.append(
                Problem(
                    "duplicate-id",
                    f"id {row['id']!r} first appeared at line {first_line[row['id']]}",
                    "give every row a unique id",
                    line,
                    row["id"],
                )
            )
            continue
        first_line[row["id"]] = line
        if row["audio"] and not os.path.isabs(row["audio"]):
            row["audio"] = str((path.parent / row["audio"]).resolve())
        rows.append((line, row))
    if not n_rows:
        errors.append(Problem("empty-manifest", f"{path} has no rows", "write at least one row"))

    durations = {}  # line -> seconds of the rows that decoded
    for line, row in progress_bar(rows, enabled=progress, desc=f"checking {path.name}", unit="row"):
        problems, seconds = _check_row(line, row, min_seconds, max_seconds)
        if seconds is not None:
            durations[line] = seconds
        errors += [p for p, is_error in problems if is_error]
        warnings += [p for p, is_error in problems if not is_error]
    errors += _check_labels(rows, labels)
    errors += _check_leakage(rows)
    bad = {p.line for p in errors if p.line is not None}
    good = [row for line, row in rows if line not in bad]
    return CheckReport(
        path,
        n_rows,
        tuple(sorted(errors, key=_order)),
        tuple(sorted(warnings, key=_order)),
        _tables(rows, durations),
        tuple(good),
    )


def write_clean(report: CheckReport, output: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write the rows that passed the check to `output` (JSONL, or CSV for .csv), audio paths absolute.

    Raises:
        DataError: `output` is the checked manifest, `output` exists and `overwrite` is false, the manifest has
            errors no row removal fixes (speaker leakage: re-split it by speaker instead), or no row passed.
    """
    output = check_output(output, report.path, overwrite=overwrite, what="clean manifest")
    if report.manifest_errors:
        raise DataError("not writing a clean manifest: " + "; ".join(str(p) for p in report.manifest_errors))
    if not report.good_rows:
        raise DataError(f"no row of {report.path} passed the check; nothing to write")
    return write_manifest(report.good_rows, output)


def format_report(report: CheckReport) -> str:
    """Errors, warnings and the summary tables as Markdown-ish text for the terminal."""
    t = report.tables
    lines = [
        f"# {report.path}: {report.rows} rows, {len(report.good_rows)} good, {len(report.errors)} error(s), "
        f"{len(report.warnings)} warning(s)",
        "",
    ]
    splits = [s for s in SPLITS if s in t.get("speakers", {})]
    if t.get("labels"):
        lines += [
            "## Labels × split",
            _table(
                ["label", *splits, "total"],
                [[label, *(by.get(s, 0) for s in splits), sum(by.values())] for label, by in t["labels"].items()],
            ),
            "",
        ]
        lines += ["## Speakers per split", _table(["split", "speakers"], [[s, t["speakers"][s]] for s in splits]), ""]
    for key, title in (
        ("durations", "Duration (s)"),
        ("text_chars", "Text length (characters)"),
        ("text_words", "Text length (words)"),
    ):
        if t.get(key):
            lines += [
                f"## {title}",
                _table(["split", *_QUANTILES], [[s, *(_fmt(q[k]) for k in _QUANTILES)] for s, q in t[key].items()]),
                "",
            ]
    for name, problems in (("Errors", report.errors), ("Warnings", report.warnings)):
        if problems:
            lines += [f"## {name} ({len(problems)})", *(f"- {p}" for p in problems), ""]
    lines.append("OK: no errors" if report.ok else f"FAILED: {len(report.errors)} error(s)")
    return "\n".join(lines)


_QUANTILES = ("min", "p5", "median", "p95", "max")


def _order(p: Problem) -> tuple:
    return (p.line is not None, p.line or 0, p.kind)


def _read_lenient(path: Path, errors: list) -> list[tuple[int, dict]]:
    """(line, raw dict) for every row that parses; a Problem in `errors` for each line that does not."""
    out = []
    if path.suffix.lower() == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            missing = [k for k in REQUIRED if k not in (reader.fieldnames or [])]
            if missing:
                errors.append(
                    Problem(
                        "missing-column",
                        f"the header lacks {', '.join(missing)}",
                        f"a manifest needs the columns {', '.join(REQUIRED)}",
                    )
                )
            line = 1
            for raw in reader:
                line_start, line = line + 1, reader.line_num
                if None in raw:
                    errors.append(
                        Problem(
                            "invalid-row",
                            f"{len(raw[None])} more field(s) than the header",
                            "quote fields that contain commas",
                            line_start,
                        )
                    )
                    continue
                out.append((line_start, {k: v for k, v in raw.items() if v is not None}))  # short row: missing
        return out
    for line, raw, problem in jsonl_objects(path, encoding_errors="replace"):
        if problem:
            errors.append(Problem("invalid-row", problem, "each line must be one JSON object", line))
        else:
            out.append((line, raw))
    return out


def _check_row(line: int, row: dict, min_seconds: float, max_seconds: float) -> tuple[list, float | None]:
    """([(Problem, is_error)], seconds or None when there is no decodable audio) for one validated row."""
    make = lambda kind, message, fix: Problem(kind, message, fix, line, row["id"])  # noqa: E731
    if not row["text"].strip() and not row["audio"]:
        return [
            (
                make(
                    "no-input",
                    "the row has neither text nor audio",
                    "add a transcript or an audio path, or drop the row",
                ),
                True,
            )
        ], None
    out = []
    if not row["text"].strip():
        out.append(
            (
                make(
                    "empty-text",
                    "empty text: the row is audio-only",
                    "fine for audio-only rows; add the transcript if there is one",
                ),
                False,
            )
        )
    if not row["audio"]:
        return out, None
    seconds, failure = _decode_seconds(row)
    if failure:
        return out + [(make(*failure), True)], None
    if seconds < min_seconds:
        out.append(
            (
                make(
                    "too-short",
                    f"{seconds:.3f} s is shorter than {min_seconds} s",
                    "drop the row or lower --min-seconds",
                ),
                True,
            )
        )
    elif seconds > max_seconds:
        out.append(
            (
                make(
                    "too-long",
                    f"{seconds:.1f} s is longer than {max_seconds} s",
                    "training crops it to data.max_audio_seconds; cut it into utterances if it holds several",
                ),
                False,
            )
        )
    return out, seconds


def _decode_seconds(row: dict) -> tuple[float | None, tuple[str, str, str] | None]:
    """(seconds, None) when the row's audio decodes with `load_audio`, else (None, (kind, message, fix))."""
    audio, redo = row["audio"], "re-export or re-download the file, or drop the row"
    if not os.path.isfile(audio):
        return None, (
            "missing-file",
            f"audio file {audio} does not exist",
            "fix the path (relative paths are resolved against the manifest's folder) or drop the row",
        )
    if os.path.getsize(audio) == 0:
        return None, ("empty-file", f"{audio} is 0 bytes", redo)
    truncated = _wav_truncation(audio)
    if truncated:
        return None, ("truncated", f"{audio}: {truncated}", redo)
    try:
        info = sf.info(audio)
    except Exception:  # not a libsndfile format: load_audio falls back to librosa
        info = None
    if info is not None and info.frames == 0:  # checked here: load_audio misreports (1, 0)-shaped audio as NaN
        return None, ("empty-audio", f"{audio} holds 0 samples", redo)
    rate = info.samplerate if info is not None else 16000  # the file's own rate: no resampling needed
    try:
        samples = load_audio(audio, rate, row["start"], row["end"])
    except DataError as e:
        message = str(e)
        kind = "nan-audio" if "NaN" in message else "empty-audio" if "empty" in message else "unreadable"
        return None, (kind, message, f"{redo}; or fix start/end" if row["start"] or row["end"] else redo)
    return len(samples) / rate, None


def _wav_truncation(path: str) -> str | None:
    """Why a RIFF/WAVE file is cut short (its data chunk claims more bytes than the file holds), else None.

    libsndfile quietly reads what is there, so a truncated file would otherwise pass as a shorter clip.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        header = f.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return "no data chunk (the file ends inside its header)"
            name, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if name == b"data":
                have = size - f.tell()
                if length != 0xFFFFFFFF and have < length:  # 0xFFFFFFFF: streamed wav of unknown length
                    return f"truncated: the data chunk declares {length} bytes but only {have} follow"
                return None
            f.seek(length + (length & 1), os.SEEK_CUR)


def _check_labels(rows: list[tuple[int, dict]], labels: list[str] | None) -> list[Problem]:
    if labels:
        known, why = set(labels), f"not in --labels {','.join(labels)}"
        candidates = rows
    else:
        known, why = {r["label"] for _, r in rows if r["split"] == "train"}, "does not occur in the train split"
        candidates = [(line, r) for line, r in rows if r["split"] != "train"]
    return [
        Problem(
            "unknown-label",
            f"label {r['label']!r} ({r['split']}) {why}",
            "fix the label, map it to a known one, or drop the row",
            line,
            r["id"],
        )
        for line, r in candidates
        if r["label"] not in known
    ]


def _check_leakage(rows: list[tuple[int, dict]]) -> list[Problem]:
    splits_of = {}
    for _, r in rows:
        if r["speaker"]:
            splits_of.setdefault(r["speaker"], set()).add(r["split"])
    shared = {s: sorted(v, key=SPLITS.index) for s, v in sorted(splits_of.items()) if len(v) > 1}
    if not shared:
        return []
    which = "; ".join(f"{s} in {'+'.join(v)}" for s, v in list(shared.items())[:20])
    more = f" (and {len(shared) - 20} more)" if len(shared) > 20 else ""
    return [
        Problem(
            "leakage",
            f"{len(shared)} speaker(s) appear in more than one split: {which}{more}",
            "scores on such a split overstate speaker-independent accuracy; re-split by speaker (each "
            "speaker in exactly one split, e.g. the importer's `fold` groups) instead of dropping rows",
        )
    ]


def _tables(rows: list[tuple[int, dict]], seconds: dict[int, float]) -> dict:
    """Label × split counts, speakers per split, and duration and text-length quantiles per split."""
    by_split = {s: [(line, r) for line, r in rows if r["split"] == s] for s in SPLITS}
    by_split = {s: lr for s, lr in by_split.items() if lr}
    labels = {}
    for _, r in rows:
        labels.setdefault(r["label"], {}).setdefault(r["split"], 0)
        labels[r["label"]][r["split"]] += 1
    return {
        "labels": dict(sorted(labels.items())),
        "speakers": {s: len({r["speaker"] for _, r in lr}) for s, lr in by_split.items()},
        "durations": {
            s: _quantiles([seconds[line] for line, _ in lr if line in seconds]) for s, lr in by_split.items()
        },
        "text_chars": {s: _quantiles([len(r["text"]) for _, r in lr]) for s, lr in by_split.items()},
        "text_words": {s: _quantiles([len(r["text"].split()) for _, r in lr]) for s, lr in by_split.items()},
    }


def _quantiles(values: list[float]) -> dict:
    if not values:
        return {k: None for k in _QUANTILES}
    q = np.percentile(np.asarray(values, dtype=float), [0, 5, 50, 95, 100])
    return {k: round(float(v), 3) for k, v in zip(_QUANTILES, q)}


def _fmt(value) -> str:
    return "–" if value is None else f"{value:g}"


def _table(header: list, body: list[list]) -> str:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|---|" + "---:|" * (len(header) - 1)]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in body])
