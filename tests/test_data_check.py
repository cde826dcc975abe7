"""`mmemo data check`: every planted fault is found and named, a clean corpus passes, --write-clean is safe."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from mmemo.data.check import check_manifest, format_report, write_clean
from mmemo.data.manifest import read_manifest
from mmemo.errors import DataError


def _mmemo(*args):
    return subprocess.run([sys.executable, "-m", "mmemo", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    from mmemo.data.synthetic import generate_corpus

    return generate_corpus(tmp_path_factory.mktemp("clean"), n=48, seed=0)


def _faulty(clean, folder, leakage: bool) -> tuple:
    """A JSONL manifest with one planted fault per line; returns (path, {fault: line})."""
    rows = read_manifest(clean)  # absolute audio paths
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    wav = folder / "wav"
    wav.mkdir()
    (wav / "corrupt.wav").write_bytes(np.random.default_rng(0).bytes(4000))
    data = open(train[0]["audio"], "rb").read()
    (wav / "truncated.wav").write_bytes(data[: len(data) // 2])
    sf.write(wav / "zero.wav", np.zeros(0, dtype=np.float32), 16000)
    (wav / "zero_bytes.wav").write_bytes(b"")
    nan = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    nan[100:200] = np.nan
    sf.write(wav / "nan.wav", nan, 16000, subtype="FLOAT")
    sf.write(wav / "short.wav", np.zeros(400, dtype=np.float32), 16000)

    def bad(i, **change):
        return {**train[i], "id": f"bad{i}", **change}

    missing_column = {k: v for k, v in bad(9).items() if k != "speaker"}
    planted = {
        "missing-file": bad(1, audio=str(folder / "nowhere.wav")),
        "unreadable": bad(2, audio=str(wav / "corrupt.wav")),
        "truncated": bad(3, audio=str(wav / "truncated.wav")),
        "empty-audio": bad(4, audio=str(wav / "zero.wav")),
        "empty-file": bad(5, audio=str(wav / "zero_bytes.wav")),
        "nan-audio": bad(6, audio=str(wav / "nan.wav")),
        "too-short": bad(7, audio=str(wav / "short.wav")),
        "no-input": bad(8, audio="", text=""),
        "invalid-row:missing": missing_column,
        "invalid-row:type": bad(10, text={"not": "a string"}),
        "unknown-label": {**test[0], "id": "bad11", "label": "bored"},
        "duplicate-id": train[0],
    }
    lines = [json.dumps(r) for r in rows]
    if leakage:  # a test row spoken by a training speaker
        lines[rows.index(test[1])] = json.dumps({**test[1], "speaker": train[0]["speaker"]})
    where = {}
    for fault, row in planted.items():
        lines.append(json.dumps(row))
        where[fault] = len(lines)
    lines.append("{not json")
    where["invalid-row:json"] = len(lines)
    lines.append(json.dumps(bad(12, text="")))  # audio-only row: a warning
    where["empty-text"] = len(lines)
    path = folder / "faulty.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, where, train[0]["speaker"]


@pytest.mark.slow
def test_every_planted_fault_is_found_and_named_by_the_cli(clean, tmp_path):
    path, where, leaked = _faulty(clean, tmp_path, leakage=True)
    proc = _mmemo("data", "check", path, "--json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    errors = {(e["line"], e["kind"]) for e in report["errors"]}
    for fault, line in where.items():
        if fault == "empty-text":
            continue
        assert (line, fault.split(":")[0]) in errors, (fault, report["errors"])
    by_line = {e["line"]: e for e in report["errors"]}
    assert "speaker" in by_line[where["invalid-row:missing"]]["message"]
    assert "'text'" in by_line[where["invalid-row:type"]]["message"]
    assert "line 1" in by_line[where["duplicate-id"]]["message"]  # names the first occurrence
    leakage = [e for e in report["errors"] if e["kind"] == "leakage"]
    assert len(leakage) == 1 and leakage[0]["line"] is None and leaked in leakage[0]["message"]
    assert [w["line"] for w in report["warnings"]] == [where["empty-text"]]
    assert all(e["fix"] for e in report["errors"])  # every problem says what to do
    assert report["good_rows"] == 48 + 1  # the corpus rows (leakage drops no row) and the audio-only row
    assert report["tables"]["labels"]["bored"] == {"test": 1}

    text = _mmemo("data", "check", path)
    assert text.returncode == 1
    assert f"line {where['truncated']} (bad3): [truncated]" in text.stdout
    assert "FAILED" in text.stdout and "## Labels × split" in text.stdout


@pytest.mark.slow
def test_leakage_is_not_cleaned_away(clean, tmp_path):
    path, _, leaked = _faulty(clean, tmp_path, leakage=True)
    before = path.read_bytes()
    proc = _mmemo("data", "check", path, "--write-clean", tmp_path / "clean.jsonl")
    assert proc.returncode == 2 and leaked in proc.stderr and "re-split" in proc.stderr
    assert not (tmp_path / "clean.jsonl").exists()
    assert path.read_bytes() == before


@pytest.mark.slow
def test_write_clean_keeps_only_good_rows_and_never_touches_the_input(clean, tmp_path):
    path, where, _ = _faulty(clean, tmp_path, leakage=False)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    out = tmp_path / "out" / "clean.jsonl"
    proc = _mmemo("data", "check", path, "--write-clean", out)
    assert proc.returncode == 1  # the input still has errors
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    kept = read_manifest(out)
    assert [r["id"] for r in kept] == [r["id"] for r in read_manifest(clean)] + ["bad12"]
    assert check_manifest(out, progress=False).ok

    report = check_manifest(path, progress=False)
    with pytest.raises(DataError, match="already exists"):
        write_clean(report, out)
    with pytest.raises(DataError, match="over the input"):
        write_clean(report, path, overwrite=True)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


@pytest.mark.slow
def test_clean_corpus_passes(clean):
    proc = _mmemo("data", "check", clean)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = check_manifest(clean, progress=False)
    assert report.ok and not report.warnings and len(report.good_rows) == report.rows == 48
    t = report.tables
    assert sum(sum(by.values()) for by in t["labels"].values()) == 48
    assert set(t["speakers"]) == {"train", "valid", "test"}
    for split, q in t["durations"].items():
        assert 0 < q["min"] <= q["p5"] <= q["median"] <= q["p95"] <= q["max"], split
    assert "OK: no errors" in format_report(report)


def test_labels_option_and_csv_with_a_missing_column(clean, tmp_path):
    report = check_manifest(clean, labels=["angry", "happy", "neutral"], progress=False)
    assert {e.kind for e in report.errors} == {"unknown-label"}
    assert all("'sad'" in e.message for e in report.errors)
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("id,audio,text,label,split\nx,,hello,sad,train\n")
    report = check_manifest(csv_path, progress=False)
    assert report.errors[0].kind == "missing-column" and "speaker" in report.errors[0].message
    assert any(e.kind == "invalid-row" and e.line == 2 for e in report.errors)


def test_json_prints_the_report_on_stdout_and_o_writes_it(clean, tmp_path, capsys):
    from mmemo.cli import main

    out = tmp_path / "report.json"
    assert main(["data", "check", str(clean), "--json", "-o", str(out)]) == 0
    printed = capsys.readouterr()
    assert json.loads(printed.out) == json.loads(out.read_text())  # stdout holds the JSON alone
    assert json.loads(printed.out)["good_rows"] == 48 and "48" in printed.err  # the tables went to stderr
    assert main(["data", "check", str(clean), "-o", str(clean)]) == 2  # never over the input
    assert "refusing to write the results file over the input" in capsys.readouterr().err
