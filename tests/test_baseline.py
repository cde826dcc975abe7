"""`mmemo baseline` on the synthetic corpus: runs, is deterministic, beats chance, and its CLI prints the table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmemo.baseline import out_of_fold_probabilities, run_baseline
from mmemo.cli import main
from mmemo.cv import format_corpus_table, write_results
from mmemo.data.manifest import read_manifest, write_manifest


@pytest.fixture(scope="module")
def results(synth_corpus, cache_dir):
    return run_baseline(synth_corpus, folds=4, cache_dir=cache_dir, n_jobs=1)


@pytest.mark.slow
def test_baseline_scores_every_fold_and_beats_chance(results):
    assert results["folds"] == ["1", "2", "3", "4"] and len(results["runs"]) == 4
    assert sum(r["n"]["test"] for r in results["runs"]) == 240  # each row tested once
    # the synthetic audio carries arousal (2 of 4 classes apart) plus a valence hint: chance is 0.25
    assert results["mean"]["audio"]["ua"] > 0.5
    assert results["mean"]["both"]["ua"] > results["mean"]["text"]["ua"]
    assert all(not r["shared_speakers"] for r in results["runs"])


@pytest.mark.slow
def test_baseline_is_deterministic(results, synth_corpus, cache_dir, tmp_path):
    # functionals themselves are checked for determinism in test_acoustic; this reruns the folds and models
    again = run_baseline(synth_corpus, folds=4, cache_dir=cache_dir, n_jobs=1)
    first, second = ({**r, "seconds": 0} for r in (results, again))
    assert (
        write_results(first, tmp_path / "a.json").read_text() == write_results(second, tmp_path / "b.json").read_text()
    )


@pytest.mark.slow
def test_cli_prints_json_writes_it_and_shows_the_table_on_stderr(results, synth_corpus, cache_dir, tmp_path, capsys):
    out = tmp_path / "baseline.json"
    args = ["--folds", "4", "--cache-dir", str(cache_dir), "--jobs", "1", "--json", "-o", str(out)]
    status = main(["baseline", str(synth_corpus), *args])  # --jobs 1: worker start-up (torch import) is slow
    printed = capsys.readouterr()
    assert status == 0
    assert "| **mean** |" in printed.err and "audio-only UA" in printed.err and "baseline time:" in printed.err
    saved = json.loads(out.read_text())
    assert json.loads(printed.out) == saved  # --json: stdout is the one JSON object -o writes
    assert saved["folds_by"] == "4" and len(saved["runs"]) == 4
    assert saved["mean"] == json.loads(write_results(results, tmp_path / "api.json").read_text())["mean"]


@pytest.mark.slow
def test_cli_speaker_norm_on_the_test_split(synth_corpus, cache_dir, capsys):
    args = ["--split", "test", "--speaker-norm", "--cache-dir", str(cache_dir), "--jobs", "1"]
    status = main(["baseline", str(synth_corpus), *args])
    printed = capsys.readouterr().out
    assert status == 0
    assert "speaker-normalised" in printed and "| test | 0 |" in printed


def test_folds_and_split_together_are_refused(synth_corpus, capsys):
    assert main(["baseline", str(synth_corpus), "--folds", "4", "--split", "test"]) == 2
    assert "not both" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("condition", ["both", "audio"])
def test_out_of_fold_probabilities_are_the_fold_models_predictions(results, synth_corpus, cache_dir, condition):
    # each row scored by the model of the fold that tests it: argmax reproduces run_baseline's confusion matrix
    rows = read_manifest(synth_corpus)
    labels, probs = out_of_fold_probabilities(rows, folds=4, condition=condition, cache_dir=cache_dir, n_jobs=1)
    assert labels == results["labels"] and probs.shape == (240, len(labels))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    confusion = np.zeros((len(labels), len(labels)), dtype=int)
    np.add.at(confusion, ([labels.index(r["label"]) for r in rows], probs.argmax(axis=1)), 1)
    assert confusion.tolist() == results["confusion"][condition]


@pytest.fixture(scope="module")
def two_corpora(synth_corpus, tmp_path_factory):
    """The corpus as two corpora in one manifest's `corpus` column (each with train, valid and test speakers)."""
    in_a = {"f00", "m01", "f02", "m03", "f08", "f10"}
    rows = [{**r, "corpus": "A" if r["speaker"] in in_a else "B"} for r in read_manifest(synth_corpus)]
    return write_manifest(rows, tmp_path_factory.mktemp("pooled") / "pooled.jsonl")


@pytest.mark.slow
def test_cli_leaves_one_corpus_out(two_corpora, cache_dir, capsys, tmp_path):
    out = tmp_path / "loco.json"
    args = ["--folds", "corpus", "--cache-dir", str(cache_dir), "--jobs", "1", "-o", str(out)]
    assert main(["baseline", str(two_corpora), *args]) == 0
    printed = capsys.readouterr().out
    assert "| held-out corpus | seed | n |" in printed and "per corpus" not in printed
    saved = json.loads(out.read_text())
    rows = read_manifest(two_corpora)
    assert saved["folds"] == ["A", "B"] and saved["corpora"] == ["A", "B"]
    for run in saved["runs"]:
        assert run["held_out_corpus"] == run["fold"] and "test_speakers" not in run
        assert run["n"]["test"] == sum(r["corpus"] == run["fold"] for r in rows)
        # trained on the other corpus's every row: its train, valid and test speakers
        assert run["n"]["train"] + run["n"]["valid"] == sum(r["corpus"] != run["fold"] for r in rows)
        assert run["test_by_corpus"] == {run["fold"]: run["test"]}
    assert saved["mean"]["audio"]["ua"] > 0.4  # the held-out corpus's speakers are unseen; arousal still carries


@pytest.mark.slow
def test_pooled_rows_get_a_per_corpus_table_on_speaker_folds(two_corpora, results, cache_dir, capsys):
    rows = read_manifest(two_corpora)
    pooled = run_baseline(rows=rows, folds=4, cache_dir=cache_dir, n_jobs=1)
    # the same folds and models as on the plain manifest: the corpus column only adds the per-corpus scores
    assert pooled["mean"] == results["mean"]
    assert set(pooled["corpus_means"]) == {"A", "B"}
    for run in pooled["runs"]:
        for condition in ("both", "audio", "text"):
            parts = run["test_by_corpus"].values()
            assert sum(p[condition]["n"] for p in parts) == run["test"][condition]["n"]
            correct = sum(p[condition]["wa"] * p[condition]["n"] for p in parts)
            assert correct == pytest.approx(run["test"][condition]["wa"] * run["test"][condition]["n"])
    assert pooled["corpus_means"]["A"]["both"]["n"] == sum(r["corpus"] == "A" for r in rows)
    table = format_corpus_table(pooled)
    assert table.splitlines()[2].startswith(f"| A | {pooled['corpus_means']['A']['both']['n']} | ")
