"""Cross-validation: fold assignment, a real 3-fold run of a tiny model through `mmemo cv`, and leave one corpus
out on two corpora pooled through a label map."""

import json

import numpy as np
import pytest
import yaml
from conftest import tiny_config_dict

from mmemo.cli import main
from mmemo.cv import (
    assign_folds,
    corpus_splits,
    corpus_summary,
    fold_order,
    fold_plan,
    fold_splits,
    format_corpus_table,
    format_fold_table,
)
from mmemo.data.manifest import read_manifest, write_manifest
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


def test_corpus_folds_leave_one_corpus_out():
    rows = [
        {
            "id": f"{corpus}/{split}{i}",
            "speaker": f"{corpus}/s{i}",
            "fold": None,
            "label": "a",
            "split": split,
            "corpus": corpus,
        }
        for corpus in ("C", "A", "B")
        for split in ("train", "valid", "test")
        for i in range(2)
    ]
    fold_of = assign_folds(rows, "corpus")
    assert fold_of == {r["id"]: r["corpus"] for r in rows}
    plans = fold_plan(rows, "corpus")
    assert [(fold, valid) for fold, valid, _ in plans] == [("A", "B+C valid"), ("B", "A+C valid"), ("C", "A+B valid")]
    split_of = {r["id"]: r["split"] for r in plans[0][2]}
    assert split_of == {r["id"]: r["split"] for r in corpus_splits(rows, "A")}
    for r in rows:  # A: all test; B and C: own valid stays valid, their train and test rows train
        expected = "test" if r["corpus"] == "A" else "valid" if r["split"] == "valid" else "train"
        assert split_of[r["id"]] == expected, r
    assert len(assign_folds([r for r in rows if r["corpus"] != "C"], "corpus")) == 12  # two corpora are enough

    no_valid = [r for r in rows if not (r["corpus"] == "B" and r["split"] == "valid")]
    with pytest.raises(DataError, match=r"held-out corpus 'C': the training corpora \(B\) have no `valid`"):
        fold_plan([r for r in no_valid if r["corpus"] != "A"], "corpus")
    with pytest.raises(DataError, match="data.manifests, or give the manifest a `corpus` column"):
        assign_folds([{**r, "corpus": None} for r in rows], "corpus")
    with pytest.raises(DataError, match="at least 2"):
        assign_folds([r for r in rows if r["corpus"] == "A"], "corpus")


def _scores(wa, n):
    return {
        c: {"wa": wa, "ua": wa / 2, "macro_f1": wa / 4, "weighted_f1": wa, "n": n} for c in ("both", "text", "audio")
    }


def test_corpus_table_is_the_mean_and_std_over_the_runs_that_tested_each_corpus():
    # speaker folds over two pooled corpora: fold 1 tests both, fold 2 only A, fold 3 only B
    runs = [
        {"fold": "1", "test_by_corpus": {"A": _scores(0.5, 10), "B": _scores(0.7, 4)}},
        {"fold": "2", "test_by_corpus": {"A": _scores(0.9, 6)}},
        {"fold": "3", "test_by_corpus": {"B": _scores(0.3, 8)}},
    ]
    summary = corpus_summary(runs)
    assert summary["corpus_means"]["A"]["both"]["wa"] == pytest.approx(0.7)
    assert summary["corpus_std"]["A"]["both"]["wa"] == pytest.approx(0.2)
    assert summary["corpus_means"]["B"]["audio"]["ua"] == pytest.approx(0.25)
    assert summary["corpus_means"]["A"]["both"]["n"] == 16 and summary["corpus_means"]["B"]["text"]["n"] == 12
    assert corpus_summary(runs[1:2]) == {}  # one corpus tested: nothing per corpus

    table = format_corpus_table({"folds_by": "speaker", "seeds": [0], **summary}).splitlines()
    assert table[0].startswith("| corpus | n | text+audio WA | text+audio UA | text+audio F1 | text-only WA")
    assert table[2].startswith("| A | 16 | 0.700 ± 0.200 | 0.350 ± 0.100 | 0.175 ± 0.050 |")
    assert table[3].startswith("| B | 12 | 0.500 ± 0.200 |")
    # n is per seed; with corpus folds the fold table already is the per-corpus table
    assert "| A | 8 |" in format_corpus_table({"folds_by": "3", "seeds": [0, 1], **summary})
    assert format_corpus_table({"folds_by": "corpus", "seeds": [0], **summary}) == ""
    assert format_corpus_table({"folds_by": "3", "seeds": [0]}) == ""


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory):
    from mmemo.data.synthetic import generate_corpus

    tmp = tmp_path_factory.mktemp("cv")
    manifest = generate_corpus(tmp / "corpus", n=96, seed=2, n_speakers=9)
    config = tmp / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(manifest, tmp / "unused", epochs=1)))
    return tmp, manifest, config


@pytest.mark.slow
def test_cv_end_to_end(cv_run, capsys):
    tmp, manifest, config = cv_run
    out = tmp / "cv"
    assert (
        main(["cv", str(config), str(manifest), "--folds", "3", "--out-dir", str(out), "-o", str(tmp / "copy.json")])
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
        run_dir = out / f"fold-{run['fold']}" / "seed-0"
        assert (run_dir / "model" / "config.json").is_file()
        assert not (run_dir / "checkpoints").exists()  # a cv run is never resumed: one copy of its weights stays
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


@pytest.mark.slow
def test_cv_refuses_a_used_out_dir(cv_run):
    from mmemo.config import load_config
    from mmemo.cv import cross_validate
    from mmemo.errors import ConfigError

    tmp, manifest, config = cv_run
    (tmp / "used").mkdir()
    (tmp / "used" / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="already exists"):
        cross_validate(load_config(config), manifest, folds=3, out_dir=tmp / "used")


def _two_corpora(manifest, folder):
    """The synthetic corpus cut by speaker into corpora A and B (each with train, valid and test speakers); B
    spells "angry" as "anger". Returns the paths and each corpus's row count."""
    rows = read_manifest(manifest)
    in_a = {"f00", "m01", "f02", "m05", "m07"}
    a = [r for r in rows if r["speaker"] in in_a]
    b = [{**r, "label": "anger" if r["label"] == "angry" else r["label"]} for r in rows if r["speaker"] not in in_a]
    return write_manifest(a, folder / "A.jsonl"), write_manifest(b, folder / "B.jsonl"), {"A": len(a), "B": len(b)}


@pytest.mark.slow
def test_cv_leaves_one_corpus_out(cv_run, capsys):
    tmp, manifest, _ = cv_run
    path_a, path_b, count = _two_corpora(manifest, tmp)
    cfg = tiny_config_dict("", tmp / "unused", epochs=1)
    cfg["data"]["manifests"] = [
        {"path": str(path_a), "name": "A"},
        {"path": str(path_b), "name": "B", "label_map": {"anger": "angry"}},
    ]
    config = tmp / "pooled.yaml"
    config.write_text(yaml.safe_dump(cfg))
    out = tmp / "loco"
    status = main(["cv", str(config), "--folds", "corpus", "--out-dir", str(out), "train.seed=1", "--baseline"])
    printed, baseline = capsys.readouterr().out.split("classical baseline")
    assert status == 0

    results = json.loads((out / "cv_results.json").read_text())
    assert results["folds"] == ["A", "B"] and results["folds_by"] == "corpus" and results["corpora"] == ["A", "B"]
    assert results["labels"] == ["angry", "happy", "neutral", "sad"]  # B's "anger" mapped into the shared set
    for run in results["runs"]:
        held_out, other = run["fold"], {"A": "B", "B": "A"}[run["fold"]]
        assert run["held_out_corpus"] == held_out and "test_speakers" not in run
        assert run["n"]["test"] == run["test"]["both"]["n"] == count[held_out]
        assert run["test_by_corpus"] == {held_out: run["test"]}
        assert run["valid_fold"] == f"{other} valid"
        # each corpus's own rows, labels as in its manifest (the run maps them), only the split rewritten
        fold_dir = out / f"fold-{held_out}"
        rows = {name: read_manifest(fold_dir / f"{name}.jsonl") for name in ("A", "B")}
        assert {r["split"] for r in rows[held_out]} == {"test"}
        assert {r["split"] for r in rows[other]} == {"train", "valid"}
        assert "anger" in {r["label"] for r in rows["B"]} and "angry" not in {r["label"] for r in rows["B"]}
        assert [r["id"] for r in rows["A"]] == [r["id"] for r in read_manifest(path_a)]  # raw ids, not prefixed
        run_cfg = yaml.safe_load((fold_dir / "seed-0" / "config.yaml").read_text())
        assert run_cfg["data"]["manifest"] == ""
        assert [(e["name"], e["label_map"]) for e in run_cfg["data"]["manifests"]] == [
            ("A", {}),
            ("B", {"anger": "angry"}),
        ]
    assert set(results["corpus_means"]) == {"A", "B"}
    assert results["corpus_means"]["B"]["both"]["wa"] == results["fold_means"]["B"]["both"]["wa"]

    table = format_fold_table(results)
    assert table.splitlines()[0].startswith("| held-out corpus | seed | n | text+audio WA |")
    assert [line.split(" | ")[:3] for line in table.splitlines()[2:4]] == [
        ["| A", "0", str(count["A"])],
        ["| B", "0", str(count["B"])],
    ]
    assert table in printed and "per corpus" not in printed  # the fold table is the per-corpus table
    # the classical floor on the same leave-one-corpus-out folds
    baseline_rows = [line.split(" | ")[:3] for line in baseline.splitlines() if line.startswith("| ")]
    assert baseline_rows[0] == ["| held-out corpus", "seed", "n"]
    assert baseline_rows[1:3] == [["| A", "0", str(count["A"])], ["| B", "0", str(count["B"])]]


@pytest.mark.slow
def test_cv_takes_an_equals_word_as_an_override_not_a_manifest(cv_run, capsys):
    _, _, config = cv_run
    assert main(["cv", str(config), "epochs=1"]) == 2
    assert "override 'epochs=1' must look like section.key=value" in capsys.readouterr().err
