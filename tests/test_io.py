"""Safe writes: the whole new file or folder appears, or the old one stays; the input is never written over."""

import re

import pytest

from mmemo.errors import DataError
from mmemo.io import atomic_folder, atomic_write, check_output


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write("first")
    assert path.read_text() == "first"
    with pytest.raises(RuntimeError), atomic_write(path, "w", encoding="utf-8") as f:
        f.write("half")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "first"
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.txt"]  # no temporary file left


def test_atomic_folder_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "model"
    with atomic_folder(path) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError), atomic_folder(path) as tmp:
        (tmp / "b").write_text("2")
        raise RuntimeError("killed mid-write")
    assert [p.name for p in path.iterdir()] == ["a"]
    with atomic_folder(path) as tmp:
        (tmp / "c").write_text("3")
    assert [p.name for p in path.iterdir()] == ["c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_check_output_refuses_the_input_an_existing_file_and_a_wrong_suffix(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("precious\n")
    with pytest.raises(DataError, match=re.escape(f"refusing to write the clean manifest over the input {source};")):
        check_output(tmp_path / "." / "in.jsonl", source, overwrite=True, what="clean manifest")
    (tmp_path / "link.jsonl").symlink_to(source)  # another name for the input is the input
    with pytest.raises(DataError, match="over the input"):
        check_output(tmp_path / "link.jsonl", source, overwrite=True)
    existing = tmp_path / "out.csv"
    existing.write_text("old\n")
    with pytest.raises(DataError, match=re.escape(f"output {existing} already exists; pass --overwrite")):
        check_output(existing, source)
    with pytest.raises(DataError, match="predictions .*out.txt must end in .csv or .jsonl; choose another path"):
        check_output(tmp_path / "out.txt", source, suffixes=(".csv", ".jsonl"), what="predictions")
    with pytest.raises(DataError, match="is a folder"):
        check_output(tmp_path, overwrite=True)
    assert check_output(existing, source, overwrite=True, suffixes=(".csv",)) == existing
    assert check_output(str(tmp_path / "new.JSONL"), source, suffixes=(".jsonl",)) == tmp_path / "new.JSONL"
    assert source.read_text() == "precious\n" and existing.read_text() == "old\n"  # checking writes nothing
