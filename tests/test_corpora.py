"""Corpus importers on small fake trees that copy each release's layout, names and metadata formats."""

from __future__ import annotations

import inspect
import os
import shutil
import stat
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mmemo.data.corpora import IMPORTERS, OPTIONS, prepare
from mmemo.data.corpora.meld import fix_text
from mmemo.data.manifest import read_manifest
from mmemo.errors import DataError

EMODB = Path(__file__).resolve().parents[2] / "shared" / "data" / "emodb"


def wav(path: Path, seconds: float = 0.2, rate: int = 16000) -> Path:
    """A short sine wav at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate, format="WAV")
    return path


def by_id(rows: list[dict]) -> dict[str, dict]:
    return {r["id"]: r for r in rows}


def assert_speaker_disjoint(rows: list[dict]) -> None:
    speakers = {split: {r["speaker"] for r in rows if r["split"] == split} for split in ("train", "valid", "test")}
    assert all(speakers.values()), speakers
    assert not speakers["train"] & speakers["valid"]
    assert not speakers["train"] & speakers["test"]
    assert not speakers["valid"] & speakers["test"]


def test_options_describe_each_importers_keyword_arguments():
    assert set(OPTIONS) == set(IMPORTERS)
    for name, importer in IMPORTERS.items():
        params = {
            p.name: p.default
            for p in inspect.signature(importer).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        }
        assert params == {key: option.default for key, option in OPTIONS[name].items()}, name
        for option in OPTIONS[name].values():
            assert option.help and (option.choices is None or option.default in option.choices)


# --- IEMOCAP -------------------------------------------------------------------------------------------------

IEMOCAP_LABELS = {
    "F000": "neu",
    "M000": "hap",
    "F001": "exc",
    "M001": "fru",
    "F002": "xxx",
    "M002": "ang",
    "F003": "sad",
}


@pytest.fixture
def iemocap(tmp_path: Path) -> Path:
    release = tmp_path / "IEMOCAP_full_release"
    for session in range(1, 6):
        for dialog in (f"Ses0{session}F_impro01", f"Ses0{session}M_script01_1"):
            dialog_dir = release / f"Session{session}" / "dialog"
            evaluation = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
            transcript = []
            for i, (seg, code) in enumerate(IEMOCAP_LABELS.items()):
                utt = f"{dialog}_{seg}"
                evaluation += [
                    f"[{i}.5000 - {i + 1}.2500]\t{utt}\t{code}\t[2.5000, 2.5000, 2.5000]",
                    "C-E1:\tNeutral;\t()",
                    "A-E1:\tval 3; act 2; dom  2;\t()",
                    "",
                ]
                transcript.append(f"{utt} [00{i}.5000-00{i + 1}.2500]: line {seg} of {dialog}.")
                wav(release / f"Session{session}" / "sentences" / "wav" / dialog / f"{utt}.wav")
            (dialog_dir / "EmoEvaluation").mkdir(parents=True, exist_ok=True)
            (dialog_dir / "EmoEvaluation" / f"{dialog}.txt").write_text("\n".join(evaluation))
            (dialog_dir / "transcriptions").mkdir(parents=True, exist_ok=True)
            (dialog_dir / "transcriptions" / f"{dialog}.txt").write_text("\n".join(transcript))
    (release / "Session1" / "dialog" / "EmoEvaluation" / "Categorical").mkdir()  # the release has sub-folders
    return tmp_path


def test_iemocap_four_classes_merge_excited_into_happy(iemocap: Path):
    rows = IMPORTERS["iemocap"](iemocap)
    assert len(rows) == 5 * 2 * 5  # neu hap exc ang sad per dialog; fru and xxx dropped
    assert Counter(r["label"] for r in rows) == {"happy": 20, "neutral": 10, "angry": 10, "sad": 10}
    row = by_id(rows)["iemocap-Ses01F_impro01_M000"]
    assert row["label"] == "happy" and row["speaker"] == "Ses01M" and row["fold"] == "1"
    assert row["text"] == "line M000 of Ses01F_impro01."
    assert Path(row["audio"]).is_file() and Path(row["audio"]).is_absolute()
    assert by_id(rows)["iemocap-Ses03M_script01_1_F001"]["speaker"] == "Ses03F"
    assert {r["fold"]: r["split"] for r in rows} == {
        "1": "train",
        "2": "train",
        "3": "train",
        "4": "valid",
        "5": "test",
    }
    assert_speaker_disjoint(rows)


def test_iemocap_six_classes_sessions_and_improvised_only(iemocap: Path):
    rows = IMPORTERS["iemocap"](
        iemocap / "IEMOCAP_full_release", classes="6", valid_session=1, test_session=2, improvised_only=True
    )
    assert Counter(r["label"] for r in rows) == {
        k: 5 for k in ("neutral", "happy", "excited", "frustrated", "angry", "sad")
    }
    assert all("_impro" in r["id"] for r in rows)
    assert {r["split"] for r in rows if r["fold"] == "2"} == {"test"}
    assert {r["split"] for r in rows if r["fold"] == "1"} == {"valid"}


def test_iemocap_missing_wav_is_skipped_and_wrong_root_is_explained(iemocap: Path, tmp_path: Path):
    (iemocap / "IEMOCAP_full_release/Session2/sentences/wav/Ses02F_impro01/Ses02F_impro01_F000.wav").unlink()
    with pytest.warns(UserWarning, match="skipped 1 file"):
        assert len(IMPORTERS["iemocap"](iemocap)) == 49
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="Session1"):
        IMPORTERS["iemocap"](tmp_path / "empty")
    with pytest.raises(DataError, match="classes must be 4 or 6"):
        IMPORTERS["iemocap"](iemocap, classes="5")


# --- MELD ----------------------------------------------------------------------------------------------------

MELD_HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime"


@pytest.fixture
def meld(tmp_path: Path) -> Path:
    release = tmp_path / "MELD.Raw"
    release.mkdir()
    records = {
        "train": [
            ("Oh my God, he\u0092s lost it.", "Ross", "surprise", "negative", 0, 0),
            ("You\u0092re right \u0096 totally.", "Monica", "joy", "positive", 0, 1),
            ("I can\u2019t.", "Joey", "anger", "negative", 1, 0),
        ],
        "dev": [("Hey.", "Chandler", "neutral", "neutral", 0, 0), ("No!", "Rachel", "fear", "negative", 0, 1)],
        "test": [
            ("Why\u2019d you?", "Phoebe", "sadness", "negative", 0, 0),
            ("Ew.", "Ross", "disgust", "negative", 9, 0),
        ],  # the fake ffmpeg fails on dia9_*
    }
    for split, rows in records.items():
        lines = [MELD_HEADER] + [
            f'{i},"{text}",{spk},{emo},{sent},{d},{u},1,1,"00:00:01,000","00:00:02,000"'
            for i, (text, spk, emo, sent, d, u) in enumerate(rows, 1)
        ]
        data = "\n".join(lines)
        # Copies of MELD differ: one CSV as cp1252 bytes, the others UTF-8 with C1 controls for cp1252 punctuation.
        encoded = data.encode("cp1252") if split == "test" else data.encode("utf-8")
        (release / f"{split}_sent_emo.csv").write_bytes(encoded)
    clip_dirs = {"train": "train/train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test"}
    for split, rows in records.items():
        for *_, d, u in rows:
            wav(release / clip_dirs[split] / f"dia{d}_utt{u}.mp4")  # a wav named .mp4: enough for a fake ffmpeg
    return tmp_path


@pytest.fixture
def fake_ffmpeg(tmp_path: Path, monkeypatch) -> Path:
    """An `ffmpeg` on PATH that copies its input to its output and fails on inputs named dia9_*."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "ffmpeg"
    script.write_text(f"""#!{sys.executable}
import shutil, sys
src, dst = sys.argv[sys.argv.index("-i") + 1], sys.argv[-1]
if "dia9_" in src:
    sys.exit("Invalid data found when processing input")
shutil.copy(src, dst)
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return script


def test_meld_text_only_reads_labels_speakers_splits_and_repairs_text(meld: Path):
    rows = IMPORTERS["meld"](meld, text_only=True)
    assert len(rows) == 7 and all(r["audio"] == "" and "fold" not in r for r in rows)
    assert Counter(r["split"] for r in rows) == {"train": 3, "valid": 2, "test": 2}
    row = by_id(rows)["meld-train_dia0_utt0"]
    assert (row["text"], row["speaker"], row["label"]) == ("Oh my God, he’s lost it.", "Ross", "surprised")
    assert by_id(rows)["meld-train_dia0_utt1"]["text"] == "You’re right – totally."
    assert by_id(rows)["meld-test_dia0_utt0"]["text"] == "Why’d you?"  # from the cp1252 file
    assert {r["label"] for r in rows} == {"surprised", "happy", "angry", "neutral", "fearful", "sad", "disgusted"}
    assert {r["label"] for r in IMPORTERS["meld"](meld, text_only=True, sentiment=True)} == {
        "negative",
        "positive",
        "neutral",
    }
    assert fix_text("It\u00e2\u20ac\u2122s") == "It’s"


def test_meld_missing_clips_or_ffmpeg_are_explained(meld: Path, monkeypatch, tmp_path: Path):
    (meld / "MELD.Raw/dev_splits_complete/dia0_utt1.mp4").unlink()
    with pytest.raises(DataError, match=r"1 of 7 clips are missing .*dia0_utt1\.mp4.*--text-only"):
        IMPORTERS["meld"](meld, audio_dir=str(tmp_path / "audio"))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="ffmpeg is not installed.*--text-only"):
        IMPORTERS["meld"](meld, audio_dir=str(tmp_path / "audio"), skip_missing=True)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(DataError, match="test_sent_emo.csv"):
        IMPORTERS["meld"](tmp_path / "elsewhere")


@pytest.mark.slow
def test_meld_decodes_clips_with_ffmpeg_and_drops_failures(meld: Path, fake_ffmpeg: Path, tmp_path: Path):
    with pytest.raises(DataError, match="ffmpeg failed on 1 clip.*Invalid data"):
        IMPORTERS["meld"](meld, audio_dir=str(tmp_path / "audio"))
    with pytest.warns(UserWarning, match="dropped 1 utterance"):
        rows = IMPORTERS["meld"](meld, audio_dir=str(tmp_path / "audio"), skip_missing=True, jobs=2)
    assert len(rows) == 6 and "meld-test_dia9_utt0" not in by_id(rows)
    audio = Path(by_id(rows)["meld-valid_dia0_utt0"]["audio"])
    assert audio == (tmp_path / "audio" / "valid_dia0_utt0.wav").resolve() and sf.info(audio).duration > 0
    assert not list((tmp_path / "audio").glob("*.part.wav"))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_meld_real_ffmpeg_decodes_an_mp4(meld: Path, tmp_path: Path):
    for clip in (meld / "MELD.Raw").rglob("*.mp4"):
        source = clip.with_suffix(".wav")
        clip.rename(source)
        subprocess.run(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(source), "-ar", "44100", "-ac", "2", str(clip)],
            check=True,
        )
    rows = IMPORTERS["meld"](meld, audio_dir=str(tmp_path / "audio"))
    info = sf.info(rows[0]["audio"])
    assert (info.samplerate, info.channels) == (16000, 1) and info.duration == pytest.approx(0.2, abs=0.05)


# --- CREMA-D, RAVDESS, EmoDB, TESS ---------------------------------------------------------------------------


def test_crema_d_labels_sentences_and_actor_folds(tmp_path: Path):
    audio = tmp_path / "CREMA-D" / "AudioWAV"
    for actor in range(1001, 1011):
        for sentence, emotion, level in (("DFA", "ANG", "HI"), ("IEO", "NEU", "XX"), ("TSI", "FEA", "LO")):
            wav(audio / f"{actor}_{sentence}_{emotion}_{level}.wav")
    wav(audio / "notes.wav")
    (audio / "1010_MTI_SAD_XX.wav").touch()  # an empty file, as in some copies
    with pytest.warns(UserWarning) as caught:
        rows = IMPORTERS["crema_d"](tmp_path)
    assert any("do not parse" in str(w.message) for w in caught) and any("empty" in str(w.message) for w in caught)
    assert len(rows) == 30 and {r["label"] for r in rows} == {"angry", "neutral", "fearful"}
    row = by_id(rows)["crema_d-1001_DFA_ANG_HI"]
    assert (row["text"], row["speaker"], row["fold"], row["split"]) == ("Don't forget a jacket.", "1001", "1", "train")
    assert {r["speaker"] for r in rows if r["fold"] == "5"} == {"1009", "1010"}
    assert_speaker_disjoint(rows)
    with pytest.raises(DataError, match="AudioWAV/"):
        IMPORTERS["crema_d"](audio)


def test_ravdess_speech_only_calm_merge_and_duplicate_copies(tmp_path: Path):
    for actor in range(1, 11):
        for emotion, statement in (("01", "01"), ("02", "02"), ("08", "01")):
            name = f"03-01-{emotion}-01-{statement}-01-{actor:02d}.wav"
            wav(tmp_path / f"Actor_{actor:02d}" / name)
            wav(tmp_path / "audio_speech_actors_01-24" / f"Actor_{actor:02d}" / name)  # Kaggle's second copy
    wav(tmp_path / "Actor_01" / "03-02-01-01-01-01-01.wav")  # song: not speech
    with pytest.warns(UserWarning, match="skipped 1 file"):
        rows = IMPORTERS["ravdess"](tmp_path)
    assert len(rows) == 30 and Counter(r["label"] for r in rows) == {"neutral": 10, "calm": 10, "surprised": 10}
    row = by_id(rows)["ravdess-03-01-02-01-02-01-07"]
    assert (row["text"], row["speaker"], row["fold"]) == ("Dogs are sitting by the door.", "Actor_07", "4")
    assert_speaker_disjoint(rows)
    with pytest.warns(UserWarning):
        merged = IMPORTERS["ravdess"](tmp_path, merge_calm=True)
    assert Counter(r["label"] for r in merged) == {"neutral": 20, "surprised": 10}
    with pytest.raises(DataError, match="Actor_01"):
        IMPORTERS["ravdess"](tmp_path / "Actor_01")


def test_emodb_texts_labels_and_gender_balanced_speaker_pairs(tmp_path: Path):
    for speaker in ("03", "08", "09", "10", "11", "12", "13", "14", "15", "16"):
        for name in ("a01Fa", "a05Wb", "b10Lc"):
            wav(tmp_path / "emodb" / "wav" / f"{speaker}{name}.wav")
    rows = IMPORTERS["emodb"](tmp_path)
    assert len(rows) == 30 and {r["label"] for r in rows} == {"happy", "angry", "bored"}
    spoken = "Das schwarze Blatt Papier befindet sich da oben neben dem Holzstück."  # per the release's silb/
    assert by_id(rows)["emodb-03a05Wb"]["text"] == spoken
    folds = {r["speaker"]: r["fold"] for r in rows}
    assert [sorted(s for s, f in folds.items() if f == str(k)) for k in range(1, 6)] == [
        ["03", "08"],
        ["09", "10"],
        ["11", "13"],
        ["12", "14"],
        ["15", "16"],
    ]
    assert_speaker_disjoint(rows)
    with pytest.raises(DataError, match="wav/"):
        IMPORTERS["emodb"](tmp_path / "emodb" / "wav")


@pytest.fixture
def tess(tmp_path: Path) -> Path:
    words = ["back", "bar", "base", "bath", "bean", "beg", "bite", "boat", "bone", "book"]
    folders = {
        "OAF": ["OAF_angry", "OAF_Fear", "OAF_Pleasant_surprise"],
        "YAF": ["YAF_angry", "YAF_fear", "YAF_pleasant_surprised"],
    }
    for speaker, names in folders.items():
        for folder, code in zip(names, ("angry", "fear", "ps")):
            for word in words:
                wav(tmp_path / "TESS Toronto emotional speech set data" / folder / f"{speaker}_{word}_{code}.wav")
    return tmp_path


def test_tess_speaker_split_and_word_split(tess: Path):
    rows = IMPORTERS["tess"](tess)
    assert len(rows) == 60 and Counter(r["label"] for r in rows) == {"angry": 20, "fearful": 20, "surprised": 20}
    assert by_id(rows)["tess-YAF_bite_ps"]["text"] == "Say the word bite."
    assert {r["split"] for r in rows if r["speaker"] == "YAF"} == {"test"}
    assert {r["text"] for r in rows if r["split"] == "valid"} == {"Say the word bone.", "Say the word book."}
    words = IMPORTERS["tess"](tess, split_by="word")
    by_split = {s: {r["text"] for r in words if r["split"] == s} for s in ("train", "valid", "test")}
    assert not (by_split["train"] & by_split["test"]) and len(by_split["test"]) == 2
    assert {r["speaker"] for r in words if r["split"] == "test"} == {"OAF", "YAF"}
    with pytest.raises(DataError, match="OAF_angry"):
        IMPORTERS["tess"](tess / "TESS Toronto emotional speech set data" / "OAF_angry")


# --- ESD, CASIA ----------------------------------------------------------------------------------------------


@pytest.fixture
def esd(tmp_path: Path) -> Path:
    root = tmp_path / "Emotion Speech Dataset"
    texts = {"0001": ("打远一看，它们的确很是美丽，", "gb18030"), "0011": ("Chapter one.", "utf-16")}
    for speaker, (text, encoding) in {
        **texts,
        "0002": ("中文", "utf-8"),
        "0012": ("Hi.", "utf-8"),
        "0013": ("Yes.", "utf-8"),
        "0014": ("No.", "utf-8"),
    }.items():
        lines = []
        for index, (emotion, split) in enumerate(
            (("Neutral", "train"), ("Angry", "evaluation"), ("Surprise", "test")), start=1
        ):
            utt = f"{speaker}_{index:06d}"
            wav(root / speaker / emotion / split / f"{utt}.wav")
            lines.append(f"{utt}\t{text} {index}\t{emotion}")
        (root / speaker / f"{speaker}.txt").write_bytes("\n".join(lines).encode(encoding))
    return tmp_path


def test_esd_official_split_languages_and_transcript_encodings(esd: Path):
    rows = IMPORTERS["esd"](esd)
    assert len(rows) == 18 and Counter(r["label"] for r in rows) == {"neutral": 6, "angry": 6, "surprised": 6}
    assert by_id(rows)["esd-0001_000001"]["text"] == "打远一看，它们的确很是美丽， 1"
    assert (by_id(rows)["esd-0011_000002"]["text"], by_id(rows)["esd-0011_000002"]["split"]) == (
        "Chapter one. 2",
        "valid",
    )
    assert Counter(r["split"] for r in rows) == {"train": 6, "valid": 6, "test": 6}
    english = IMPORTERS["esd"](esd, language="en", split_by="speaker")
    assert {r["speaker"] for r in english} == {"0011", "0012", "0013", "0014"}
    assert_speaker_disjoint(english)


def test_esd_without_split_folders_falls_back_to_speakers(esd: Path):
    for path in list((esd / "Emotion Speech Dataset").rglob("*.wav")):
        path.rename(path.parents[1] / path.name)
    with pytest.warns(UserWarning, match="no train/evaluation/test folders"):
        rows = IMPORTERS["esd"](esd)
    assert_speaker_disjoint(rows)
    with pytest.raises(DataError, match="0001"):
        IMPORTERS["esd"](esd / "Emotion Speech Dataset" / "0001")


def test_casia_speakers_emotions_and_sentence_list(tmp_path: Path):
    speakers = ["liuchanhg", "wangzhe", "zhaoquanyin", "ZhaoZuoxiang"]
    for speaker in speakers:
        for emotion in ("angry", "fear", "surprise"):
            for number in (201, 202):
                wav(tmp_path / "CASIA" / speaker / emotion / f"{number}.wav")
    sentences = tmp_path / "sentences.txt"
    sentences.write_bytes("201\t我们都是好朋友。\n202 今天天气很好。\n".encode("gb18030"))
    rows = IMPORTERS["casia"](tmp_path, sentences=str(sentences))
    assert len(rows) == 24 and {r["label"] for r in rows} == {"angry", "fearful", "surprised"}
    assert by_id(rows)["casia-wangzhe_fear_202"]["text"] == "今天天气很好。"
    assert {r["speaker"]: r["fold"] for r in rows} == {
        "ZhaoZuoxiang": "1",
        "liuchanhg": "2",
        "wangzhe": "3",
        "zhaoquanyin": "4",
    }
    assert_speaker_disjoint(rows)
    assert {r["text"] for r in IMPORTERS["casia"](tmp_path)} == {""}
    with pytest.raises(DataError, match="sentence list"):
        IMPORTERS["casia"](tmp_path, sentences=str(tmp_path / "nope.txt"))


# --- generic -------------------------------------------------------------------------------------------------


def test_generic_folder_tree_and_regex(tmp_path: Path):
    for speaker in ("s1", "s2", "s3", "s4", "s5"):
        for label in ("Happy", "sad"):
            path = wav(tmp_path / "corpus" / label / f"{speaker}_{label.lower()}_01.wav")
        path.with_suffix(".txt").write_text("some words\n")
    with pytest.warns(UserWarning, match="per utterance"):  # the folder tree names no speakers
        rows = IMPORTERS["generic"](tmp_path / "corpus")
    assert len(rows) == 10 and {r["label"] for r in rows} == {"happy", "sad"}
    assert by_id(rows)["generic-sad/s1_sad_01"]["text"] == "some words"
    rows = IMPORTERS["generic"](
        tmp_path / "corpus", label_from="regex", pattern=r"(?P<speaker>s\d)_(?P<label>[a-z]+)_\d+$"
    )
    assert {r["speaker"] for r in rows} == {"s1", "s2", "s3", "s4", "s5"}
    assert_speaker_disjoint(rows)
    with pytest.raises(DataError, match="no named group"):
        IMPORTERS["generic"](tmp_path / "corpus", label_from="regex", pattern=r"(?P<speaker>s\d)")


def test_generic_csv_with_and_without_split_column(tmp_path: Path):
    for i in range(6):
        wav(tmp_path / "clips" / f"{i}.wav")
    (tmp_path / "meta.csv").write_text(
        "file,transcript,emotion,who,part\n"
        + "".join(
            f"clips/{i}.wav,hello {i},{'Angry' if i % 2 else 'calm'},spk{i},{['train', 'dev', 'test'][i % 3]}\n"
            for i in range(6)
        )
    )
    options = dict(
        csv="meta.csv", audio_column="file", text_column="transcript", label_column="emotion", speaker_column="who"
    )
    rows = IMPORTERS["generic"](tmp_path, split_column="part", **options)
    assert [r["split"] for r in rows] == ["train", "valid", "test"] * 2
    assert (rows[1]["label"], rows[1]["text"], rows[1]["speaker"]) == ("angry", "hello 1", "spk1")
    assert Path(rows[1]["audio"]) == (tmp_path / "clips" / "1.wav").resolve()
    assert_speaker_disjoint(IMPORTERS["generic"](tmp_path, **options))  # no split column: by speaker
    with pytest.raises(DataError, match="no column 'part2'"):
        IMPORTERS["generic"](tmp_path, split_column="part2", **options)
    (tmp_path / "clips" / "3.wav").unlink()
    with pytest.raises(DataError, match=r"1 audio file\(s\).*clips/3.wav"):
        IMPORTERS["generic"](tmp_path, **options)


# --- prepare -------------------------------------------------------------------------------------------------


def test_prepare_writes_a_readable_manifest_and_refuses_to_overwrite(tess: Path, tmp_path: Path):
    output = tmp_path / "out" / "tess.jsonl"
    rows = prepare("TESS", tess, output=output, split_by="word")
    assert read_manifest(output) == [dict(r, start=None, end=None, corpus=None) for r in rows]
    with pytest.raises(DataError, match="already exists"):
        prepare("tess", tess, output=output)
    assert len(prepare("tess", tess, output=output, overwrite=True)) == 60
    with pytest.raises(DataError, match="unknown option.*merge_calm.*split_by"):
        prepare("tess", tess, merge_calm=True)
    with pytest.raises(DataError, match="split_by must be one of speaker, word"):
        prepare("tess", tess, split_by="actor")
    with pytest.raises(DataError, match="unknown corpus 'tes'"):
        prepare("tes", tess)


@pytest.mark.slow
def test_prepare_converts_cli_text_and_puts_meld_audio_next_to_the_manifest(
    meld: Path, fake_ffmpeg: Path, iemocap: Path, tmp_path: Path
):
    with pytest.warns(UserWarning, match="dropped 1"):
        rows = prepare("meld", meld, output=tmp_path / "m" / "meld.jsonl", text_only="false", skip_missing="yes")
    assert Path(rows[0]["audio"]).parent == (tmp_path / "m" / "meld_audio").resolve()
    assert {r["label"] for r in prepare("iemocap", iemocap, classes=6)} >= {"excited", "frustrated"}
    with pytest.raises(DataError, match="takes true or false"):
        prepare("meld", meld, text_only="maybe")


@pytest.mark.skipif(not (EMODB / "wav").is_dir(), reason=f"EmoDB is not at {EMODB}")
def test_real_emodb_release():
    rows = prepare("emodb", EMODB)
    assert len(rows) == 535 and len({r["speaker"] for r in rows}) == 10 and len({r["label"] for r in rows}) == 7
    assert len({r["text"] for r in rows}) == 10
    assert_speaker_disjoint(rows)
