"""Real-use inference: every input kind, batching, per-modality probabilities, long audio, calibration, int8, batch CLI."""

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from mmemo import EmotionRecognizer
from mmemo.cli import main
from mmemo.prediction import Segment
from mmemo.segmentation import speech_regions, speech_windows

RATE = 16000
HIGH_AROUSAL = ("angry", "happy")


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


def test_predict_batch_needs_only_audio_and_or_text(trained_run, rows, tmp_path, capsys):
    model = str(trained_run["model_dir"])
    clips = tmp_path / "in" / "clips"
    clips.mkdir(parents=True)
    picked = [r for r in rows if r["split"] == "test"][:4]
    for r in picked:
        shutil.copy(r["audio"], clips / f"{r['id']}.wav")
    source = tmp_path / "in" / "inputs.csv"  # relative audio paths: against the file's folder, as in manifests
    with source.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "audio", "text"])
        for r in picked:
            writer.writerow([r["id"], f"clips/{r['id']}.wav", r["text"]])
    out = tmp_path / "out.csv"
    assert main(["predict-batch", model, str(source), "-o", str(out)]) == 0
    table = list(csv.DictReader(out.open()))
    assert [t["id"] for t in table] == [r["id"] for r in picked] and not any(t["error"] for t in table)
    assert "true_label" not in table[0] and "accuracy" not in capsys.readouterr().out
    rec = EmotionRecognizer.from_pretrained(model)
    assert table[0]["label"] == rec.predict(text=picked[0]["text"], audio=picked[0]["audio"]).label

    texts = tmp_path / "texts.jsonl"  # text only, no id: the row number stands in
    texts.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in picked))
    out = tmp_path / "texts_out.jsonl"
    assert main(["predict-batch", model, str(texts), "-o", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == ["1", "2", "3", "4"] and all(r["modalities"] == ["text"] for r in records)


def test_predict_batch_scores_labelled_rows_and_filters_a_split(trained_run, rows, tmp_path, capsys):
    from mmemo.batch_predict import predict_to_file
    from mmemo.metrics import classification_metrics

    model = str(trained_run["model_dir"])
    rec = EmotionRecognizer.from_pretrained(model)
    labelled = [{"audio": r["audio"], "text": r["text"], "label": r["label"], "split": r["split"]} for r in rows]
    labelled[0]["label"] = "bored"  # not in the model's label set: carried, not scored
    source = tmp_path / "labelled.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in labelled))
    summary = predict_to_file(rec, source, tmp_path / "all.csv", progress=False)
    assert summary["rows"] == len(rows) and summary["unscored"] == 1
    table = list(csv.DictReader((tmp_path / "all.csv").open()))
    assert [t["true_label"] for t in table] == [r["label"] for r in labelled]
    index = {label: i for i, label in enumerate(rec.labels)}
    scored = [t for t in table if t["true_label"] in index]
    expected = classification_metrics(
        [index[t["true_label"]] for t in scored], [index[t["label"]] for t in scored], len(rec.labels)
    )
    assert summary["scores"]["n"] == len(rows) - 1 and summary["scores"]["ua"] == expected["ua"]

    out = tmp_path / "test.csv"
    assert main(["predict-batch", model, str(source), "-o", str(out), "--split", "test"]) == 0
    printed = capsys.readouterr().out
    test_rows = [r for r in labelled if r["split"] == "test"]
    assert len(list(csv.DictReader(out.open()))) == len(test_rows)
    assert f"on {len(test_rows)} labelled rows" in printed and "UA 0." in printed
    assert main(["predict-batch", model, str(source), "-o", str(out), "--overwrite", "--split", "dev"]) == 2
    assert "no rows of split 'dev' (its splits are test, train, valid)" in capsys.readouterr().err


def test_model_folder_is_a_hugging_face_style_folder_with_a_model_card(trained_run, rows, tmp_path):
    import yaml

    folder = trained_run["model_dir"]
    meta = json.loads((folder / "config.json").read_text())
    labels = meta["model"]["labels"]
    assert meta["id2label"] == {str(i): label for i, label in enumerate(labels)}
    assert meta["label2id"] == {label: i for i, label in enumerate(labels)}
    for encoder in ("text_config", "audio_config"):  # headless encoders: no stale LABEL_0 / LABEL_1 maps
        assert "id2label" not in meta[encoder] and "label2id" not in meta[encoder], encoder
    card = (folder / "README.md").read_text()
    _, front, body = card.split("---\n", 2)
    front = yaml.safe_load(front)
    assert front["library_name"] == "mmemo" and front["license"] == "unknown" and "language" not in front
    assert "emotion-recognition" in front["tags"] and front["pipeline_tag"] == "audio-classification"
    assert all(f"`{label}`" in body for label in labels)
    # the data summary: rows, speakers and label counts per split, counted from the manifest
    for split in ("train", "valid", "test"):
        split_rows = [r for r in rows if r["split"] == split]
        counts = " | ".join(str(sum(r["label"] == label for r in split_rows)) for label in sorted(labels))
        assert f"| {split} | {len(split_rows)} | {len({r['speaker'] for r in split_rows})} | {counts} |" in body
    # the test table per condition and the calibration, as training measured them
    test = trained_run["test"]
    for cond, name in (("both", "text+audio"), ("text", "text-only"), ("audio", "audio-only")):
        m = test[cond]
        assert f"| {name} | {m['n']} | {m['wa']:.3f} | {m['ua']:.3f} | {m['macro_f1']:.3f} |" in body
    cal = trained_run["calibration"]
    assert f"T = {cal['temperature']:.3f}" in body and f"{cal['ece_before']:.3f} before" in body
    assert f"Trained on {len(rows)} labelled clips" in body and "decisions about people" in body
    # a folder from before cards and label maps still loads, with an empty card
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    meta_old = {k: v for k, v in meta.items() if k not in ("id2label", "label2id", "card")}
    (old / "config.json").write_text(json.dumps(meta_old))
    (old / "README.md").unlink()
    loaded = EmotionRecognizer.from_pretrained(old)
    assert loaded.labels == labels and loaded.card.test is None
    # a loaded model keeps its card when saved again
    rec = EmotionRecognizer.from_pretrained(folder)
    assert rec.card.test["both"]["ua"] == pytest.approx(test["both"]["ua"])
    rec.save_pretrained(tmp_path / "again")
    assert (tmp_path / "again" / "README.md").read_text() == card


def test_push_to_hub_uploads_a_loadable_folder_and_fails_clearly_offline(rec, monkeypatch):
    from huggingface_hub import HfApi

    from mmemo.errors import MmemoError

    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        # the folder only exists during the call: check it is a complete model folder now
        folder = kwargs["folder_path"]
        loaded = EmotionRecognizer.from_pretrained(folder)
        calls.append(("upload_folder", kwargs, loaded.labels, sorted(p.name for p in Path(folder).iterdir())))
        return "https://hub.example/commit/1"

    with monkeypatch.context() as m:
        m.setattr(HfApi, "create_repo", create_repo)
        m.setattr(HfApi, "upload_folder", upload_folder)
        assert rec.push_to_hub("someone/mmemo-tiny", private=True) == "https://hub.example/commit/1"
    (_, repo, create_kwargs), (_, upload_kwargs, labels, files) = calls
    assert repo == "someone/mmemo-tiny" and create_kwargs["private"] is True and create_kwargs["exist_ok"] is True
    assert upload_kwargs["repo_id"] == "someone/mmemo-tiny" and upload_kwargs["repo_type"] == "model"
    assert labels == rec.labels and {"README.md", "config.json", "model.safetensors"} <= set(files)
    # the real client against a hub that is not there: a clear error naming the repository, not a traceback
    with pytest.raises(MmemoError, match="cannot upload the model to 'someone/mmemo-tiny'.*token"):
        rec.push_to_hub("someone/mmemo-tiny", endpoint="http://127.0.0.1:9", token="hf_none")


def test_reprs_round_and_the_recognizer_is_callable(rec):
    pred = rec("What a lovely surprise.")
    assert pred == rec.predict(text="What a lovely surprise.")
    assert any(len(repr(p).split(".")[-1]) > 3 for p in pred.probabilities.values())  # full floats kept
    shown = repr(pred)
    for label, p in pred.probabilities.items():
        assert f"'{label}': {round(p, 3)}," in shown or f"'{label}': {round(p, 3)}}}" in shown
    assert all(len(digits) <= 3 for digits in re.findall(r"': \d\.(\d+)", shown)), shown
    assert shown.startswith("Prediction(label=") and "modalities=('text',)" in shown
    described = repr(rec)
    assert f"labels={rec.labels}" in described and "(bert)" in described and "(wav2vec2)" in described
    assert "device='cpu'" in described and f"temperature={rec.temperature:.3f}" in described
    assert "hidden 32, 1 layer(s)" in described


def test_cli_device_option(trained_run, synth_corpus, tmp_path, capsys):
    model = str(trained_run["model_dir"])
    assert main(["predict", model, "--text", "I am so glad.", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["modalities"] == ["text"]
    if not torch.cuda.is_available():  # every model-loading command takes --device and passes it on
        for args in (
            ["predict", model, "--text", "I am so glad."],
            ["predict-batch", model, str(synth_corpus), "-o", str(tmp_path / "out.csv")],
            ["evaluate", model, str(synth_corpus)],
            ["demo", "--model", model],
        ):
            assert main([*args, "--device", "cuda"]) == 2, args
            assert "no CUDA GPU" in capsys.readouterr().err, args
    assert main(["predict", model, "--text", "hi", "--device", "tpu9"]) == 2
    assert "unknown device 'tpu9'" in capsys.readouterr().err
    assert EmotionRecognizer.from_pretrained(model, device="auto", int8=True).device.type == "cpu"


def test_save_pretrained_never_replaces_a_folder_that_is_not_a_model(rec, tmp_path):
    from mmemo.errors import MmemoError

    precious = tmp_path / "my_project"
    precious.mkdir()
    (precious / "notes.txt").write_text("do not lose me")
    with pytest.raises(MmemoError, match="not an mmemo model folder"):
        rec.save_pretrained(precious)
    assert (precious / "notes.txt").read_text() == "do not lose me"
    rec.save_pretrained(tmp_path / "model")
    rec.save_pretrained(tmp_path / "model")  # a model folder is replaced
    assert (tmp_path / "model" / "config.json").is_file()
    assert oct((tmp_path / "model").stat().st_mode & 0o777) != oct(0o700)  # not mkdtemp's private mode


def test_predict_batch_refuses_to_write_over_its_input(rec, rows, tmp_path):
    from mmemo.batch_predict import predict_to_file
    from mmemo.data.manifest import write_manifest
    from mmemo.errors import DataError

    manifest = write_manifest(rows[:2], tmp_path / "in.jsonl")
    before = manifest.read_bytes()
    for overwrite in (False, True):  # without --overwrite too: advising --overwrite here would be wrong
        with pytest.raises(DataError, match="refusing to write the predictions over the input"):
            predict_to_file(rec, manifest, manifest, overwrite=overwrite)
    assert manifest.read_bytes() == before
