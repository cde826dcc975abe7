"""Real-use inference: every input kind, batching, per-modality probabilities, long audio, calibration, int8, batch CLI."""

import csv
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from mmemo import EmotionRecognizer
from mmemo.cli import main
from mmemo.data.manifest import read_manifest
from mmemo.inference import Segment, speech_regions, speech_windows

RATE = 16000
HIGH_AROUSAL = ("angry", "happy")


@pytest.fixture(scope="module")
def rec(trained_run):
    return EmotionRecognizer.from_pretrained(trained_run["model_dir"])


@pytest.fixture(scope="module")
def rows(synth_corpus):
    return read_manifest(synth_corpus)


def _close(p, q, atol):
    return max(abs(p[k] - q[k]) for k in p) <= atol


def test_every_input_kind_gives_the_same_answer(rec, rows, tmp_path):
    import librosa

    row = next(r for r in rows if r["split"] == "test")
    audio, rate = sf.read(row["audio"], dtype="float64")
    assert rate == RATE
    reference = rec.predict(audio=row["audio"]).probabilities
    for fmt in ("flac", "ogg", "mp3"):
        sf.write(tmp_path / f"clip.{fmt}", audio, rate)
    stereo = np.stack([audio, audio])
    exact = {  # the same samples in another container: the same answer up to float rounding
        "flac": tmp_path / "clip.flac",
        "float64": audio,
        "float32 tensor": torch.from_numpy(audio).float(),
        "stereo (2, N)": stereo,
        "stereo (N, 2)": stereo.T,
        "int16": (audio * 32767).round().astype(np.int16),
    }
    for kind, value in exact.items():
        got = rec.predict(audio=value, sampling_rate=None if kind == "flac" else rate)
        assert _close(got.probabilities, reference, 1e-3), kind
    lossy = {  # lossy codecs and other rates change the samples: close, not equal
        "ogg": (tmp_path / "clip.ogg", None),
        "mp3": (tmp_path / "clip.mp3", None),
        "8 kHz": (librosa.resample(audio, orig_sr=rate, target_sr=8000), 8000),
        "44.1 kHz": (librosa.resample(audio, orig_sr=rate, target_sr=44100), 44100),
    }
    for kind, (value, value_rate) in lossy.items():
        got = rec.predict(audio=value, sampling_rate=value_rate)
        assert sum(got.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert _close(got.probabilities, reference, 0.1), kind


def test_batches_are_sorted_by_length_and_answers_come_back_in_input_order(rec, rows):
    picked = [r for r in rows if r["split"] == "test"][:7]
    texts = [r["text"] for r in picked]
    audios = [sf.read(r["audio"], dtype="float32")[0] for r in picked]
    texts[2], audios[5] = "", None  # an audio-only and a text-only item inside the batch
    seen = []
    forward = rec._forward

    def spy(units):
        seen.append([0 if u["audio"] is None else len(u["audio"]) for u in units])
        return forward(units)

    rec._forward = spy
    try:
        batch = rec.predict(text=texts, audio=audios, sampling_rate=RATE, batch_size=3)
    finally:
        del rec._forward
    assert [len(chunk) for chunk in seen] == [3, 3, 1]
    lengths = [n for chunk in seen for n in chunk]
    assert lengths == sorted(lengths)
    for i, (t, a) in enumerate(zip(texts, audios)):
        single = rec.predict(text=t or None, audio=a, sampling_rate=RATE)
        assert batch[i].modalities == single.modalities
        # zero padding changes a group-norm wav2vec2's frames a little (no attention mask for those models,
        # by design; sorting keeps the padding small): close, not equal
        assert _close(batch[i].probabilities, single.probabilities, 2e-2), i
        assert batch[i].label == single.label or max(single.probabilities.values()) < 0.5, i
    with pytest.raises(ValueError, match="batch_size"):
        rec.predict(text="hi", batch_size=0)


def test_per_modality_probabilities_match_single_modality_predictions(rec, rows):
    row = next(r for r in rows if r["split"] == "test")
    both = rec.predict(text=row["text"], audio=row["audio"])
    assert set(both.per_modality) == {"text", "audio"}
    assert _close(both.per_modality["text"], rec.predict(text=row["text"]).probabilities, 1e-5)
    assert _close(both.per_modality["audio"], rec.predict(audio=row["audio"]).probabilities, 1e-5)
    text_only = rec.predict(text=row["text"])
    assert text_only.per_modality == {"text": text_only.probabilities} and text_only.segments == ()
    assert json.loads(json.dumps(both.to_dict()))["per_modality"]["audio"] == both.per_modality["audio"]


@pytest.fixture(scope="module")
def recording(rows):
    """3 minutes: ~60 s of angry clips, then sad clips (with a 6 s silence inside), then happy; 0.6-1.2 s gaps."""
    rng = np.random.default_rng(0)
    pieces, clips, position, silence = [], [], 0, None
    for block, label in enumerate(("angry", "sad", "happy")):
        pool = iter([r for r in rows if r["label"] == label])
        block_end = (block + 1) * 60 * RATE
        while position < block_end - 2 * RATE:
            if block == 1 and silence is None and position > 85 * RATE:
                silence = (position, position + 6 * RATE)
                pieces.append(np.zeros(6 * RATE, np.float32))
                position += 6 * RATE
            clip = sf.read(next(pool)["audio"], dtype="float32")[0]
            gap = np.zeros(int(rng.uniform(0.6, 1.2) * RATE), np.float32)
            clips.append({"start": position, "end": position + len(clip), "label": label, "audio": clip})
            pieces += [clip, gap]
            position += len(clip) + len(gap)
    wave = np.concatenate(pieces) + rng.normal(0, 1e-4, position).astype(np.float32)  # a quiet room, not digital zero
    return {"wave": wave, "clips": clips, "silence": silence}


def test_long_audio_is_segmented_at_speech_and_follows_the_emotion_changes(rec, recording):
    wave, clips = recording["wave"], recording["clips"]
    assert 170 < len(wave) / RATE < 190
    result = rec.predict(audio=wave, sampling_rate=RATE)
    segments = result.segments
    assert all(isinstance(s, Segment) for s in segments)
    starts = [s.start for s in segments]
    assert starts == sorted(starts) and all(0 <= s.start < s.end <= len(wave) / RATE for s in segments)
    # one segment per clip: every clip is covered, the gaps between clips are not
    assert len(segments) == len(clips)
    for segment, clip in zip(segments, clips):
        assert segment.start <= clip["start"] / RATE + 0.25 and segment.end >= clip["end"] / RATE - 0.25
        assert segment.end - segment.start <= (clip["end"] - clip["start"]) / RATE + 0.25
    a, b = (x / RATE for x in recording["silence"])
    assert not any(s.start < b - 0.2 and s.end > a + 0.2 for s in segments)
    # each segment is classified like the clip under it, so the labels change where the emotion changes
    singles = rec.predict(audio=[c["audio"] for c in clips], sampling_rate=RATE)
    agree = np.mean([s.label == p.label for s, p in zip(segments, singles)])
    assert agree >= 0.9, agree
    arousal = {}
    for label in ("angry", "sad", "happy"):
        block = [s for s, c in zip(segments, clips) if c["label"] == label]
        arousal[label] = np.mean([sum(s.probabilities[k] for k in HIGH_AROUSAL) for s in block])
    assert arousal["angry"] > arousal["sad"] < arousal["happy"], arousal
    # the recording's answer is the duration-weighted mean of its segments
    weights = np.array([s.end - s.start for s in segments])
    for label in rec.labels:
        expected = np.average([s.probabilities[label] for s in segments], weights=weights)
        assert result.probabilities[label] == pytest.approx(expected, abs=1e-6)
    assert result.label == max(result.probabilities, key=result.probabilities.get)
    assert result.per_modality == {"audio": result.probabilities}


def test_long_audio_with_a_transcript_fuses_it_with_every_segment(rec, recording):
    wave = recording["wave"][: 40 * RATE]
    transcript = "I hate this. Nothing ever works."
    result = rec.predict(text=transcript, audio=wave, sampling_rate=RATE)
    audio_only = rec.predict(audio=wave, sampling_rate=RATE)
    assert result.modalities == ("text", "audio")
    assert _close(result.per_modality["text"], rec.predict(text=transcript).probabilities, 1e-5)
    assert _close(result.per_modality["audio"], audio_only.probabilities, 1e-5)
    assert [(s.start, s.end) for s in result.segments] == [(s.start, s.end) for s in audio_only.segments]
    first = recording["clips"][0]
    fused_first = rec.predict(
        text=transcript,
        audio=wave[int(result.segments[0].start * RATE) : int(result.segments[0].end * RATE)],
        sampling_rate=RATE,
    )
    assert _close(result.segments[0].probabilities, fused_first.probabilities, 5e-3)  # batched with others
    assert first["start"] / RATE >= result.segments[0].start and type(result.segments[0].end) is float


def test_speech_longer_than_the_window_is_cut_into_overlapping_windows():
    rng = np.random.default_rng(0)
    t = np.arange(20 * RATE) / RATE
    speech = (np.sin(2 * np.pi * 150 * t) * (0.5 + 0.5 * rng.random(t.size))).astype(np.float32)
    wave = np.concatenate([np.zeros(3 * RATE, np.float32), speech, np.zeros(3 * RATE, np.float32)])
    regions = speech_regions(wave, RATE)
    assert len(regions) == 1
    assert abs(regions[0][0] - 3 * RATE) < 0.15 * RATE and abs(regions[0][1] - 23 * RATE) < 0.15 * RATE
    windows = speech_windows(wave, RATE, window_seconds=8.0, overlap_seconds=1.0)
    assert windows[0][0] == regions[0][0] and windows[-1][1] == regions[0][1]
    assert all(b - a == 8 * RATE for a, b in windows)
    assert all(nxt[0] <= cur[1] - RATE for cur, nxt in zip(windows, windows[1:]))  # overlap ≥ 1 s
    assert speech_regions(np.zeros(10 * RATE, np.float32), RATE) == []
    assert speech_windows(np.zeros(10 * RATE, np.float32), RATE, 4.0, 1.0)[-1][1] == 10 * RATE  # no speech: whole


def test_int8_stays_close_to_fp32(trained_run, rec, rows):
    int8 = EmotionRecognizer.from_pretrained(trained_run["model_dir"], int8=True)
    picked = [r for r in rows if r["split"] == "test"][:12]
    fp = rec.predict(text=[r["text"] for r in picked], audio=[r["audio"] for r in picked])
    q = int8.predict(text=[r["text"] for r in picked], audio=[r["audio"] for r in picked])
    assert any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in int8.model.modules())
    diff = max(abs(a.probabilities[k] - b.probabilities[k]) for a, b in zip(fp, q) for k in a.probabilities)
    assert diff < 0.05, diff
    with pytest.raises(Exception, match="cannot be saved"):
        int8.save_pretrained(trained_run["out_dir"] / "int8")


def test_cli_predict_details_and_predict_batch(trained_run, rows, tmp_path, capsys):
    from mmemo.data.manifest import write_manifest

    model = str(trained_run["model_dir"])
    row = next(r for r in rows if r["split"] == "test")
    assert main(["predict", model, "--text", row["text"], "--audio", row["audio"], "--details", "--threads", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"label", "probabilities", "modalities", "per_modality", "segments"}
    assert set(out["per_modality"]) == {"text", "audio"} and out["segments"] == []

    folder = tmp_path / "recordings"
    picked = [r for r in rows if r["split"] == "test"][:5]
    for i, r in enumerate(picked):
        audio, rate = sf.read(r["audio"])
        (folder / f"speaker{i % 2}").mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"speaker{i % 2}" / f"clip{i}.{('wav', 'flac', 'ogg')[i % 3]}", audio, rate)
    (folder / "broken.wav").write_bytes(b"not audio")
    (folder / "notes.txt").write_text("ignored")
    out_csv = tmp_path / "out.csv"
    assert main(["predict-batch", model, str(folder), "-o", str(out_csv), "--batch-size", "2"]) == 0
    table = list(csv.DictReader(out_csv.open()))
    assert [t["id"] for t in table] == [
        "broken",
        "speaker0/clip0",
        "speaker0/clip2",
        "speaker0/clip4",
        "speaker1/clip1",
        "speaker1/clip3",
    ]
    assert table[0]["label"] == "" and "cannot decode" in table[0]["error"]
    rec = EmotionRecognizer.from_pretrained(model)
    for t in table[1:]:
        probs = {k[5:]: float(v) for k, v in t.items() if k.startswith("prob_")}
        assert set(probs) == set(rec.labels) and t["label"] == max(probs, key=probs.get)
    single = rec.predict(audio=str(folder / "speaker0" / "clip0.wav"))
    assert table[1]["label"] == single.label
    assert main(["predict-batch", model, str(folder), "-o", str(out_csv)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["predict-batch", model, str(folder), "-o", str(out_csv), "--overwrite"]) == 0

    manifest = write_manifest(
        [{**r, "text": "" if i == 3 else r["text"]} for i, r in enumerate(rows[:20])], tmp_path / "some.jsonl"
    )
    out_jsonl = tmp_path / "out.jsonl"
    assert main(["predict-batch", model, str(manifest), "-o", str(out_jsonl), "--batch-size", "8"]) == 0
    records = [json.loads(line) for line in out_jsonl.read_text().splitlines()]
    assert [r["id"] for r in records] == [r["id"] for r in rows[:20]]
    assert records[3]["modalities"] == ["audio"]
    del records[3]
    assert all(r["modalities"] == ["text", "audio"] and set(r["per_modality"]) == {"text", "audio"} for r in records)
