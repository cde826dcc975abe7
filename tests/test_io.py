"""Atomic writes: the whole new file or folder appears, or the old one stays."""

import pytest

from mmemo.io import atomic_folder, atomic_write


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
