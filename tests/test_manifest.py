import json

import pytest

from mmemo.data.manifest import read_manifest, write_manifest
from mmemo.errors import DataError

ROW = {"id": "a", "audio": "wavs/a.wav", "text": "hello", "label": "happy", "speaker": "s1", "split": "train"}


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_and_csv_read_the_same(tmp_path):
    rows = [ROW, {**ROW, "id": "b", "start": 0.5, "end": 1.5, "fold": 2}]
    a = read_manifest(_write(tmp_path / "m.jsonl", rows))
    b = read_manifest(write_manifest(a, tmp_path / "m.csv"))
    assert a == b
    assert a[0]["audio"] == str((tmp_path / "wavs/a.wav").resolve())  # relative to the manifest's folder
    assert a[1]["start"] == 0.5 and a[1]["fold"] == "2" and a[0]["start"] is None


@pytest.mark.parametrize(
    "row, message",
    [
        ({k: v for k, v in ROW.items() if k != "label"}, "missing column"),
        ({**ROW, "split": "dev"}, "split 'dev' is not one of"),
        ({**ROW, "text": ["x"]}, "column 'text' must be a string"),
        ({**ROW, "start": "soon"}, "must be a number of seconds"),
        ({**ROW, "start": 2.0, "end": 1.0}, "must be after start"),
    ],
)
def test_bad_rows_name_the_line(tmp_path, row, message):
    path = _write(tmp_path / "m.jsonl", [ROW | {"id": "ok"}, row])
    with pytest.raises(DataError, match=message) as err:
        read_manifest(path)
    assert "m.jsonl:2" in str(err.value)


def test_duplicate_ids_and_bad_json(tmp_path):
    with pytest.raises(DataError, match="duplicate id 'a'.*line 1"):
        read_manifest(_write(tmp_path / "d.jsonl", [ROW, ROW]))
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(DataError, match="bad.jsonl:1: not valid JSON"):
        read_manifest(tmp_path / "bad.jsonl")
    with pytest.raises(DataError, match="does not exist"):
        read_manifest(tmp_path / "missing.jsonl")


def test_label_whitespace_is_stripped(tmp_path):
    rows = read_manifest(_write(tmp_path / "m.jsonl", [{**ROW, "label": " happy ", "split": "TRAIN"}]))
    assert rows[0]["label"] == "happy" and rows[0]["split"] == "train"
