"""The synthetic corpus: layout, determinism, safe re-runs, and the cue design the pipeline tests rely on."""

import json

import librosa
import numpy as np
import pytest
import soundfile as sf

from mmemo.data.manifest import read_manifest
from mmemo.data.synthetic import (
    CUE_PROBABILITY,
    EMOTION_CUES,
    PLEASANT_CUES,
    REDUNDANT_CUE_PROBABILITY,
    UNPLEASANT_CUES,
    generate_corpus,
)
from mmemo.errors import DataError

N = 48  # 12 speakers x 4 labels: the smallest corpus where every split holds every label


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    manifest = generate_corpus(out, n=N, seed=0)
    return out, read_manifest(manifest)


def _files(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_and_another_seed_differs(corpus, tmp_path):
    out, _ = corpus
    generate_corpus(tmp_path / "again", n=N, seed=0)
    generate_corpus(tmp_path / "other", n=N, seed=1)
    assert _files(tmp_path / "again") == _files(out)
    other = _files(tmp_path / "other")
    assert other["manifest.jsonl"] != _files(out)["manifest.jsonl"]
    assert other["wavs/synth00000.wav"] != _files(out)["wavs/synth00000.wav"]


def test_splits_are_speaker_disjoint_and_hold_every_label(corpus):
    _, rows = corpus
    speakers = {split: {r["speaker"] for r in rows if r["split"] == split} for split in ("train", "valid", "test")}
    assert len(set().union(*speakers.values())) >= 10
    assert not speakers["train"] & speakers["valid"] and not speakers["train"] & speakers["test"]
    assert not speakers["valid"] & speakers["test"]
    for split in ("valid", "test"):
        assert {s[0] for s in speakers[split]} == {"f", "m"}, f"{split} should have both genders"
    for split in speakers:
        assert {r["label"] for r in rows if r["split"] == split} == {"neutral", "happy", "angry", "sad"}


def test_audio_is_16k_mono_pcm16_between_1_and_4_seconds(corpus):
    _, rows = corpus
    for row in rows:
        info = sf.info(row["audio"])
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert 1.0 <= info.duration <= 4.0, row["id"]


def test_second_call_with_same_parameters_writes_nothing(corpus):
    out, _ = corpus
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert generate_corpus(out, n=N, seed=0) == out / "manifest.jsonl"
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_refuses_foreign_files_other_parameters_and_half_written_corpora(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="other files"):
        generate_corpus(tmp_path / "mine", n=N)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"

    out = tmp_path / "corpus"
    generate_corpus(out, n=N, seed=0)
    with pytest.raises(DataError, match="other parameters"):
        generate_corpus(out, n=N, seed=1)
    generate_corpus(out, n=N, seed=1, overwrite=True)
    assert json.loads((out / "synth.json").read_text())["seed"] == 1

    (out / "synth.json").unlink()  # what a run killed before finishing leaves behind
    with pytest.raises(DataError, match="overwrite=True"):
        generate_corpus(out, n=N, seed=1)


@pytest.mark.parametrize(
    "kwargs", [{"labels": ("happy", "bored")}, {"n": 20}, {"n_speakers": 4}, {"design": "shuffled"}]
)
def test_rejects_bad_parameters(tmp_path, kwargs):
    with pytest.raises(DataError):
        generate_corpus(tmp_path, **{"n": N, **kwargs})


def test_high_arousal_raises_pitch_over_the_same_speaker(corpus):
    _, rows = corpus
    by_speaker = {}
    for row in rows:
        y, sr = sf.read(row["audio"])
        f0 = librosa.yin(y, fmin=70, fmax=600, sr=sr, frame_length=1024, hop_length=256)
        rms = librosa.feature.rms(y=y, frame_length=1024, hop_length=256)[0][: len(f0)]
        semitones = 12 * np.log2(np.median(f0[rms > 0.3 * rms.max()]))
        high = row["label"] in ("happy", "angry")
        by_speaker.setdefault(row["speaker"], {True: [], False: []})[high].append(semitones)
    gaps = [np.mean(p[True]) - np.mean(p[False]) for p in by_speaker.values()]
    assert min(gaps) > 2.5 and np.median(gaps) > 4.0, gaps  # the design says about +5 semitones


def test_text_cues_carry_valence_in_the_declared_fraction(corpus):
    _, rows = corpus
    cued = 0
    for row in rows:
        pleasant = any(cue in row["text"] for cue in PLEASANT_CUES)
        unpleasant = any(cue in row["text"] for cue in UNPLEASANT_CUES)
        assert not (pleasant and unpleasant), row["text"]
        if pleasant:
            assert row["label"] in ("happy", "neutral"), row
        if unpleasant:
            assert row["label"] in ("angry", "sad"), row
        cued += pleasant or unpleasant
    assert cued == round(CUE_PROBABILITY * N)
    # The same cue vocabulary serves both labels of a valence, so text cannot tell arousal.
    for cues, labels in ((PLEASANT_CUES, ("happy", "neutral")), (UNPLEASANT_CUES, ("angry", "sad"))):
        words = [
            {w for r in rows if r["label"] == lab for c in cues if c in r["text"] for w in c.split()} for lab in labels
        ]
        assert words[0] and words[1]


def test_redundant_design_names_the_emotion_in_the_declared_fraction(corpus, tmp_path):
    out = tmp_path / "redundant"
    rows = read_manifest(generate_corpus(out, n=N, seed=0, design="redundant"))
    cued = 0
    for row in rows:
        named = [label for label, cues in EMOTION_CUES.items() if any(cue in row["text"] for cue in cues)]
        assert named in ([], [row["label"]]), row
        assert not any(cue in row["text"] for cue in PLEASANT_CUES + UNPLEASANT_CUES), row["text"]
        cued += bool(named)
    assert cued == round(REDUNDANT_CUE_PROBABILITY * N)
    assert json.loads((out / "synth.json").read_text())["design"] == "redundant"
    # The default design keeps the parameter set it had before `design` existed, so old corpora still match.
    assert "design" not in json.loads((corpus[0] / "synth.json").read_text())
