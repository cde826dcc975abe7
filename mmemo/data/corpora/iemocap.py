"""IEMOCAP importer: labels from `dialog/EmoEvaluation/*.txt`, text from `dialog/transcriptions/*.txt`, audio from
`sentences/wav/<dialog>/<utterance>.wav`, one row per utterance whose label is in the chosen class set."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from mmemo.data.corpora._common import Option, check_root, locate, read_text, require, row, warn_skipped
from mmemo.errors import DataError

# The 4-class protocol merges excited into happy (5,531 utterances); the 6-class one keeps them apart (7,433).
CLASSES = {
    "4": {"neu": "neutral", "hap": "happy", "exc": "happy", "ang": "angry", "sad": "sad"},
    "6": {"neu": "neutral", "hap": "happy", "exc": "excited", "ang": "angry", "sad": "sad", "fru": "frustrated"},
}

OPTIONS = {
    "iemocap": {
        "classes": Option(str, "4", "4: neutral/happy(+excited)/angry/sad; 6: adds excited and frustrated", ("4", "6")),
        "valid_session": Option(int, 4, "session used as the valid split", (1, 2, 3, 4, 5)),
        "test_session": Option(int, 5, "session used as the test split", (1, 2, 3, 4, 5)),
        "improvised_only": Option(bool, False, "keep only the improvised dialogues (no scripted lines)"),
    }
}

# "[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]"
_EVALUATION = re.compile(r"\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\s+(?P<utt>Ses\S+)\s+(?P<label>\w+)\s+\[")
# "Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me."
_TRANSCRIPT = re.compile(r"(?P<utt>Ses\S+)\s+\[[^\]]*\]:\s*(?P<text>.*)")
_HINT = "point ROOT at IEMOCAP_full_release (or its parent), the folder that holds Session1 ... Session5"


def import_iemocap(
    root: Path,
    *,
    classes: str = "4",
    valid_session: int = 4,
    test_session: int = 5,
    improvised_only: bool = False,
) -> list[dict]:
    """Rows for IEMOCAP's categorical utterances.

    Args:
        root: `IEMOCAP_full_release` or a folder above it.
        classes: "4" (neutral, happy = hap + exc, angry, sad: 5,531 utterances in the full release) or "6"
            (neutral, happy, sad, angry, excited, frustrated: 7,433). Other labels (xxx, oth, fea, sur, dis)
            are dropped.
        valid_session: the session whose rows get split "valid".
        test_session: the session whose rows get split "test"; the others are "train". The defaults (train 1-3,
            valid 4, test 5) are one rotation of the usual leave-one-session-out protocol; `fold` holds the
            session number ("1".."5") for the full cross-validation.
        improvised_only: drop scripted dialogues, whose lines recur across sessions and leak text.

    Returns:
        Rows with `speaker` = session + the utterance speaker's gender ("Ses01M"), transcripts from the
        release's transcriptions, absolute wav paths.

    Raises:
        DataError: no Session folder under ROOT, an unknown class set, or no usable utterances.
    """
    if str(classes) not in CLASSES:
        raise DataError(f"iemocap: classes must be 4 or 6, got {classes!r}")
    if valid_session == test_session:
        raise DataError(f"iemocap: valid_session and test_session are both {test_session}; pick two sessions")
    label_map = CLASSES[str(classes)]
    release = locate(check_root(root, "iemocap"), "Session[1-5]/dialog/EmoEvaluation", "iemocap", _HINT)
    rows, missing = [], []
    for session_dir in sorted(release.glob("Session[1-5]")):
        session = int(session_dir.name[-1])
        for evaluation in sorted((session_dir / "dialog" / "EmoEvaluation").glob("Ses*.txt")):
            dialog = evaluation.stem
            if improvised_only and "_impro" not in dialog:
                continue
            texts = _transcripts(session_dir / "dialog" / "transcriptions" / f"{dialog}.txt")
            for utt, code in _labels(evaluation):
                if code not in label_map:
                    continue
                wav = session_dir / "sentences" / "wav" / dialog / f"{utt}.wav"
                if not wav.is_file():
                    missing.append(wav)
                    continue
                split = "test" if session == test_session else "valid" if session == valid_session else "train"
                # The utterance's speaker is the letter of its last id segment, not the session's F/M tag.
                speaker = f"Ses{session:02d}{utt.rsplit('_', 1)[1][0]}"
                rows.append(
                    row(
                        "iemocap",
                        utt,
                        wav,
                        texts.get(utt, ""),
                        label_map[code],
                        speaker,
                        split=split,
                        fold=str(session),
                    )
                )
    warn_skipped("iemocap", missing, "their wav is missing from sentences/wav")
    return require(rows, "iemocap", release, _HINT)


def _labels(path: Path) -> list[tuple[str, str]]:
    """(utterance id, label code) pairs from one EmoEvaluation file."""
    return [(m["utt"], m["label"]) for line in read_text(path).splitlines() if (m := _EVALUATION.match(line))]


def _transcripts(path: Path) -> dict[str, str]:
    """Utterance id -> transcript from one transcriptions file ({} with a warning when it is missing)."""
    if not path.is_file():
        warnings.warn(f"iemocap: no transcript file {path}; its utterances get empty text", stacklevel=3)
        return {}
    return {m["utt"]: m["text"].strip() for line in read_text(path).splitlines() if (m := _TRANSCRIPT.match(line))}
