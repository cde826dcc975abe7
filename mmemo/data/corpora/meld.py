"""MELD importer: rows from `MELD.Raw/{train,dev,test}_sent_emo.csv`, audio decoded from the release's .mp4 clips
to 16 kHz mono wavs with ffmpeg (or no audio at all with `text_only`)."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mmemo.data.corpora._common import Option, check_root, locate, read_text, require, row
from mmemo.errors import DataError

EMOTIONS = {
    "neutral": "neutral",
    "joy": "happy",
    "sadness": "sad",
    "anger": "angry",
    "surprise": "surprised",
    "fear": "fearful",
    "disgust": "disgusted",
}
SENTIMENTS = {"neutral": "neutral", "positive": "positive", "negative": "negative"}
# Official split -> (its CSV, the folder its clips unpack to).
SPLITS = {
    "train": ("train_sent_emo.csv", "train_splits"),
    "valid": ("dev_sent_emo.csv", "dev_splits_complete"),
    "test": ("test_sent_emo.csv", "output_repeated_splits_test"),
}
COLUMNS = ("Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID")

OPTIONS = {
    "meld": {
        "sentiment": Option(bool, False, "label with the 3 sentiments instead of the 7 emotions"),
        "text_only": Option(bool, False, 'no audio: rows get audio "" and no ffmpeg is needed'),
        "audio_dir": Option(str, None, "where decoded wavs go (default: meld_audio/ next to the manifest)"),
        "skip_missing": Option(bool, False, "drop utterances whose clip is missing or fails to decode"),
        "jobs": Option(int, 4, "ffmpeg processes run at once"),
    }
}
_HINT = "point ROOT at MELD.Raw (or its parent), the folder with train_, dev_ and test_sent_emo.csv"


def import_meld(
    root: Path,
    *,
    sentiment: bool = False,
    text_only: bool = False,
    audio_dir: str | None = None,
    skip_missing: bool = False,
    jobs: int = 4,
) -> list[dict]:
    """Rows for MELD's official train/dev/test splits (dev becomes "valid").

    Args:
        root: `MELD.Raw` or a folder above it; the clip folders (`train_splits/`, `dev_splits_complete/`,
            `output_repeated_splits_test/`) may sit in it or one level down (e.g. `MELD.Raw/train/train_splits`).
        sentiment: label with Sentiment (neutral/positive/negative) instead of Emotion (neutral, happy = joy, sad,
            angry, surprised, fearful, disgusted).
        text_only: skip audio entirely (audio ""), for text baselines or when ffmpeg is unavailable.
        audio_dir: folder for the decoded `<split>_dia<D>_utt<U>.wav` files (16 kHz mono); wavs already there are
            reused, so an interrupted run resumes. Default: `meld_audio/` in the current folder (`prepare` puts it
            next to the output manifest).
        skip_missing: drop rows whose clip is missing or fails to decode, with a warning, instead of failing
            (the public release lacks a few clips).
        jobs: ffmpeg processes to run in parallel.

    Returns:
        Rows with the Speaker column as `speaker`, no `fold` (MELD has one official split).

    Raises:
        DataError: a CSV is missing or lacks a column; clips are missing (unless `skip_missing`); ffmpeg is not
            installed; ffmpeg fails on a clip (unless `skip_missing`).
    """
    release = locate(check_root(root, "meld"), "*_sent_emo.csv", "meld", _HINT)
    label_column, label_map = ("Sentiment", SENTIMENTS) if sentiment else ("Emotion", EMOTIONS)
    rows, clips = [], {}
    for split, (csv_name, clip_folder) in SPLITS.items():
        clip_dir = _clip_folder(release, clip_folder)
        for record in _read_csv(release / csv_name):
            clip = f"dia{record['Dialogue_ID'].strip()}_utt{record['Utterance_ID'].strip()}"
            uid = f"{split}_{clip}"
            label = label_map.get(record[label_column].strip().lower())
            if label is None:
                raise DataError(f"meld: {release / csv_name}: unknown {label_column} {record[label_column]!r} in {uid}")
            rows.append(
                row("meld", uid, "", fix_text(record["Utterance"]), label, record["Speaker"].strip(), split=split)
            )
            clips[rows[-1]["id"]] = clip_dir / f"{clip}.mp4"
    require(rows, "meld", release, _HINT)
    if text_only:
        return rows
    return _attach_audio(rows, clips, Path(audio_dir or "meld_audio"), skip_missing, jobs)


def fix_text(text: str) -> str:
    """Undo MELD's encoding damage: UTF-8 read as cp1252 ("â€™") and cp1252 bytes kept as C1 controls (U+0092)."""
    if "â€" in text or "Ã" in text:
        try:
            text = text.encode("cp1252").decode("utf-8")
        except UnicodeError:
            pass
    # U+0080..U+009F are never meant as controls here: they are the cp1252 punctuation bytes (’ … — “ ”).
    return "".join(
        ch.encode("latin-1").decode("cp1252", errors="ignore") if "\x80" <= ch <= "\x9f" else ch for ch in text
    ).strip()


def _read_csv(path: Path) -> list[dict]:
    """The records of one MELD CSV (UTF-8, or cp1252 in some copies)."""
    if not path.is_file():
        raise DataError(
            f"meld: {path} is missing; MELD.Raw must hold train_sent_emo.csv, dev_sent_emo.csv and test_sent_emo.csv"
        )
    reader = csv.DictReader(io.StringIO(read_text(path, ("utf-8-sig", "cp1252")), newline=""))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise DataError(f"meld: {path} lacks column(s) {', '.join(missing)}; is it an official MELD CSV?")
    return list(reader)


def _clip_folder(release: Path, name: str) -> Path:
    """Where a split's clips are: `release/name`, or `release/*/name` when the archives were unpacked one level down."""
    nested = sorted(release.glob(f"*/{name}"))
    return nested[0] if nested and not (release / name).is_dir() else release / name


def _attach_audio(
    rows: list[dict], clips: dict[str, Path], audio_dir: Path, skip_missing: bool, jobs: int
) -> list[dict]:
    """Decode every row's clip into `audio_dir` and set its `audio`; drop or fail on missing/undecodable clips."""
    missing = [rid for rid, clip in clips.items() if not clip.is_file()]
    if missing and not skip_missing:
        examples = ", ".join(str(clips[rid]) for rid in missing[:3])
        raise DataError(
            f"meld: {len(missing)} of {len(clips)} clips are missing (e.g. {examples}); unpack train.tar.gz, "
            "dev.tar.gz and test.tar.gz inside MELD.Raw, or use --skip-missing to drop them, or --text-only"
        )
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise DataError(
            "meld: ffmpeg is not installed (needed to take the audio out of the .mp4 clips); install it "
            "(e.g. `apt install ffmpeg` or `conda install ffmpeg`) or use --text-only"
        )
    audio_dir.mkdir(parents=True, exist_ok=True)
    todo = {
        r["id"]: (clips[r["id"]], audio_dir / f"{r['id'].removeprefix('meld-')}.wav")
        for r in rows
        if r["id"] not in missing
    }
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        errors = dict(zip(todo, pool.map(lambda job: _decode(ffmpeg, *job), todo.values())))
    failed = {rid: err for rid, err in errors.items() if err}
    if failed and not skip_missing:
        examples = "; ".join(f"{todo[rid][0]}: {err}" for rid, err in list(failed.items())[:3])
        raise DataError(f"meld: ffmpeg failed on {len(failed)} clip(s) ({examples}); use --skip-missing to drop them")
    dropped = set(missing) | set(failed)
    if dropped:
        warnings.warn(
            f"meld: dropped {len(dropped)} utterance(s) whose clip is missing or does not decode "
            f"(e.g. {', '.join(sorted(dropped)[:3])})",
            stacklevel=3,
        )
    kept = [r for r in rows if r["id"] not in dropped]
    for r in kept:
        r["audio"] = str(todo[r["id"]][1].resolve())
    return kept


def _decode(ffmpeg: str, clip: Path, wav: Path) -> str:
    """Decode `clip`'s audio to a 16 kHz mono `wav` (kept if already there); returns "" or ffmpeg's error."""
    if wav.is_file() and wav.stat().st_size > 0:
        return ""
    # Write to a temporary name first so an interrupted run never leaves a truncated wav that looks finished.
    partial = wav.with_suffix(".part.wav")
    result = subprocess.run(
        [
            ffmpeg,
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-i",
            str(clip),
            "-vn",
            "-ac",
            "1",
            "-ar",
            "16000",
            str(partial),
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        return (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
    partial.replace(wav)
    return ""
