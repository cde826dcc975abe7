"""Importers for acted corpora whose labels, speakers and sentences are coded in file or folder names:
CREMA-D, RAVDESS, EmoDB, TESS, ESD and CASIA. Each one parses names with a regex, maps codes to the shared
label names, and assigns speaker-disjoint splits and folds with the helpers in `_common`."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path

from mmemo.data.corpora._common import (
    FOLDS,
    SPLIT_NAMES,
    Option,
    assign_speaker_splits,
    check_root,
    contiguous_folds,
    find_wavs,
    locate,
    parse_names,
    read_text,
    require,
    row,
    split_of_fold,
)
from mmemo.errors import DataError

OPTIONS = {
    "crema_d": {},
    "ravdess": {"merge_calm": Option(bool, False, "label calm as neutral (7 classes instead of 8)")},
    "emodb": {},
    "tess": {
        "split_by": Option(
            str,
            "speaker",
            "speaker: OAF train / YAF test; word: word-disjoint folds, both speakers",
            ("speaker", "word"),
        ),
    },
    "esd": {
        "language": Option(str, "all", "speakers to keep: en (0011-0020), zh (0001-0010) or all", ("all", "en", "zh")),
        "split_by": Option(
            str,
            "official",
            "official: the release's train/evaluation/test folders; speaker: speaker-disjoint",
            ("official", "speaker"),
        ),
    },
    "casia": {"sentences": Option(str, None, "text file with lines `NNN<tab>sentence` giving each file's transcript")},
}


def _coded(
    corpus: str,
    root: Path,
    marker: str,
    name: str,
    expected: str,
    hint: str,
    make_row: Callable[[Path, dict], dict],
    by_path: bool = False,
) -> list[dict]:
    """Rows from every wav under the folder that holds `marker` whose name (or relative path) matches `name`."""
    folder = locate(check_root(root, corpus), marker, corpus, hint)
    pattern = re.compile(name, re.IGNORECASE)
    parsed = parse_names(find_wavs(folder, corpus), pattern, corpus, expected, base=folder if by_path else None)
    return require([make_row(path, fields) for path, fields in parsed], corpus, folder, hint)


# --- CREMA-D -------------------------------------------------------------------------------------------------

CREMA_D_EMOTIONS = {
    "ANG": "angry",
    "DIS": "disgusted",
    "FEA": "fearful",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}
CREMA_D_SENTENCES = {
    "IEO": "It's eleven o'clock.",
    "TIE": "That is exactly what happened.",
    "IOM": "I'm on my way to the meeting.",
    "IWW": "I wonder what this is about.",
    "TAI": "The airplane is almost full.",
    "MTI": "Maybe tomorrow it will be cold.",
    "IWL": "I would like a new alarm clock.",
    "ITH": "I think I have a doctor's appointment.",
    "DFA": "Don't forget a jacket.",
    "ITS": "I think I've seen this before.",
    "TSI": "The surface is slick.",
    "WSI": "We'll stop in a couple of minutes.",
}


def import_crema_d(root: Path) -> list[dict]:
    """Rows for CREMA-D's audio-only clips (`AudioWAV/1001_DFA_ANG_XX.wav`).

    Args:
        root: the release folder that contains `AudioWAV/` (or a folder above it).

    Returns:
        Rows with 6 labels (angry, disgusted, fearful, happy, neutral, sad), the sentence code's text, speaker =
        actor id ("1001"), `fold` = one of 5 contiguous groups of sorted actor ids, and split = fold 5 test,
        fold 4 valid, folds 1-3 train (speaker-disjoint).

    Raises:
        DataError: no `AudioWAV/` folder with wavs under ROOT.
    """

    def make(path: Path, f: dict) -> dict:
        return row(
            "crema_d",
            path.stem,
            path,
            CREMA_D_SENTENCES[f["sentence"].upper()],
            CREMA_D_EMOTIONS[f["emotion"].upper()],
            f["actor"],
        )

    rows = _coded(
        "crema_d",
        root,
        "AudioWAV/*.wav",
        rf"(?P<actor>\d{{4}})_(?P<sentence>{'|'.join(CREMA_D_SENTENCES)})_"
        rf"(?P<emotion>{'|'.join(CREMA_D_EMOTIONS)})_[A-Z]{{1,2}}",
        "ACTOR_SENTENCE_EMOTION_LEVEL (1001_DFA_ANG_XX)",
        "point ROOT at the CREMA-D release folder that contains AudioWAV/",
        make,
    )
    return assign_speaker_splits(rows)


# --- RAVDESS -------------------------------------------------------------------------------------------------

RAVDESS_EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgusted",
    "08": "surprised",
}
RAVDESS_STATEMENTS = {"01": "Kids are talking by the door.", "02": "Dogs are sitting by the door."}


def import_ravdess(root: Path, *, merge_calm: bool = False) -> list[dict]:
    """Rows for RAVDESS's audio-only speech files (`Actor_01/03-01-EE-II-SS-RR-01.wav`).

    Song files (vocal channel 02) and audio-visual files (modality 01/02) are skipped with a warning.

    Args:
        root: `Audio_Speech_Actors_01-24` (the folder of `Actor_XX` folders) or a folder above it.
        merge_calm: map calm to neutral, for 7 classes instead of 8.

    Returns:
        Rows with speaker = "Actor_01".."Actor_24" (odd = male, even = female), the statement's text, `fold` = 5
        contiguous groups of sorted actors (5, 5, 5, 5, 4 actors, each mixing men and women), split = fold 5 test
        (actors 21-24), fold 4 valid (16-20), folds 1-3 train.

    Raises:
        DataError: no `Actor_XX/*.wav` under ROOT, or none of them is a speech file.
    """
    labels = dict(RAVDESS_EMOTIONS, **({"02": "neutral"} if merge_calm else {}))

    def make(path: Path, f: dict) -> dict:
        return row(
            "ravdess", path.stem, path, RAVDESS_STATEMENTS[f["statement"]], labels[f["emotion"]], f"Actor_{f['actor']}"
        )

    rows = _coded(
        "ravdess",
        root,
        "Actor_[0-9][0-9]/*.wav",
        r"03-01-(?P<emotion>0[1-8])-0[12]-(?P<statement>0[12])-0[12]-(?P<actor>\d\d)",
        "an audio-only speech file 03-01-EE-II-SS-RR-AA",
        "point ROOT at Audio_Speech_Actors_01-24, the folder that holds Actor_01 ... Actor_24",
        make,
    )
    return assign_speaker_splits(rows)


# --- EmoDB ---------------------------------------------------------------------------------------------------

EMODB_EMOTIONS = {
    "W": "angry",
    "L": "bored",
    "E": "disgusted",
    "A": "fearful",
    "F": "happy",
    "T": "sad",
    "N": "neutral",
}
# What the speakers say, checked against the release's syllable labels (silb/): a05 is spoken "Blatt Papier"
# although some documentation of the corpus writes "Stück Papier".
EMODB_TEXTS = {
    "a01": "Der Lappen liegt auf dem Eisschrank.",
    "a02": "Das will sie am Mittwoch abgeben.",
    "a04": "Heute abend könnte ich es ihm sagen.",
    "a05": "Das schwarze Blatt Papier befindet sich da oben neben dem Holzstück.",
    "a07": "In sieben Stunden wird es soweit sein.",
    "b01": "Was sind denn das für Tüten, die da unter dem Tisch stehen?",
    "b02": "Sie haben es gerade hochgetragen und jetzt gehen sie wieder runter.",
    "b03": "An den Wochenenden bin ich jetzt immer nach Hause gefahren und habe Agnes besucht.",
    "b09": "Ich will das eben wegbringen und dann mit Karl was trinken gehen.",
    "b10": "Die wird auf dem Platz sein, wo wir sie immer hinlegen.",
}
# Five folds of one man and one woman each (men: 03 10 11 12 15), so no fold is single-gender.
EMODB_FOLDS = {
    "03": "1",
    "08": "1",
    "09": "2",
    "10": "2",
    "11": "3",
    "13": "3",
    "12": "4",
    "14": "4",
    "15": "5",
    "16": "5",
}


def import_emodb(root: Path) -> list[dict]:
    """Rows for the Berlin Database of Emotional Speech (`wav/03a01Fa.wav`).

    Args:
        root: the release folder that contains `wav/` (or a folder above it).

    Returns:
        535 rows for the full release: 7 labels (angry, bored, disgusted, fearful, happy, sad, neutral), the
        German sentence of the text code, speaker = the two-digit code, `fold` = one of five gender-balanced
        speaker pairs (03+08, 09+10, 11+13, 12+14, 15+16), split = fold 5 test, fold 4 valid, folds 1-3 train.

    Raises:
        DataError: no `wav/` folder with wavs under ROOT.
    """

    def make(path: Path, f: dict) -> dict:
        return row(
            "emodb", path.stem, path, EMODB_TEXTS[f["text"].lower()], EMODB_EMOTIONS[f["emotion"].upper()], f["speaker"]
        )

    rows = _coded(
        "emodb",
        root,
        "wav/*.wav",
        rf"(?P<speaker>\d\d)(?P<text>{'|'.join(EMODB_TEXTS)})(?P<emotion>[WLEAFTN])[a-z]",
        "SPEAKER TEXT EMOTION VERSION (03a01Fa)",
        "point ROOT at the EmoDB release folder that contains wav/",
        make,
    )
    speakers = {r["speaker"] for r in rows}
    return assign_speaker_splits(rows, groups=EMODB_FOLDS if speakers <= EMODB_FOLDS.keys() else None)


# --- TESS ----------------------------------------------------------------------------------------------------

TESS_EMOTIONS = {
    "angry": "angry",
    "disgust": "disgusted",
    "fear": "fearful",
    "happy": "happy",
    "neutral": "neutral",
    "ps": "surprised",
    "pleasant_surprise": "surprised",
    "pleasant_surprised": "surprised",
    "sad": "sad",
}


def import_tess(root: Path, *, split_by: str = "speaker") -> list[dict]:
    """Rows for the Toronto Emotional Speech Set (`OAF_angry/OAF_back_angry.wav`, 2 speakers x 200 words x 7).

    Args:
        root: the folder that holds the `OAF_*`/`YAF_*` folders (or a folder above it).
        split_by: "speaker": the older speaker (OAF) trains and the younger (YAF) tests, with OAF's words of
            word group 5 as valid (same speaker as train, so valid is optimistic); `fold` = "1" OAF, "2" YAF,
            the only speaker-independent protocol two speakers allow. "word": the 200 words are cut into 5
            sorted groups (`fold`), split = group 5 test, 4 valid, 1-3 train; both speakers are everywhere.

    Returns:
        Rows with 7 labels (angry, disgusted, fearful, happy, neutral, surprised = "ps", sad), text
        "Say the word <word>.", speaker "OAF" or "YAF".

    Raises:
        DataError: an unknown `split_by`, or no `OAF_*`/`YAF_*` wavs under ROOT.
    """
    if split_by not in ("speaker", "word"):
        raise DataError(f"tess: split_by must be speaker or word, got {split_by!r}")

    def make(path: Path, f: dict) -> dict:
        return row(
            "tess",
            path.stem,
            path,
            f"Say the word {f['word'].lower()}.",
            TESS_EMOTIONS[f["emotion"].lower()],
            f["speaker"].upper(),
            word=f["word"].lower(),
        )  # popped below

    rows = _coded(
        "tess",
        root,
        "[OoYy][Aa][Ff]_*/*.wav",
        rf"(?P<speaker>[OY]AF)_(?P<word>[a-z]+)_(?P<emotion>{'|'.join(TESS_EMOTIONS)})",
        "SPEAKER_WORD_EMOTION (OAF_back_angry)",
        "point ROOT at the TESS folder that holds OAF_angry, YAF_angry, ...",
        make,
    )
    word_fold = contiguous_folds(r["word"] for r in rows)
    for r in rows:
        word = r.pop("word")
        if split_by == "word":
            r["fold"] = word_fold[word]
            r["split"] = split_of_fold(r["fold"], FOLDS)
        else:
            r["fold"] = "1" if r["speaker"] == "OAF" else "2"
            r["split"] = "test" if r["speaker"] == "YAF" else "valid" if word_fold[word] == str(FOLDS) else "train"
    return rows


# --- ESD -----------------------------------------------------------------------------------------------------

ESD_EMOTIONS = {"angry": "angry", "happy": "happy", "neutral": "neutral", "sad": "sad", "surprise": "surprised"}
ESD_LANGUAGES = {"zh": {f"{i:04d}" for i in range(1, 11)}, "en": {f"{i:04d}" for i in range(11, 21)}}


def import_esd(root: Path, *, language: str = "all", split_by: str = "official") -> list[dict]:
    """Rows for the Emotional Speech Dataset (`0011/Angry/train/0011_000351.wav` + `0011/0011.txt`).

    Args:
        root: the folder that holds the speaker folders 0001 ... 0020 (or a folder above it).
        language: "en" (speakers 0011-0020), "zh" (Mandarin, 0001-0010) or "all".
        split_by: "official": the release's train/evaluation/test sub-folders (evaluation becomes valid); these
            share speakers, so the test is not speaker-independent. Falls back to "speaker" with a warning when the
            copy has no such folders. "speaker": split = speaker fold 5 test, 4 valid, 1-3 train.

    Returns:
        Rows with 5 labels (angry, happy, neutral, sad, surprised) from the emotion folder, transcripts from
        `<speaker>/<speaker>.txt` (UTF-8, UTF-16 or GBK), speaker = "0011" etc., `fold` = 5 contiguous speaker
        groups within the kept speakers.

    Raises:
        DataError: an unknown option value, or no `<speaker>/<speaker>.txt` or matching wavs under ROOT.
    """
    if language not in ("all", "en", "zh") or split_by not in ("official", "speaker"):
        raise DataError(
            f"esd: language must be all/en/zh and split_by official/speaker, got {language!r} and {split_by!r}"
        )
    keep = ESD_LANGUAGES.get(language, ESD_LANGUAGES["en"] | ESD_LANGUAGES["zh"])
    texts: dict[str, str] = {}

    def make(path: Path, f: dict) -> dict:
        if f["speaker"] not in texts:
            texts[f["speaker"]] = _esd_texts(path.parents[2 if f["split"] else 1] / f"{f['speaker']}.txt")
        official = SPLIT_NAMES.get((f["split"] or "").lower())
        return row(
            "esd",
            path.stem,
            path,
            texts[f["speaker"]].get(path.stem, ""),
            ESD_EMOTIONS[f["emotion"].lower()],
            f["speaker"],
            split=official,
        )

    rows = _coded(
        "esd",
        root,
        "[0-9][0-9][0-9][0-9]/[0-9][0-9][0-9][0-9].txt",
        rf"(?P<speaker>\d{{4}})/(?P<emotion>{'|'.join(ESD_EMOTIONS)})/(?:(?P<split>train|evaluation|test)/)?"
        r"(?P=speaker)_\d{6}",
        "SPEAKER/EMOTION/[SPLIT/]SPEAKER_NNNNNN",
        "point ROOT at the ESD folder that holds the speaker folders 0001 ... 0020",
        make,
        by_path=True,
    )
    rows = [r for r in rows if r["speaker"] in keep]
    if not rows:
        raise DataError(f"esd: no {language} speakers ({min(keep)}-{max(keep)}) under {root}")
    official = split_by == "official" and all("split" in r for r in rows)
    if split_by == "official" and not official:
        warnings.warn(
            "esd: no train/evaluation/test folders in this copy; using a speaker-disjoint split", stacklevel=2
        )
    splits = [r.get("split") for r in rows]
    assign_speaker_splits(rows)
    if official:
        for r, split in zip(rows, splits):
            r["split"] = split
    return rows


def _esd_texts(path: Path) -> dict[str, str]:
    """Utterance id -> transcript from one speaker's `NNNN.txt` (id, text, emotion; tab-separated)."""
    if not path.is_file():
        warnings.warn(f"esd: no transcript file {path}; its utterances get empty text", stacklevel=4)
        return {}
    texts = {}
    for line in read_text(path, ("utf-8-sig", "gb18030")).splitlines():
        parts = line.strip().split("\t") if "\t" in line else line.strip().split(None, 1)
        if len(parts) >= 2 and re.fullmatch(r"\d{4}_\d{6}", parts[0]):
            texts[parts[0]] = parts[1].strip()
    return texts


# --- CASIA ---------------------------------------------------------------------------------------------------

CASIA_EMOTIONS = {
    "angry": "angry",
    "fear": "fearful",
    "happy": "happy",
    "neutral": "neutral",
    "sad": "sad",
    "surprise": "surprised",
}


def import_casia(root: Path, *, sentences: str | None = None) -> list[dict]:
    """Rows for the public CASIA Chinese emotional speech subset (`liuchanhg/angry/201.wav`).

    Args:
        root: the folder that holds the four speaker folders (liuchanhg, wangzhe, zhaoquanyin, ZhaoZuoxiang), or a
            folder above it.
        sentences: a text file with lines `NNN<tab or spaces>sentence` (UTF-8 or GBK); the release ships none, so
            without it every row's text is "".

    Returns:
        Rows with 6 labels (angry, fearful, happy, neutral, sad, surprised), speaker = the folder name, `fold` =
        one speaker each (4 folds), split = 4th speaker in sorted order test, 3rd valid, the other two train.

    Raises:
        DataError: no `<speaker>/<emotion>/*.wav` under ROOT, or `sentences` is not a file.
    """
    texts = _casia_texts(Path(sentences)) if sentences else {}
    missing = set()

    def make(path: Path, f: dict) -> dict:
        number = int(f["number"])
        if texts and number not in texts:
            missing.add(number)
        return row(
            "casia",
            f"{f['speaker']}_{f['emotion'].lower()}_{f['number']}",
            path,
            texts.get(number, ""),
            CASIA_EMOTIONS[f["emotion"].lower()],
            f["speaker"],
        )

    rows = _coded(
        "casia",
        root,
        "*/angry/*.wav",
        rf"(?P<speaker>[^/]+)/(?P<emotion>{'|'.join(CASIA_EMOTIONS)})/(?P<number>\d+)",
        "SPEAKER/EMOTION/NNN.wav",
        "point ROOT at the CASIA folder that holds one folder per speaker, each with angry/ fear/ ...",
        make,
        by_path=True,
    )
    if missing:
        warnings.warn(f"casia: {sentences} has no sentence for file number(s) {sorted(missing)[:5]}", stacklevel=2)
    return assign_speaker_splits(rows)


def _casia_texts(path: Path) -> dict[int, str]:
    """File number -> sentence from a user's `NNN sentence` list."""
    if not path.is_file():
        raise DataError(f"casia: sentence list {path} does not exist; pass a text file with lines `NNN<tab>sentence`")
    texts = {}
    for line in read_text(path).splitlines():
        match = re.match(r"\s*(\d+)[\s.,:、]+(.+)", line)
        if match:
            texts[int(match[1])] = match[2].strip()
    return texts
