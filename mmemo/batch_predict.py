"""Batch prediction to a file that survives a kill and shards: what `mmemo predict-batch` runs.

Rows are scored by `mmemo.row_scoring.predict_rows` (chunks of rows in input order, each sorted by duration into
batches). `predict_to_file` streams the results into `OUT.partial` a chunk at a time, each chunk written whole,
flushed and fsynced, so a kill loses at most the chunk in flight; when every row is in, the file is checked (each
row once, in input order) and renamed to OUT, so a file under the final name is always complete.

`resume` continues `OUT.partial`: a torn last record (a kill mid-write) is cut off, ids already written are skipped,
and a chunk that was partly written is scored again whole (the same batches) with only its missing rows added.
`shard=(i, n)` takes chunks i, i + n, i + 2n, ...: a deterministic 1/n by row order rather than by a hash of the
id, dealt by chunk so that a shard forms exactly the batches one process forms and the shards merged equal one
run (a clip's scores depend a little on its batch neighbours, see `mmemo.row_scoring`). Every shard must be given
the same input, `--split`, `--chunk-rows` and `--batch-size`. `merge_predictions` joins the shards' outputs and
refuses a row that is missing or written twice.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from mmemo.errors import DataError
from mmemo.io import atomic_write, check_output
from mmemo.row_scoring import CHUNK_ROWS, chunk_ranges, predict_rows

if TYPE_CHECKING:
    from mmemo.inference import EmotionRecognizer

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
OUTPUT_SUFFIXES = (".csv", ".jsonl")
PARTIAL_SUFFIX = ".partial"


def batch_inputs(source: str | os.PathLike, split: str | None = None) -> list[dict]:
    """Rows ({id, audio, text, label, split, speaker, start, end}) from an input file, or one per audio file under
    a folder.

    An input file (.jsonl/.csv) needs only `audio` and/or `text` per row (see `mmemo.data.manifest.read_inputs`);
    a full manifest works too. A folder gives one row per audio file, searched recursively, its id the path below
    the folder without the suffix.

    Args:
        source: the input file or folder.
        split: keep only the rows of this split (needs a `split` column).

    Raises:
        DataError: the file is invalid or repeats an id (naming both lines), the folder holds no audio files or two
            that give one id (a.wav and a.flac), or `split` selects no row.
    """
    from mmemo.data.manifest import read_inputs

    source = Path(source)
    if not source.is_dir():
        rows = read_inputs(source)
    else:
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
        if not files:
            raise DataError(f"{source}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this folder or below")
        rows, seen = [], {}
        for p in files:
            row_id = p.relative_to(source).with_suffix("").as_posix()
            if row_id in seen:
                raise DataError(
                    f"{source}: {seen[row_id].name} and {p.name} both give the id {row_id!r}; ids must be unique, "
                    "so rename one, or list the files in a .csv/.jsonl input with an id column"
                )
            seen[row_id] = p
            empty = {"text": "", "label": "", "split": "", "speaker": "", "start": None, "end": None}
            rows.append({"id": row_id, "audio": str(p), **empty})
    if split is None:
        return rows
    kept = [row for row in rows if row["split"] == split.lower()]
    if not kept:
        present = sorted({row["split"] for row in rows if row["split"]})
        found = f"its splits are {', '.join(present)}" if present else "it has no split column"
        raise DataError(f"{source}: no rows of split {split!r} ({found}); drop --split or choose another")
    return kept


def parse_shard(text: str) -> tuple[int, int]:
    """`"I/N"` (0 <= I < N) as (I, N), e.g. "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT".

    Raises:
        DataError: not two integers with 0 <= I < N.
    """
    index, _, count = str(text).partition("/")
    try:
        shard = int(index), int(count)
    except ValueError:
        shard = None
    if shard is None or not 0 <= shard[0] < shard[1]:
        raise DataError(f"--shard {text!r}: give I/N with 0 <= I < N, e.g. 0/4 for the first of four shards")
    return shard


class _Record(NamedTuple):
    """One result as read back from an output file: its id, its exact bytes, its fields and first line number."""

    id: str
    raw: bytes
    fields: dict
    line: int


def predict_to_file(
    recognizer: EmotionRecognizer,
    source: str | os.PathLike,
    output: str | os.PathLike,
    batch_size: int = 16,
    overwrite: bool = False,
    progress: bool = True,
    split: str | None = None,
    resume: bool = False,
    shard: tuple[int, int] | None = None,
    workers: int = 0,
    chunk_rows: int = CHUNK_ROWS,
    transcriber=None,
) -> dict:
    """Predict every row of an input file (or every audio file under a folder); write one result per row.

    Results stream into `OUTPUT.partial` chunk by chunk and the file becomes `output` when every row is in (see the
    module docstring). The output lists rows in input order. A row whose audio cannot be read gets an empty label
    and an `error`; it does not stop the run. With a `label` column in the input it is written as `true_label` and
    the rows whose label is in the model's set are scored (accuracy and UA, `mmemo.metrics`).

    Args:
        recognizer: the model.
        source: a .jsonl/.csv file whose rows have `audio` and/or `text` (optional `id`, `label`, `split`,
            `speaker`, `start`, `end`; a manifest works), or a folder of audio files.
        output: a `.csv` (id, path, [transcript, transcript_source,] [true_label,] label, prob_<label>..., error)
            or `.jsonl` file.
        batch_size: rows per batch.
        overwrite: replace an existing `output` (when the new one is complete) and an interrupted `.partial`.
        progress: a progress bar on a terminal.
        split: predict only the rows of this split.
        resume: continue an interrupted run (`OUTPUT.partial`) or complete a finished one; ids already written are
            skipped. Without a previous run it starts one.
        shard: (i, n): predict only chunks i, i + n, ... of the rows (`parse_shard`); merge with `merge_predictions`.
        workers: DataLoader worker processes decoding audio.
        chunk_rows: rows per written chunk; keep it, `batch_size` and `split` the same across shards and resumes.
        transcriber: a `mmemo.asr.Transcriber` for rows without text (adds `transcript` and `transcript_source`).

    Returns:
        {"output": Path, "rows": rows this run covers (its shard), "written": rows predicted now, "resumed": rows
        found already written, "errors": error rows in the output, "scores": metrics of the labelled rows
        (`classification_metrics`) or None, "unscored": labelled rows not scored (label outside the model's set,
        or failed), "torn": whether a torn last record was cut off}.

    Raises:
        DataError: bad output suffix, output is `source`, exists without `overwrite`/`resume`, or an interrupted
            `.partial` is there without either; `resume` with `overwrite`; an unusable source; an output to resume
            that another command, input or shard wrote (other columns, ids outside this run, an id twice).
    """
    if resume and overwrite:
        raise DataError("--resume continues an output and --overwrite replaces it; give one of them")
    output = check_output(output, source, overwrite=overwrite or resume, suffixes=OUTPUT_SUFFIXES, what="predictions")
    partial = output.with_name(output.name + PARTIAL_SUFFIX)
    if partial.exists() and not (resume or overwrite):
        raise DataError(
            f"{partial} is left from an interrupted run; pass --resume to continue it, or --overwrite to start over"
        )
    rows = batch_inputs(source, split)
    chunks = chunk_ranges(len(rows), chunk_rows)
    if shard is not None:
        chunks = chunks[shard[0] :: shard[1]]
    scope = {rows[i]["id"]: i for chunk in chunks for i in chunk}
    truth = any(row["label"] for row in rows)  # of every row, not the shard's: every shard writes one layout
    layout = _Layout(output.suffix.lower() == ".csv", tuple(recognizer.labels), truth, transcriber is not None)
    done, torn = set(), False
    if resume and (partial.exists() or output.exists()):
        existing = partial if partial.exists() else output
        records, torn = _resume_records(existing, layout, scope, cut_torn=existing == partial)
        done = {record.id for record in records}
        if existing == output and len(done) < len(scope):  # rows added to the input since: complete it in a copy
            shutil.copyfile(output, partial)
    else:
        partial.unlink(missing_ok=True)
        _append(partial, layout.header())
    todo = [chunk for chunk in chunks if any(rows[i]["id"] not in done for i in chunk)]
    written = 0
    for chunk, results in predict_rows(
        recognizer, rows, todo, batch_size, workers=workers, transcriber=transcriber, progress=progress
    ):
        new = [(rows[i], result) for i, result in zip(chunk, results) if rows[i]["id"] not in done]
        _append(partial, b"".join(layout.encode(row, result) for row, result in new))
        written += len(new)
    if partial.exists():
        records = _finish(partial, output, scope)
    scores, unscored = _score(records, recognizer.labels)
    return {
        "output": output,
        "rows": len(scope),
        "written": written,
        "resumed": len(done),
        "errors": sum(bool(r.fields.get("error")) for r in records),
        "scores": scores,
        "unscored": unscored,
        "torn": torn,
    }


def merge_predictions(
    source: str | os.PathLike,
    parts: list[str | os.PathLike],
    output: str | os.PathLike,
    split: str | None = None,
    overwrite: bool = False,
) -> dict:
    """Join the outputs of `predict_to_file` shards into one, in input order, checking each input row is in once.

    Args:
        source: the input the shards predicted (and `split`, as they were given it).
        parts: the shards' finished outputs, all .csv or all .jsonl (a shard's `.partial` is not finished).
        output: the merged file, of the parts' format; written atomically.
        split: as given to the shards.
        overwrite: replace an existing `output`.

    Returns:
        {"output": Path, "rows", "parts": number of parts, "errors", "scores", "unscored"} as `predict_to_file`.

    Raises:
        DataError: a part missing or unfinished, of another format, columns or labels than the first; an id in
            two parts (or twice in one), or not in the input; input rows in no part (the message names them).
    """
    output = check_output(output, source, overwrite=overwrite, suffixes=OUTPUT_SUFFIXES, what="merged predictions")
    if not parts:
        raise DataError("--merge needs the shards' outputs")
    rows = batch_inputs(source, split)
    index = {row["id"]: i for i, row in enumerate(rows)}
    header, labels, by_id = None, None, {}
    for part in map(Path, parts):
        if not part.is_file():
            unfinished = part.with_name(part.name + PARTIAL_SUFFIX)
            if unfinished.exists():
                raise DataError(f"shard output {part} is not finished ({unfinished} is there); resume its shard")
            raise DataError(f"shard output {part} does not exist")
        if part.suffix.lower() != output.suffix.lower():
            raise DataError(f"shard output {part} is not a {output.suffix} file like {output}; merge one format")
        if part.resolve() == output.resolve():
            raise DataError(f"the merged output {output} is one of the parts; choose another path")
        part_header, records, torn = _read_records(part)
        if torn:
            raise DataError(f"{part}: its last record is incomplete, so it is not a finished output; resume its shard")
        if header is None:
            header, labels = part_header, _labels_in(part_header, records)
        _check_labels(part, part_header, records, labels)
        if part_header != header:
            raise DataError(
                f"{part} has other columns than {parts[0]} ({part_header} vs {header}); merge one run's parts"
            )
        for record in records:
            if record.id not in index:
                raise DataError(
                    f"{part}:{record.line}: id {record.id!r} is not in {source}; is it another input's part?"
                )
            if record.id in by_id:
                first_part, first = by_id[record.id]
                raise DataError(
                    f"id {record.id!r} is in {first_part}:{first.line} and in {part}:{record.line}; a row must be in "
                    "one part only (were two shards given the same I/N, or one part listed twice?)"
                )
            by_id[record.id] = (part, record)
    missing = [row["id"] for row in rows if row["id"] not in by_id]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise DataError(
            f"{len(missing)} of {len(rows)} input rows are in no part ({shown}): a shard's output is left out, or "
            "a shard has not finished (its OUTPUT.partial), or the shards were given another --split or --chunk-rows"
        )
    records = [by_id[row["id"]][1] for row in rows]
    with atomic_write(output, "wb") as f:
        f.write(header or b"")
        for record in records:
            f.write(record.raw)
    scores, unscored = _score(records, labels)
    return {
        "output": output,
        "rows": len(records),
        "parts": len(parts),
        "errors": sum(bool(r.fields.get("error")) for r in records),
        "scores": scores,
        "unscored": unscored,
    }


class _Layout(NamedTuple):
    """What an output file holds: CSV or JSON Lines, the model's labels, and the optional columns."""

    csv: bool
    labels: tuple[str, ...]
    truth: bool  # the input has labels: a true_label column
    asr: bool  # rows may be transcribed: transcript and transcript_source columns

    def header(self) -> bytes:
        """The CSV header line (JSON Lines files have none)."""
        if not self.csv:
            return b""
        return _csv_line(
            [
                "id",
                "path",
                *(["transcript", "transcript_source"] if self.asr else []),
                *(["true_label"] if self.truth else []),
                "label",
                *(f"prob_{label}" for label in self.labels),
                "error",
            ]
        )

    def encode(self, row: dict, result) -> bytes:
        """One row's result as a CSV line or a JSON line."""
        heard = [row["text"], row.get("transcript_source") or ""] if self.asr else []
        given = [row["label"]] if self.truth else []
        if self.csv:
            if isinstance(result, str):  # an error message
                predicted = ["", *[""] * len(self.labels), result]
            else:
                predicted = [result.label, *(f"{result.probabilities[label]:.6f}" for label in self.labels), ""]
            return _csv_line([row["id"], row["audio"], *heard, *given, *predicted])
        record = {"id": row["id"], "path": row["audio"]}
        record |= dict(zip(("transcript", "transcript_source"), heard)) | dict(zip(("true_label",), given))
        if isinstance(result, str):
            record |= {"label": None, "error": result}
        else:
            record |= {k: v for k, v in result.to_dict().items() if k != "segments" or v}
        return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")


def _csv_line(values: list) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(values)
    return buffer.getvalue().encode("utf-8")


def _append(path: Path, data: bytes) -> None:
    """Append `data` to `path` and make it durable before returning: a kill after this loses none of it."""
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _read_records(path: Path) -> tuple[bytes | None, list[_Record], bool]:
    """An output file's CSV header line (b"" for JSON Lines; None for a CSV file without a whole header), its
    whole records, and whether a torn last record (a write cut short by a kill) follows them.

    A record is whole when its line ends; a CSV record (which may span lines in quotes) also when it reads back as
    the bytes the csv module writes for it. Anything else that is not a record is an error: records are only ever
    appended whole, so only the last one can be torn.

    Raises:
        DataError: a record before the last is not one (the file was changed, or is no predict-batch output).
    """
    data = path.read_bytes()
    pieces = data.split(b"\n")
    lines = [piece + b"\n" for piece in pieces[:-1]] + ([pieces[-1]] if pieces[-1] else [])
    is_csv = path.name.lower().removesuffix(PARTIAL_SUFFIX).endswith(".csv")
    if not is_csv:
        records = []
        for number, line in enumerate(lines, 1):
            if not line.endswith(b"\n"):
                return b"", records, True
            try:
                fields = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                fields = None
            if not isinstance(fields, dict) or not isinstance(fields.get("id"), str):
                raise DataError(f"{path}:{number}: not a predict-batch JSON record; was the file changed?")
            records.append(_Record(fields["id"], line, fields, number))
        return b"", records, False

    consumed = 0

    def feed() -> Iterator[str]:
        nonlocal consumed
        for line in lines:
            consumed += 1
            yield line.decode("utf-8", errors="surrogateescape")

    header, records, start = None, [], 0
    for values in csv.reader(feed()):  # the reader pulls lines one record at a time
        raw, number, start = b"".join(lines[start:consumed]), start + 1, consumed
        if raw != _csv_line(values):  # not as written: only the torn last record may be so
            if consumed == len(lines):
                return header, records, True
            raise DataError(f"{path}:{number}: not a predict-batch CSV record; was the file changed?")
        if header is None:
            header, columns = raw, values
            continue
        if len(values) != len(columns):
            raise DataError(f"{path}:{number}: {len(values)} fields under {len(columns)} columns; was it changed?")
        records.append(_Record(values[0], raw, dict(zip(columns, values)), number))
    return header, records, False


def _resume_records(partial: Path, layout: _Layout, scope: dict, cut_torn: bool) -> tuple[list[_Record], bool]:
    """The whole records of an output to resume, after cutting off a torn last record (`cut_torn`: a `.partial`);
    (records, torn).

    Raises:
        DataError: the file holds other columns or labels than this run writes, an id twice, or an id outside
            this run's rows (another input, --split or --shard wrote it); a finished output with a torn end.
    """
    header, records, torn = _read_records(partial)
    if torn and not cut_torn:
        raise DataError(f"{partial}: its last record is incomplete, which predict-batch never leaves; was it changed?")
    if layout.csv and header is None:  # killed before the header was whole: nothing of it counts
        partial.write_bytes(layout.header())
        return [], torn
    if header != layout.header():
        raise DataError(
            f"{partial} has the columns {header.decode(errors='replace').strip()!r}, but this run writes "
            f"{layout.header().decode().strip()!r}: another model, or other options (--asr, a label column), wrote "
            "it; resume it with the same command, or start over with --overwrite"
        )
    if not layout.csv:
        _check_labels(partial, b"", records, list(layout.labels))
    if torn:
        os.truncate(partial, len(header) + sum(len(record.raw) for record in records))
    seen = {}
    for record in records:
        if record.id in seen:
            raise DataError(
                f"{partial}: id {record.id!r} is written twice (lines {seen[record.id]} and {record.line}); "
                "was the file changed? Start over with --overwrite"
            )
        if record.id not in scope:
            raise DataError(
                f"{partial}:{record.line}: id {record.id!r} is not among the rows of this run (its input, --split "
                "and --shard choose them); was it written by another input or shard?"
            )
        seen[record.id] = record.line
    return records, torn


def _finish(partial: Path, output: Path, scope: dict) -> list[_Record]:
    """Check that the streamed file holds each row of the run once, and put it in place as `output`, in input
    order (only a resumed run, which completed a torn chunk at the end, needs them sorted); returns its records.

    Raises:
        DataError: a row is missing or written twice (the file was changed while the run went on).
    """
    header, records, torn = _read_records(partial)
    ids = [record.id for record in records]
    if torn or len(ids) != len(scope) or set(ids) != set(scope):
        missing = len(set(scope) - set(ids))
        raise DataError(
            f"{partial}: {len(ids)} records for {len(scope)} rows ({missing} missing); was it changed during the "
            "run? Run the same command with --resume"
        )
    positions = [scope[i] for i in ids]
    if positions == sorted(positions):
        os.replace(partial, output)
        return records
    records = [records[k] for k in np.argsort(positions, kind="stable")]
    with atomic_write(output, "wb") as f:
        f.write(header or b"")
        for record in records:
            f.write(record.raw)
    partial.unlink()
    return records


def _labels_in(header: bytes | None, records: list[_Record]) -> list[str]:
    """The model labels an output was written with: its prob_ columns, or a JSON record's probabilities."""
    if header:
        columns = next(csv.reader([header.decode("utf-8", errors="surrogateescape")]))
        return [c.removeprefix("prob_") for c in columns if c.startswith("prob_")]
    return next((list(r.fields["probabilities"]) for r in records if r.fields.get("probabilities")), [])


def _check_labels(path: Path, header: bytes | None, records: list[_Record], labels: list[str]) -> None:
    found = _labels_in(header, records)
    if found and labels and found != list(labels):
        raise DataError(f"{path} holds probabilities of the labels {found}, where {list(labels)} were expected")


def _score(records: list[_Record], labels: list[str]) -> tuple[dict | None, int]:
    """Metrics over the predicted records whose `true_label` is in the model's label set; and how many labelled
    records could not be scored."""
    index = {label: i for i, label in enumerate(labels)}
    labelled = [r.fields for r in records if r.fields.get("true_label")]
    scored = [f for f in labelled if f["true_label"] in index and f.get("label") in index]
    if not scored:
        return None, len(labelled)
    from mmemo.metrics import classification_metrics  # scikit-learn: only when there is something to score

    y_true = [index[f["true_label"]] for f in scored]
    y_pred = [index[f["label"]] for f in scored]
    return classification_metrics(y_true, y_pred, len(labels)), len(labelled) - len(scored)
