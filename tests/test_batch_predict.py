"""Batch prediction that survives a kill and shards, and the one row-scoring loop evaluate, predict-batch and audit
share: a real `python -m mmemo predict-batch` killed with SIGKILL and resumed, shards merged against one run, torn
last records, duplicate ids, bad clips, and a long clip scored alike by the three."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from mmemo.batch_predict import PARTIAL_SUFFIX, merge_predictions, parse_shard, predict_to_file
from mmemo.cli import main
from mmemo.data.manifest import read_manifest, write_manifest
from mmemo.errors import DataError
from mmemo.inference import EmotionRecognizer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rec(trained_run):
    return EmotionRecognizer.from_pretrained(trained_run["model_dir"], device="cpu")


@pytest.fixture(scope="module")
def one_thread():
    """Every run of a comparison on one CPU thread (in this process and in subprocesses): bit-identical sums."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def inputs(synth_corpus, tmp_path_factory):
    """A 60-row input (.jsonl, labels kept, no split) with a clip that does not decode, one whose file is missing,
    a text-only row, and ids that need CSV quoting (a comma, quotes, a line break)."""
    root = tmp_path_factory.mktemp("inputs")
    rows = [
        {"id": r["id"], "audio": r["audio"], "text": r["text"], "label": r["label"]}
        for r in read_manifest(synth_corpus)[:60]
    ]
    (root / "broken.wav").write_bytes(b"RIFF not really audio")
    rows[5] = {**rows[5], "audio": str(root / "broken.wav")}
    rows[17] = {**rows[17], "audio": str(root / "gone.wav")}
    rows[30] = {**rows[30], "audio": ""}
    rows[9] = {**rows[9], "id": 'odd, "quoted"\nid'}
    path = root / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _ids(path: Path) -> list[str]:
    if path.suffix == ".jsonl":
        return [json.loads(line)["id"] for line in path.read_text().splitlines()]
    import csv

    return [r["id"] for r in csv.DictReader(path.open(newline=""))]


def test_bad_clips_are_error_rows_and_every_row_is_written_once(rec, inputs, tmp_path, one_thread):
    out = tmp_path / "out.csv"
    summary = predict_to_file(rec, inputs, out, batch_size=4, chunk_rows=8, progress=False)
    assert summary["rows"] == summary["written"] == 60 and summary["errors"] == 2 and not summary["resumed"]
    assert not out.with_name(out.name + PARTIAL_SUFFIX).exists()
    import csv

    table = list(csv.DictReader(out.open(newline="")))
    expected = [json.loads(line)["id"] for line in inputs.read_text().splitlines()]
    assert [t["id"] for t in table] == expected  # input order, the quoted multi-line id intact
    assert "cannot decode" in table[5]["error"] and table[5]["label"] == ""
    assert "does not exist" in table[17]["error"] and table[17]["prob_angry"] == ""
    assert table[30]["error"] == "" and table[30]["path"] == ""  # text only is an ordinary row
    assert summary["scores"]["n"] == 58 and summary["unscored"] == 2


def test_resume_after_sigkill_equals_an_uninterrupted_run(trained_run, synth_corpus, tmp_path, one_thread):
    model = str(trained_run["model_dir"])
    source = tmp_path / "in.jsonl"
    rows = read_manifest(synth_corpus)[:96]
    source.write_text("".join(json.dumps({k: r[k] for k in ("id", "audio", "text", "label")}) + "\n" for r in rows))
    args = ["predict-batch", model, str(source), "--chunk-rows", "4", "--batch-size", "4", "--threads", "1"]
    out = tmp_path / "killed.jsonl"
    partial = out.with_name(out.name + PARTIAL_SUFFIX)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "mmemo", *args, "-o", str(out)], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if partial.exists() and partial.read_bytes().count(b"\n") >= 12:  # three chunks in
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, proc.stderr.read().decode()  # killed mid-run, not finished
    written = partial.read_bytes().count(b"\n")
    assert 12 <= written < len(rows) and not out.exists()

    assert main([*args, "-o", str(out), "--resume"]) == 0
    assert main([*args, "-o", str(tmp_path / "whole.jsonl")]) == 0
    assert out.read_bytes() == (tmp_path / "whole.jsonl").read_bytes()  # the same predictions, byte for byte
    assert _ids(out) == [r["id"] for r in rows] and not partial.exists()
    assert main([*args, "-o", str(out)]) == 2  # a finished output is not redone without --resume or --overwrite


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_torn_last_record_is_cut_off_and_predicted_again(rec, inputs, tmp_path, one_thread, suffix):
    whole = tmp_path / f"whole{suffix}"
    predict_to_file(rec, inputs, whole, batch_size=4, chunk_rows=8, progress=False)
    data = whole.read_bytes()
    # Cut inside the record whose id holds a line break (CSV: just after that break, inside its quotes), so the
    # torn record looks like whole lines; and again in the middle of a chunk's last record.
    odd = b'odd, \\"quoted\\"' if suffix == ".jsonl" else b'"odd, ""quoted""\n'
    for cut in (data.index(odd) + len(odd), data.index(b"\n", len(data) // 2) - 7):
        out = tmp_path / f"out{suffix}"
        out.with_name(out.name + PARTIAL_SUFFIX).write_bytes(data[:cut])
        summary = predict_to_file(rec, inputs, out, batch_size=4, chunk_rows=8, progress=False, resume=True)
        assert summary["torn"] and summary["resumed"] + summary["written"] == 60
        assert out.read_bytes() == data
        out.unlink()
    # Resuming a finished output finds nothing to do and leaves it as it was.
    summary = predict_to_file(rec, inputs, whole, batch_size=4, chunk_rows=8, progress=False, resume=True)
    assert summary["written"] == 0 and summary["resumed"] == 60 and whole.read_bytes() == data


def test_shards_merged_equal_one_run_and_a_missing_or_doubled_row_is_refused(
    trained_run, rec, inputs, tmp_path, capsys, one_thread
):
    one = tmp_path / "one.csv"
    predict_to_file(rec, inputs, one, batch_size=4, chunk_rows=8, workers=2, progress=False)  # decoded in workers
    parts = [tmp_path / f"part{i}.csv" for i in range(4)]
    for i, part in enumerate(parts):
        summary = predict_to_file(rec, inputs, part, batch_size=4, chunk_rows=8, shard=(i, 4), progress=False)
        assert summary["rows"] == (16 if i < 3 else 12)  # chunks i, i+4: 8 rows each, the last chunk 4
    merged = tmp_path / "merged.csv"
    model = str(trained_run["model_dir"])
    assert main(["predict-batch", model, str(inputs), "-o", str(merged), "--merge", *map(str, parts)]) == 0
    assert "60 rows from 4 parts" in capsys.readouterr().out
    assert merged.read_bytes() == one.read_bytes()

    with pytest.raises(
        DataError, match=r"12 of 60 input rows are in no part \('synth00024', 'synth00025', .*, \.\.\.\)"
    ):
        merge_predictions(inputs, parts[:3], tmp_path / "gap.csv")
    with pytest.raises(DataError, match=r"id 'synth00000' is in .*part0\.csv:2 and in .*part0\.csv:2; a row must be"):
        merge_predictions(inputs, [*parts, parts[0]], tmp_path / "twice.csv")
    doubled = tmp_path / "doubled.csv"  # shard 1's output with a row of shard 0 copied in
    lines = parts[1].read_bytes().split(b"\r\n")
    doubled.write_bytes(b"\r\n".join([*lines[:-1], parts[0].read_bytes().split(b"\r\n")[1], b""]))
    with pytest.raises(DataError, match=r"id 'synth00000' is in .*part0\.csv:2 and in .*doubled\.csv:\d+;"):
        merge_predictions(inputs, [parts[0], doubled, parts[2], parts[3]], tmp_path / "x.csv")
    unfinished = tmp_path / "late.csv"
    unfinished.with_name("late.csv" + PARTIAL_SUFFIX).write_bytes(b"")
    with pytest.raises(DataError, match=r"late\.csv is not finished \(.*late\.csv\.partial is there\)"):
        merge_predictions(inputs, [*parts[:3], unfinished], tmp_path / "x.csv")
    assert not (tmp_path / "gap.csv").exists() and not (tmp_path / "x.csv").exists()
    for bad in ("4/4", "-1/2", "1", "a/b"):
        with pytest.raises(DataError, match="give I/N with 0 <= I < N"):
            parse_shard(bad)


def test_duplicate_ids_are_refused_naming_both_rows(trained_run, synth_corpus, tmp_path, capsys):
    model = str(trained_run["model_dir"])
    rows = read_manifest(synth_corpus)[:3]
    source = tmp_path / "dup.jsonl"
    source.write_text("".join(json.dumps({"id": i, "audio": r["audio"]}) + "\n" for i, r in zip("aba", rows)))
    assert main(["predict-batch", model, str(source), "-o", str(tmp_path / "o.csv")]) == 2
    assert "dup.jsonl:3: duplicate id 'a' (first at line 1); ids must be unique" in capsys.readouterr().err
    folder = tmp_path / "clips"
    folder.mkdir()
    audio, rate = sf.read(rows[0]["audio"])
    sf.write(folder / "x.wav", audio, rate)
    sf.write(folder / "x.flac", audio, rate)
    assert main(["predict-batch", model, str(folder), "-o", str(tmp_path / "o.csv")]) == 2
    assert "x.flac and x.wav both give the id 'x'" in capsys.readouterr().err
    assert not (tmp_path / "o.csv").exists()


def test_resume_refuses_an_output_it_did_not_write(rec, inputs, tmp_path, capsys, trained_run):
    out = tmp_path / "out.jsonl"
    partial = out.with_name(out.name + PARTIAL_SUFFIX)
    partial.write_text(json.dumps({"id": "synth00000"}) + "\n" + json.dumps({"id": "synth00000"}) + "\n")
    with pytest.raises(DataError, match=r"id 'synth00000' is written twice \(lines 1 and 2\)"):
        predict_to_file(rec, inputs, out, resume=True, progress=False)
    partial.write_text(json.dumps({"id": "elsewhere"}) + "\n")
    with pytest.raises(DataError, match=r"out\.jsonl\.partial:1: id 'elsewhere' is not among the rows of this run"):
        predict_to_file(rec, inputs, out, resume=True, progress=False)
    partial.write_text('{"id": "synth00000"}\nnot json\n{"id": "synth00001"}\n')
    with pytest.raises(DataError, match=r"out\.jsonl\.partial:2: not a predict-batch JSON record"):
        predict_to_file(rec, inputs, out, resume=True, progress=False)
    finished = tmp_path / "finished.jsonl"  # a finished output of another input: refused, and no .partial made
    finished.write_text(json.dumps({"id": "elsewhere"}) + "\n")
    with pytest.raises(DataError, match=r"finished\.jsonl:1: id 'elsewhere' is not among the rows of this run"):
        predict_to_file(rec, inputs, finished, resume=True, progress=False)
    assert not finished.with_name(finished.name + PARTIAL_SUFFIX).exists()
    csv_partial = tmp_path / "out.csv.partial"
    csv_partial.write_text("id,path,label,prob_angry,prob_happy,prob_neutral,prob_sad,error\r\n")
    with pytest.raises(DataError, match="another model, or other options"):  # written without true_label
        predict_to_file(rec, inputs, tmp_path / "out.csv", resume=True, progress=False)
    before = partial.read_bytes()
    model = str(trained_run["model_dir"])
    assert main(["predict-batch", model, str(inputs), "-o", str(out)]) == 2
    assert "left from an interrupted run; pass --resume to continue it" in capsys.readouterr().err
    assert main(["predict-batch", model, str(inputs), "-o", str(out), "--resume", "--overwrite"]) == 2
    assert partial.read_bytes() == before  # refused runs leave the user's files alone


def test_evaluate_predict_batch_and_audit_score_a_long_clip_alike(trained_run, rec, synth_corpus, tmp_path):
    from mmemo.audit import model_probabilities
    from mmemo.data.pool import read_lone_manifest
    from mmemo.evaluate import evaluate_manifest, row_logits
    from mmemo.metrics import CONDITIONS, classification_metrics

    rows = [r for r in read_manifest(synth_corpus) if r["split"] == "test"][:12]
    pieces = [sf.read(r["audio"], dtype="float32")[0] for r in rows[:4]]
    gap = np.zeros(8000, dtype=np.float32)  # half a second of silence between the utterances
    long = np.concatenate([p for piece in pieces for p in (piece, gap)])
    assert len(long) > 9 * 16000
    sf.write(tmp_path / "long.wav", long, 16000)
    rows[0] = {**rows[0], "id": "long", "audio": str(tmp_path / "long.wav")}
    manifest = write_manifest(rows, tmp_path / "m.jsonl")

    out = tmp_path / "out.jsonl"
    predict_to_file(rec, manifest, out, progress=False)
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert len(records["long"]["segments"]) >= 2  # segmented, as predict() does

    read = read_lone_manifest(manifest)
    logits = row_logits(rec, read)  # what evaluate_manifest scores
    for condition in CONDITIONS:
        expected = [
            [
                (records[i]["probabilities"] if condition == "both" else records[i]["per_modality"][condition])[label]
                for label in rec.labels
            ]
            for i in logits[condition].ids
        ]
        np.testing.assert_allclose(np.exp(logits[condition].logits.numpy()), expected, rtol=1e-12)
    labels, audited = model_probabilities(read, trained_run["model_dir"], device="cpu")
    fused = [[records[r["id"]]["probabilities"][label] for label in labels] for r in read]
    np.testing.assert_array_equal(audited, fused)

    # evaluate's scores are those of predict-batch's labels, condition by condition
    scores = evaluate_manifest(trained_run["model_dir"], manifest, split="all", device="cpu", progress=False)
    index = {label: k for k, label in enumerate(rec.labels)}
    for condition in CONDITIONS:
        ids = logits[condition].ids
        probs = [
            records[i]["probabilities"] if condition == "both" else records[i]["per_modality"][condition] for i in ids
        ]
        truth = [index[records[i]["true_label"]] for i in ids]
        predicted = [index[max(p, key=p.get)] for p in probs]
        assert scores[condition]["confusion"] == classification_metrics(truth, predicted, len(index))["confusion"]

    # and it is not what the whole clip in one piece gives: the test would catch evaluate scoring whole clips
    whole = rec.predict(text=rows[0]["text"], audio=long, sampling_rate=16000, window_seconds=60.0)
    gaps = [abs(whole.probabilities[k] - records["long"]["probabilities"][k]) for k in rec.labels]
    assert max(gaps) > 1e-3


def test_asr_transcribes_rows_without_text(rec, synth_corpus, tmp_path):
    from conftest import build_tiny_whisper

    from mmemo.asr import load_transcriber

    rows = read_manifest(synth_corpus)[:4]
    source = tmp_path / "in.jsonl"
    texts = ["", rows[1]["text"], "", ""]
    source.write_text("".join(json.dumps({"audio": r["audio"], "text": t}) + "\n" for r, t in zip(rows, texts)))
    transcriber = load_transcriber(build_tiny_whisper(tmp_path / "whisper"), device="cpu", max_new_tokens=8)
    out = tmp_path / "out.csv"
    predict_to_file(rec, source, out, transcriber=transcriber, progress=False)
    import csv

    table = list(csv.DictReader(out.open(newline="")))
    assert [t["transcript_source"] for t in table] == ["asr", "typed", "asr", "asr"]
    assert table[1]["transcript"] == rows[1]["text"] and all(t["transcript"] for t in table)


def test_a_batch_the_model_refuses_is_retried_row_by_row():
    from types import SimpleNamespace

    from mmemo.row_scoring import predict_rows

    class Refuses:
        """predict() refuses any batch holding the text "bad", as the model would an input it cannot take."""

        config = SimpleNamespace(sampling_rate=16000, acoustic_features=False, acoustic_normalization="global")

        def predict(self, text, audio, sampling_rate, batch_size, speaker_profile):
            if "bad" in text:
                raise DataError("cannot take this input")
            return [SimpleNamespace(text=t) for t in text]

    rows = [{"id": str(i), "audio": "", "text": t} for i, t in enumerate(["a", "bad", "c", " ", "e"])]
    (chunk, results), *rest = predict_rows(Refuses(), rows, batch_size=8)
    assert not rest and list(chunk) == [0, 1, 2, 3, 4]
    assert [getattr(r, "text", r) for r in results] == [
        "a",
        "cannot take this input",
        "c",
        "row has neither text nor audio",
        "e",
    ]
