"""Cross-validation: fold assignment, and a real 3-fold run of a tiny model through `mmemo cv`."""

import json

import numpy as np
import pytest
import yaml
from conftest import tiny_config_dict

from mmemo.cli import main
from mmemo.cv import assign_folds, fold_order, fold_splits
from mmemo.data.manifest import read_manifest
from mmemo.errors import DataError


def _rows(speakers, per_speaker=2, fold=None):
    return [
        {"id": f"{s}-{i}", "speaker": s, "fold": fold(s) if fold else None, "label": "a", "split": "train"}
        for s in speakers
        for i in range(per_speaker)
    ]


def test_fold_assignment():
    rows = _rows(["s09", "s01", "s05", "s03", "s07", "s02", "s04"])
    fold_of = assign_folds(rows, 3)
    # sorted speakers cut into contiguous near-equal groups: s01 s02 s03 | s04 s05 | s07 s09
    groups = {}
    for r in rows:
        groups.setdefault(fold_of[r["id"]], set()).add(r["speaker"])
    assert groups == {"1": {"s01", "s02", "s03"}, "2": {"s04", "s05"}, "3": {"s07", "s09"}}
    assert assign_folds(rows, "3") == fold_of == assign_folds(list(reversed(rows)), 3)  # deterministic
    assert set(assign_folds(rows, "speaker").values()) == {r["speaker"] for r in rows}
    assert assign_folds(rows, None) == assign_folds(rows, "speaker")  # no fold column: leave one speaker out

    by_column = _rows(["a", "b", "c", "d"], fold=lambda s: {"a": "10", "b": "2", "c": "2", "d": "1"}[s])
    assert fold_order(assign_folds(by_column, "fold").values()) == ["1", "2", "10"]
    assert assign_folds(by_column, None) == assign_folds(by_column, "fold")
    splits = {(r["speaker"], r["split"]) for r in fold_splits(by_column, assign_folds(by_column), "10")}
    assert splits == {("a", "test"), ("d", "valid"), ("b", "train"), ("c", "train")}  # valid wraps round to 1

    with pytest.raises(DataError, match="no `fold`"):
        assign_folds(rows, "fold")
    with pytest.raises(DataError, match="between 3"):
        assign_folds(rows, 2)
    with pytest.raises(DataError, match="at least 3"):
        assign_folds(_rows(["a", "b"]), "speaker")


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory):
    from mmemo.data.synthetic import generate_corpus

    tmp = tmp_path_factory.mktemp("cv")
    manifest = generate_corpus(tmp / "corpus", n=96, seed=2, n_speakers=9)
    config = tmp / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(manifest, tmp / "unused", epochs=1)))
    return tmp, manifest, config


def test_cv_end_to_end(cv_run, capsys):
    tmp, manifest, config = cv_run
    out = tmp / "cv"
    assert (
        main(
            ["cv", str(config), str(manifest), "--folds", "3", "--out-dir", str(out), "--json", str(tmp / "copy.json")]
        )
        == 0
    )
    printed = capsys.readouterr().out
    table = [line for line in printed.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| fold | seed | test speakers | n | text+audio WA | text+audio UA")
    assert [line.split(" | ")[0] for line in table[1:6]] == ["| 1", "| 2", "| 3", "| **mean**", "| std"]
    assert "| gold \\ predicted (text+audio) |" in printed

    results = json.loads((out / "cv_results.json").read_text())
    assert json.loads((tmp / "copy.json").read_text()) == results
    assert results["folds"] == ["1", "2", "3"] and results["seeds"] == [0] and results["folds_by"] == "3"
    assert results["labels"] == ["angry", "happy", "neutral", "sad"]
    assert [r["fold"] for r in results["runs"]] == ["1", "2", "3"]

    all_speakers, total = set(), 0
    for run in results["runs"]:
        rows = read_manifest(out / f"fold-{run['fold']}" / "manifest.jsonl")
        speakers = {s: {r["speaker"] for r in rows if r["split"] == s} for s in ("train", "valid", "test")}
        assert speakers["test"] and speakers["valid"] and speakers["train"]
        assert not speakers["test"] & speakers["train"] and not speakers["test"] & speakers["valid"]
        assert not speakers["valid"] & speakers["train"]
        assert sorted(speakers["test"]) == run["test_speakers"] and run["shared_speakers"] == []
        assert run["n"]["test"] == run["test"]["both"]["n"] == sum(r["split"] == "test" for r in rows)
        assert (out / f"fold-{run['fold']}" / "seed-0" / "model" / "config.json").is_file()
        all_speakers |= speakers["test"]
        total += run["n"]["test"]
    assert len(all_speakers) == 9 and total == 96  # every row is tested exactly once

    for cond in ("both", "text", "audio"):
        for metric in ("wa", "ua", "macro_f1"):
            values = [r["test"][cond][metric] for r in results["runs"]]
            assert results["mean"][cond][metric] == pytest.approx(np.mean(values))
            assert results["std"][cond][metric] == pytest.approx(np.std(values))
            assert results["fold_means"]["2"][cond][metric] == pytest.approx(values[1])
        confusion = np.array(results["confusion"][cond])
        assert confusion.shape == (4, 4) and confusion.sum() == results["mean"][cond]["n"] == 96


def test_cv_refuses_a_used_out_dir(cv_run):
    from mmemo.config import load_config
    from mmemo.cv import cross_validate
    from mmemo.errors import ConfigError

    tmp, manifest, config = cv_run
    (tmp / "used").mkdir()
    (tmp / "used" / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="already exists"):
        cross_validate(load_config(config), manifest, folds=3, out_dir=tmp / "used")
