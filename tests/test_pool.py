"""Several corpora in one run: label maps, config checks, corpus-balanced sampling and per-corpus scores."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_config_dict

from mmemo.config import DataConfig, config_from_dict, load_config
from mmemo.data.dataset import BucketBatchSampler, padding_ratio
from mmemo.data.manifest import read_manifest, write_manifest
from mmemo.data.pool import Corpus, corpora_of, corpus_shares, read_corpora, relabel
from mmemo.errors import ConfigError, DataError
from mmemo.evaluate import ConditionLogits, monitored_ua, score_by_corpus


def _row(i, label, speaker="s1", split="train"):
    return {"id": f"u{i}", "audio": "", "text": f"text {i}", "label": label, "speaker": speaker, "split": split}


def _rows(labels):
    """Rows as `read_manifest` returns them."""
    return [
        {**_row(i, label), "start": None, "end": None, "fold": None, "corpus": None} for i, label in enumerate(labels)
    ]


def test_label_map_renames_drops_and_keeps_the_rest():
    rows = _rows(["excited", "happy", "frustrated", "sad"])
    out = relabel(rows, Corpus("iemocap.jsonl", "iemocap", {"excited": "happy", "frustrated": None}))
    assert [r["label"] for r in out] == ["happy", "happy", "sad"]
    assert [r["id"] for r in out] == ["u0", "u1", "u3"]
    assert {r["corpus"] for r in out} == {"iemocap"}
    assert rows[0]["label"] == "excited"  # the input rows are not changed


def test_a_label_map_key_no_row_carries_names_the_corpus_and_the_label():
    rows = _rows(["excited", "happy"])
    with pytest.raises(ConfigError, match=r"corpus 'iemocap' \(iemocap.jsonl\).*'exited'.*did you mean 'excited'"):
        relabel(rows, Corpus("iemocap.jsonl", "iemocap", {"exited": "happy"}))


def test_a_map_that_drops_every_row_is_an_error():
    with pytest.raises(DataError, match="corpus 'x'.*drops every row"):
        relabel(_rows(["calm"]), Corpus("x.jsonl", "x", {"calm": None}))


def test_pooled_ids_and_speakers_are_prefixed_by_corpus(tmp_path):
    a = write_manifest([_row(0, "happy", "1"), _row(1, "sad", "2", "valid")], tmp_path / "a.jsonl")
    b = write_manifest([_row(0, "anger", "1"), _row(1, "sad", "2", "valid")], tmp_path / "b.jsonl")
    rows = read_corpora([Corpus(str(a), "a"), Corpus(str(b), "b", {"anger": "angry"})])
    assert [(r["id"], r["speaker"], r["label"], r["corpus"]) for r in rows] == [
        ("a/u0", "a/1", "happy", "a"),
        ("a/u1", "a/2", "sad", "a"),
        ("b/u0", "b/1", "angry", "b"),
        ("b/u1", "b/2", "sad", "b"),
    ]
    # one corpus: ids unchanged, named after the file (or its own corpus column)
    assert [r["id"] for r in read_corpora([Corpus(str(a), "a")])] == ["u0", "u1"]


def test_a_manifest_corpus_column_keeps_its_corpora_and_their_speakers_apart(tmp_path):
    rows = [{**_row(0, "happy", "1"), "corpus": "A"}, {**_row(1, "sad", "1"), "corpus": "B"}, _row(2, "sad", "2")]
    path = write_manifest(rows, tmp_path / "mixed.jsonl")
    lone = read_corpora(corpora_of(DataConfig(manifest=str(path))))
    assert [(r["id"], r["corpus"], r["speaker"]) for r in lone] == [
        ("u0", "A", "A/1"),  # speaker "1" of A and of B are two people
        ("u1", "B", "B/1"),
        ("u2", "mixed", "mixed/2"),  # a row without a corpus takes the file's name
    ]
    assert read_corpora([Corpus(str(path), "")]) == lone  # idempotent: already-prefixed speakers stay
    with pytest.warns(UserWarning, match=r"corpus 'm' .*`corpus` column \(A, B\) is replaced"):
        named = read_corpora([Corpus(str(path), "m")])
    assert {r["corpus"] for r in named} == {"m"} and {r["speaker"] for r in named} == {"1", "2"}


@pytest.mark.parametrize(
    "data, message",
    [
        ({"manifest": "a.jsonl", "manifests": [{"path": "b.jsonl"}]}, "not both"),
        ({"manifests": [{"name": "x"}]}, r"data.manifests\[0\]: `path`"),
        ({"manifests": [{"path": "a.jsonl", "label_mpa": {}}]}, "did you mean 'label_map'"),
        ({"manifests": [{"path": "a.jsonl", "label_map": {False: "neutral"}}]}, "quote such labels"),
        ({"manifests": [{"path": "a.jsonl", "weight": 0}]}, "positive number"),
        ({"manifests": [{"path": "a.jsonl", "weight": 2}]}, "only data.corpus_sampling: weighted uses"),
        ({"manifests": [{"path": "x/a.jsonl"}, {"path": "y/a.jsonl"}]}, r"\['a'\] are used twice"),
        ({"manifests": [{"path": "a.jsonl"}], "corpus_sampling": "balanced"}, "must be one of 'natural', 'equal'"),
        ({}, "data.manifest is empty"),
    ],
)
def test_bad_manifests_entries_are_named(data, message):
    with pytest.raises(ConfigError, match=message):
        corpora_of(DataConfig(**data))


def test_manifests_paths_follow_the_config_path_rule(tmp_path, monkeypatch):
    (tmp_path / "exp").mkdir()
    config = tmp_path / "exp" / "pool.yaml"
    entries = [{"path": "a.jsonl", "label_map": {"calm": "neutral"}}, {"path": "/abs/b.jsonl", "name": "bee"}]
    config.write_text(yaml.safe_dump({"data": {"manifests": entries}}))
    monkeypatch.chdir(tmp_path)
    corpora = corpora_of(load_config(config).data)
    assert corpora == [
        Corpus(str(tmp_path / "exp" / "a.jsonl"), "a", {"calm": "neutral"}),
        Corpus("/abs/b.jsonl", "bee"),
    ]
    overridden = load_config(config, ["data.manifests=[{path: c.jsonl}]"])
    assert corpora_of(overridden.data)[0].path == str(tmp_path / "c.jsonl")
    # an override of one form replaces the file's other form (a preset with data.manifest, pooled from the command line)
    assert load_config(config, ["data.manifest=d.jsonl"]).data.manifests == []
    pooled = load_config("emodb_cv", ["data.manifests=[a.jsonl, b.jsonl]"]).data
    assert pooled.manifest == "" and [c.path for c in corpora_of(pooled)] == [
        str(tmp_path / "a.jsonl"),
        str(tmp_path / "b.jsonl"),
    ]


def _sampler(groups, shares, seed=0, durations=None):
    durations = durations or [1.0 + (i % 7) * 0.5 for i in range(len(groups))]
    return BucketBatchSampler(durations, 8, shuffle=True, seed=seed, groups=groups, shares=shares)


def test_equal_sampling_gives_each_corpus_the_same_share_of_an_epoch():
    groups = [0] * 300 + [1] * 60  # a large and a small corpus
    sampler = _sampler(groups, [0.5, 0.5])
    drawn = [i for batch in sampler.batches() for i in batch]
    assert len(drawn) == 360  # the epoch keeps the training split's size
    assert Counter(groups[i % 360] for i in drawn) == {0: 180, 1: 180}
    assert len(set(drawn)) == 360  # a repeated clip's copies are distinct indices (own crop and augmentation)
    small = Counter(i % 360 for i in drawn if groups[i % 360] == 1)
    assert set(small.values()) == {3}  # the small corpus is repeated whole: 3 passes
    large = [i for i in drawn if groups[i % 360] == 0]
    assert len(set(large)) == 180 and max(large) < 360  # the large one is subsampled without repeats...
    sampler.set_epoch(1)
    assert {i for b in sampler.batches() for i in b if groups[i % 360] == 0} != set(large)  # ...afresh each epoch


def test_weighted_sampling_follows_the_weights_and_batches_stay_bucketed():
    rows = [{"corpus": "a"}] * 200 + [{"corpus": "b"}] * 200
    corpora = [Corpus("a.jsonl", "a", weight=3.0), Corpus("b.jsonl", "b", weight=1.0)]
    groups, shares = corpus_shares(rows, corpora, "weighted")
    assert shares == [0.75, 0.25]
    durations = [1.0 + (i * 37 % 100) / 25 for i in range(400)]
    sampler = _sampler(groups, shares, durations=durations)
    counts = Counter(groups[i % 400] for b in sampler.batches() for i in b)
    assert counts == {0: 300, 1: 100}
    natural = BucketBatchSampler(durations, 8, shuffle=True, seed=0)
    assert padding_ratio(sampler.batches(), durations) < 1.15
    assert padding_ratio(sampler.batches(), durations) == pytest.approx(
        padding_ratio(natural.batches(), durations), abs=0.05
    )


def test_shares_leave_out_a_corpus_without_training_rows():
    rows = [{"corpus": "a"}, {"corpus": "c"}]
    corpora = [Corpus("a", "a", weight=1.0), Corpus("b", "b", weight=5.0), Corpus("c", "c", weight=3.0)]
    assert corpus_shares(rows, corpora, "weighted") == ([0, 1], [0.25, 0.75])


def test_score_by_corpus_scores_each_corpus_on_its_own_rows():
    rows = [{"id": "a1", "corpus": "a"}, {"id": "a2", "corpus": "a"}, {"id": "b1", "corpus": "b"}]
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    labels = torch.tensor([0, 1, 1])
    both = ConditionLogits(logits, labels, ["a1", "a2", "b1"])
    text = ConditionLogits(logits[:1], labels[:1], ["a1"])
    by_corpus = score_by_corpus({"both": both, "text": text}, rows, 2)
    assert by_corpus["a"]["both"]["ua"] == 1.0 and by_corpus["a"]["both"]["n"] == 2
    assert by_corpus["b"]["both"]["wa"] == 0.0 and by_corpus["b"]["both"]["n"] == 1
    assert by_corpus["b"]["text"]["n"] == 0
    assert score_by_corpus({"both": both}, [{**r, "corpus": "a"} for r in rows], 2) == {}


def test_the_monitored_ua_can_be_the_mean_over_corpora():
    def ua(value, n=10):
        return {"both": {"ua": value, "n": n}}

    pooled, by_corpus = ua(0.9), {"big": ua(0.95), "small": ua(0.55), "textless": ua(float("nan"), n=0)}
    assert monitored_ua(pooled, by_corpus, "both") == 0.9
    assert monitored_ua(pooled, by_corpus, "both", "corpus_mean") == pytest.approx(0.75)
    assert monitored_ua(pooled, {}, "both", "corpus_mean") == 0.9  # one corpus: the pooled UA


@pytest.fixture(scope="module")
def two_corpora(synth_corpus, tmp_path_factory):
    """The synthetic corpus cut into two corpora (alternate rows); corpus b spells "angry" as "anger"."""
    folder = tmp_path_factory.mktemp("pool")
    rows = read_manifest(synth_corpus)
    a = write_manifest(rows[::2], folder / "a.jsonl")
    b = write_manifest(
        [{**r, "label": "anger" if r["label"] == "angry" else r["label"]} for r in rows[1::2]], folder / "b.jsonl"
    )
    return a, b, rows


def test_unknown_label_in_a_pooled_run_names_the_corpus(two_corpora, tmp_path):
    from mmemo.train import setup

    a, b, _ = two_corpora
    raw = tiny_config_dict("", tmp_path / "run")
    raw["data"] = {"manifests": [{"path": str(a)}, {"path": str(b)}]}
    raw["model"]["labels"] = ["angry", "happy", "neutral", "sad"]
    with pytest.raises(DataError, match=r"train split has labels \['anger'\] .*\['anger'\] in corpus 'b'.*label_map"):
        setup(config_from_dict(raw))


@pytest.mark.slow
def test_pooled_training_saves_the_maps_and_reports_per_corpus(two_corpora, tmp_path):
    from mmemo.evaluate import evaluate_manifest
    from mmemo.inference import EmotionRecognizer
    from mmemo.train import train

    a, b, rows = two_corpora
    raw = tiny_config_dict("", tmp_path / "run", epochs=3, monitor_average="corpus_mean")
    raw["data"] = {
        "manifests": [{"path": str(a)}, {"path": str(b), "label_map": {"anger": "angry"}}],
        "corpus_sampling": "equal",
        "batch_size": 16,
        "max_audio_seconds": 4.0,
    }
    config = tmp_path / "pool.yaml"
    config.write_text(yaml.safe_dump(raw))
    result = train(load_config(config))

    test_rows = [r for r in rows if r["split"] == "test"]
    by_corpus = result["test_by_corpus"]
    assert sorted(by_corpus) == ["a", "b"]
    assert by_corpus["a"]["both"]["n"] + by_corpus["b"]["both"]["n"] == len(test_rows) == result["test"]["both"]["n"]
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    corpus_mean = [(h["valid_a_both_ua"] + h["valid_b_both_ua"]) / 2 for h in history]
    assert result["best_epoch"] == 1 + corpus_mean.index(max(corpus_mean))  # picked by the mean of the corpora
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Test by corpus" in report and "| b |" in report
    saved = json.loads((result["model_dir"] / "config.json").read_text())
    assert saved["model"]["label_maps"] == {"b": {"anger": "angry"}}
    card = (result["model_dir"] / "README.md").read_text()
    assert "`anger` → `angry`" in card and "Per corpus (test split)" in card and "clips of 2 corpora" in card

    rec = EmotionRecognizer.from_pretrained(result["model_dir"])
    assert rec.labels == ["angry", "happy", "neutral", "sad"]  # the shared label set
    assert rec.predict(text=test_rows[0]["text"]).label in rec.labels

    pooled = evaluate_manifest(result["model_dir"], config, progress=False)
    assert pooled["both"]["ua"] == pytest.approx(result["test"]["both"]["ua"])
    assert pooled["by_corpus"]["b"]["both"]["ua"] == pytest.approx(by_corpus["b"]["both"]["ua"])
    with pytest.raises(DataError, match=r"\['anger'\].*pass --corpus with one of \['b'\]"):
        evaluate_manifest(result["model_dir"], b, progress=False)
    own = evaluate_manifest(result["model_dir"], b, corpus="b", progress=False)
    assert own["both"]["ua"] == pytest.approx(by_corpus["b"]["both"]["ua"])
    with pytest.raises(ConfigError, match="no label map by that name; it has b"):
        evaluate_manifest(result["model_dir"], a, corpus="a", progress=False)


def test_the_same_file_listed_twice_is_refused(tmp_path):
    path = write_manifest([_row(0, "happy")], tmp_path / "a.jsonl")
    for second in ({"path": str(path), "name": "again"}, {"path": str(tmp_path / "." / "a.jsonl")}):
        with pytest.raises(ConfigError, match=r"data.manifests\[0\] and data.manifests\[1\] are the same file"):
            corpora_of(DataConfig(manifests=[{"path": str(path)}, second]))


def test_a_map_key_without_a_close_label_still_ends_its_sentence():
    with pytest.raises(ConfigError, match=r"no row has that label\. Its labels are: happy, sad"):
        relabel(_rows(["happy", "sad"]), Corpus("x.jsonl", "x", {"bored": None}))


def test_repeated_clips_are_spread_over_batches():
    # A corpus repeated 5x under equal sampling: its copies share one duration, and sorted side by side they filled
    # batches with the same clip (38 % of the slots); each copy's own jitter spreads them.
    rng = torch.Generator().manual_seed(1)
    durations = (1.0 + 7.0 * torch.rand(3300, generator=rng)).tolist()
    groups = [0] * 3000 + [1] * 300
    sampler = BucketBatchSampler(durations, 16, shuffle=True, seed=0, groups=groups, shares=[0.5, 0.5])
    batches = sampler.batches()
    assert Counter(groups[i % 3300] for b in batches for i in b) == {0: 1650, 1: 1650}
    repeats = sum(len(b) - len({i % 3300 for i in b}) for b in batches)  # copies of one clip in one batch
    assert repeats < 0.15 * 3300
    assert padding_ratio(batches, durations) < 1.1


def test_each_copy_of_an_oversampled_clip_gets_its_own_crop_and_augmentation(tmp_path):
    import soundfile as sf

    from mmemo.data.augment import build_augmenter
    from mmemo.data.dataset import EmotionDataset

    rate = 16000
    wave = np.sin(np.linspace(0, 2000, 4 * rate)).astype(np.float32) * np.linspace(0.1, 1.0, 4 * rate, dtype=np.float32)
    sf.write(tmp_path / "long.wav", wave, rate)
    rows = [{**_row(i, "happy"), "audio": str(tmp_path / "long.wav")} for i in range(2)]
    dataset = EmotionDataset(
        rows, {"happy": 0}, rate, max_seconds=1.0, train=True, augment=build_augmenter({"gain_db": [-6, 6]})
    )
    first, copy = dataset[1], dataset[1 + len(rows)]  # clip 1 and its first extra copy (BucketBatchSampler.draw)
    assert first["id"] == copy["id"] == "u1" and len(first["audio"]) == len(copy["audio"]) == rate
    assert not np.allclose(first["audio"], copy["audio"])
    again = dataset[1 + len(rows)]
    assert np.array_equal(copy["audio"], again["audio"])  # deterministic per index, as a resume needs


def test_a_model_keeps_the_maps_its_data_was_read_with_and_scores_part_of_a_corpus(tmp_path):
    from mmemo.builders import build_recognizer, label_maps
    from mmemo.evaluate import evaluate_manifest

    raw = tiny_config_dict("", tmp_path / "run")
    raw["model"]["label_maps"] = {"b": {"anger": "angry", "calm": "neutral"}}  # a saved run config's, now stale
    raw["data"] = {"manifests": [{"path": "a.jsonl"}, {"path": "b.jsonl", "label_map": {"anger": "angry"}}]}
    cfg = config_from_dict(raw)
    cfg.model.labels = ["angry", "happy"]
    train = [_row(i, label) for i, label in enumerate(["angry", "happy"] * 4)]
    recognizer = build_recognizer(cfg.model, {"train": train}, torch.device("cpu"), label_maps(cfg))
    assert recognizer.config.label_maps == {"b": {"anger": "angry"}}
    recognizer.save_pretrained(tmp_path / "model")
    # corpus b's test speakers only: no "calm", no "anger" rows; the saved map still applies to what is there
    part = write_manifest([_row(0, "happy", split="test"), _row(1, "happy", split="test")], tmp_path / "b_test.jsonl")
    scores = evaluate_manifest(tmp_path / "model", part, corpus="b", device="cpu", progress=False)
    assert scores["both"]["n"] == 2
    with pytest.raises(ConfigError, match="it has b; a corpus whose labels were not mapped in training needs no"):
        evaluate_manifest(tmp_path / "model", part, corpus="a", device="cpu", progress=False)

    # a pooled config whose maps are not the model's: scored through the config's, with a warning naming the corpus
    a = write_manifest([_row(0, "happy", split="test"), _row(1, "angry", split="test")], tmp_path / "a.jsonl")
    b = write_manifest([_row(0, "happy", split="test"), _row(1, "anger", split="test")], tmp_path / "b.jsonl")
    config = tmp_path / "other_maps.yaml"
    config.write_text(
        yaml.safe_dump({"data": {"manifests": [{"path": str(a)}, {"path": str(b), "label_map": {"anger": None}}]}})
    )
    with pytest.warns(UserWarning, match=r"label maps of b differ from the ones the model was trained with"):
        scores = evaluate_manifest(tmp_path / "model", config, device="cpu", progress=False)
    assert scores["by_corpus"]["b"]["both"]["n"] == 1
