"""Helpers every corpus importer shares: finding the corpus folder, walking and parsing wav names, reading
text files of unknown encoding, speaker-disjoint split and fold assignment, and building rows."""

from __future__ import annotations

import os
import re
import warnings
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from mmemo.errors import DataError

# Speaker-disjoint corpora use this many speaker groups as folds; the default split is one rotation of that
# cross-validation (last fold test, the one before valid, the rest train), like IEMOCAP's session 5 / 4 / 1-3.
FOLDS = 5

# Spellings of split names in corpora and user CSVs -> manifest split names.
SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "valid": "valid",
    "validation": "valid",
    "val": "valid",
    "dev": "valid",
    "development": "valid",
    "eval": "valid",
    "evaluation": "valid",
    "test": "test",
    "testing": "test",
}


class Option(NamedTuple):
    """One importer option as a CLI can expose it: `--name` of `type` (bool: a flag), `default`, `help`."""

    type: type
    default: Any
    help: str
    choices: tuple | None = None


def row(corpus: str, uid: str, audio: Path | str, text: str, label: str, speaker: str, **extra) -> dict:
    """A manifest row; ids are prefixed with the corpus so manifests of several corpora can be concatenated."""
    out = {
        "id": f"{corpus}-{uid}",
        "audio": os.path.abspath(audio) if audio else "",  # absolute, so the manifest can live anywhere
        "text": text,
        "label": label,
        "speaker": speaker,
    }
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


def check_root(root: str | Path, corpus: str) -> Path:
    """`root` as an existing folder, or a DataError naming it."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{corpus}: ROOT {root} is not a folder; point ROOT at the unpacked {corpus} release")
    return root


def locate(root: Path, pattern: str, corpus: str, hint: str) -> Path:
    """The folder at most two levels under `root` (root first) in which `pattern` matches something.

    Releases are unpacked with or without their top folder (and Kaggle copies add one more), so ROOT may be the
    release folder, its parent or its grandparent.
    """
    level1 = _subdirs(root)
    candidates = [root] + level1 + [p for child in level1 for p in _subdirs(child)]
    for folder in candidates:
        if next(folder.glob(pattern), None) is not None:
            return folder
    raise DataError(f"{corpus}: no {pattern} under {root} (looked two folders deep); {hint}")


def _subdirs(folder: Path) -> list[Path]:
    """The visible sub-folders of `folder`."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def find_wavs(folder: Path, corpus: str, suffixes: tuple[str, ...] = (".wav",)) -> list[Path]:
    """All non-empty audio files (by default .wav) under `folder`, sorted; empty files are skipped with a warning.

    macOS resource forks (`._x.wav`) and hidden files are ignored: archives made on a Mac carry one per file.
    """
    wavs, empty = [], []
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in suffixes or path.name.startswith(".") or not path.is_file():
            continue
        (wavs if path.stat().st_size > 0 else empty).append(path)
    warn_skipped(corpus, empty, "they are empty (0 bytes)")
    return wavs


def parse_names(
    wavs: Iterable[Path], pattern: re.Pattern, corpus: str, expected: str, base: Path | None = None
) -> list[tuple[Path, dict]]:
    """(path, named groups) for each wav whose name fully matches `pattern`, one per name.

    The name is the file's stem, or with `base` its path relative to `base` without the suffix ("spk/angry/201"),
    for corpora that code labels in folder names. Files that do not parse are skipped with one warning. A name
    seen twice (Kaggle copies of RAVDESS and TESS hold the corpus twice) is kept once, from its first path in
    sorted order.
    """
    parsed, skipped, seen = [], [], set()
    for path in wavs:
        name = path.with_suffix("").relative_to(base).as_posix() if base else path.stem
        match = pattern.fullmatch(name)
        if match is None:
            skipped.append(path)
        elif name not in seen:
            seen.add(name)
            parsed.append((path, match.groupdict()))
    warn_skipped(corpus, skipped, f"their names do not parse as {expected}")
    return parsed


def warn_skipped(corpus: str, skipped: list, why: str) -> None:
    """One warning for all files an importer left out, with a few examples."""
    if skipped:
        examples = ", ".join(str(p) for p in skipped[:3])
        warnings.warn(f"{corpus}: skipped {len(skipped)} file(s) because {why} (e.g. {examples})", stacklevel=3)


def require(rows: list[dict], corpus: str, root: Path, hint: str) -> list[dict]:
    """`rows` unless empty, in which case a DataError says what ROOT should contain."""
    if not rows:
        raise DataError(f"{corpus}: found no usable utterances under {root}; {hint}")
    return rows


def read_text(path: Path, encodings: tuple[str, ...] = ("utf-8-sig", "gb18030")) -> str:
    """The text of `path`, decoded with the first of `encodings` that works.

    A UTF-16/32 byte-order mark wins over the list (some ESD transcripts are UTF-16); latin-1 is the last resort
    because it decodes any bytes, so the caller's list must put the more specific encodings first.
    """
    data = path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    for encoding in encodings:
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def contiguous_folds(keys: Iterable[str], folds: int = FOLDS) -> dict[str, str]:
    """Key (speaker, word) -> fold "1".."k": sorted keys cut into k contiguous, near-equal groups (k <= #keys)."""
    ordered = sorted(set(keys))
    k = min(folds, len(ordered))
    return {spk: str(i * k // len(ordered) + 1) for i, spk in enumerate(ordered)}


def split_of_fold(fold: str, folds: int) -> str:
    """The default split of a fold: the last fold is test, the one before valid, the rest train."""
    position = int(fold)
    return "test" if position == folds else "valid" if position == folds - 1 else "train"


def assign_speaker_splits(rows: list[dict], folds: int = FOLDS, groups: dict[str, str] | None = None) -> list[dict]:
    """Set `fold` and a speaker-disjoint `split` on every row, in place; returns `rows`.

    Args:
        rows: rows with a `speaker`.
        folds: number of speaker groups (capped at the number of speakers).
        groups: an explicit speaker -> fold map (e.g. gender-balanced pairs) instead of sorted contiguous groups.

    With fewer than three speakers no speaker-disjoint train/valid/test exists: the split is then made per
    utterance (a stable hash of the id, 80/10/10) with a warning, and `fold` is left out.
    """
    speakers = {r["speaker"] for r in rows}
    if groups is None and len(speakers) < 3:
        warnings.warn(
            f"only {len(speakers)} speaker(s) ({', '.join(sorted(speakers)) or 'none given'}): the train/valid/test "
            "split is per utterance, so test speakers are also seen in training",
            stacklevel=3,
        )
        for r in rows:
            bucket = zlib.crc32(r["id"].encode("utf-8")) % 10
            r["split"] = "test" if bucket == 9 else "valid" if bucket == 8 else "train"
        return rows
    fold_of = groups or contiguous_folds(speakers, folds)
    k = len(set(fold_of.values()))
    for r in rows:
        r["split"] = split_of_fold(fold_of[r["speaker"]], k)
        r["fold"] = fold_of[r["speaker"]]
    return rows
