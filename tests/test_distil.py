"""Distillation (`mmemo distil`, `mmemo cv --teacher`): the loss takes the teacher's probabilities of the condition
each sample is trained in, a student of a constant teacher learns that constant, a teacher that saw the student's
test speakers is refused, and each fold's student distils from the teacher of the same fold and split."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import build_tiny_whisper, tiny_config_dict

from mmemo.builders import build_recognizer, load_splits
from mmemo.cli import main
from mmemo.config import config_from_dict
from mmemo.data.manifest import read_manifest, write_manifest
from mmemo.distil import Distillation, check_teacher
from mmemo.errors import ConfigError, DataError
from mmemo.evaluate import collect_logits
from mmemo.inference import EmotionRecognizer
from mmemo.train import setup, train

CONSTANT = [0.55, 0.25, 0.15, 0.05]  # the constant teacher's probabilities, in its label order


@pytest.fixture(scope="module")
def tower(tmp_path_factory):
    """A tiny random Whisper checkpoint: frozen under a pooled head, its states are computed once and training is
    the head's alone (fast)."""
    return build_tiny_whisper(tmp_path_factory.mktemp("tower") / "whisper")


def _config_dict(manifest, out_dir, tower, **train):
    cfg = tiny_config_dict(manifest, out_dir, threads=1, **train)  # tiny ops: one thread is faster on a busy machine
    cfg["model"] = {
        **cfg["model"],
        "audio_config": {},
        "audio_encoder": str(tower),
        "freeze_audio_layers": -1,
        "audio_head": "pooled",
        "pooled_layers": [1, 2],
    }
    cfg["data"]["max_audio_seconds"] = 2.0
    return cfg


def _config(manifest, out_dir, tower, **train):
    return config_from_dict(_config_dict(manifest, out_dir, tower, **train))


@pytest.fixture(scope="module")
def constant_teacher(synth_corpus, tower, tmp_path_factory):
    """A model folder whose logits are log(CONSTANT) for any input (classifier output weights zero), inside a run
    folder whose config.yaml trained on the corpus's own splits."""
    run = tmp_path_factory.mktemp("teacher") / "run"
    cfg = _config(synth_corpus, run, tower)
    torch.manual_seed(0)
    recognizer = build_recognizer(cfg.model, load_splits(cfg), torch.device("cpu"))
    out = recognizer.model.classifier[-1]
    with torch.no_grad():
        out.weight.zero_()
        out.bias.copy_(torch.log(torch.tensor(CONSTANT)))
    recognizer.save_pretrained(run / "model")
    cfg.save(run / "config.yaml")
    return run / "model", recognizer.labels


def test_the_loss_mixes_gold_labels_with_the_teachers_probabilities_of_each_samples_condition():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(3, 3, 4)).astype(np.float32)  # rows a, b, c × (both, text, audio) × labels
    table[2, 1] = np.nan  # row c has no text
    distillation = Distillation(["a", "b", "c"], table, temperature=2.0, weight=0.3)
    student = torch.randn(3, 4, requires_grad=True)
    batch = {"ids": ["c", "a", "b"], "labels": torch.tensor([1, 0, 3])}
    keep_text, keep_audio = torch.tensor([False, True, True]), torch.tensor([True, False, True])
    loss = distillation.loss(student, batch, keep_text, keep_audio, smoothing=0.0)
    # c: audio alone, a: text alone, b: both
    teacher = torch.from_numpy(np.stack([table[2, 2], table[0, 1], table[1, 0]]))
    p = torch.softmax(teacher / 2, -1)
    kl = (p * (torch.log(p) - torch.log_softmax(student / 2, -1))).sum(-1).mean()
    expected = 0.7 * F.cross_entropy(student, batch["labels"]) + 0.3 * 4 * kl
    torch.testing.assert_close(loss, expected)
    loss.backward()  # and it reaches the student
    assert student.grad.abs().sum() > 0
    with pytest.raises(DataError, match="no logits for row 'd'"):
        distillation.loss(student, {**batch, "ids": ["a", "b", "d"]}, keep_text, keep_audio, 0.0)


@pytest.mark.slow
def test_a_student_of_a_constant_teacher_learns_the_constant_in_every_condition(
    synth_corpus, tower, constant_teacher, tmp_path
):
    teacher, labels = constant_teacher
    cfg = _config(synth_corpus, tmp_path / "student", tower, epochs=2, lr=1e-2, encoder_lr=1e-2, warmup_ratio=0.0)
    cfg.data.batch_size = 2  # the best epoch by validation UA is the first (a constant has chance UA): many steps
    cfg.train.modality_dropout = {"name": "all_subsets"}
    cfg.train.teacher, cfg.train.distil_weight, cfg.train.distil_temperature = str(teacher), 1.0, 1.0
    run = setup(cfg)
    # the teacher's logits: every row, every condition it has, the constant
    torch.testing.assert_close(
        torch.softmax(run.distillation.logits, -1), torch.tensor(CONSTANT).expand(len(run.distillation.index), 3, 4)
    )
    result = train(cfg)
    student = EmotionRecognizer.from_pretrained(result["model_dir"])
    logits = collect_logits(student.model, run.loaders["test"], torch.device("cpu"))
    expected = torch.tensor([CONSTANT[labels.index(label)] for label in student.labels])
    for condition, (condition_logits, _, _) in logits.items():
        probabilities = torch.softmax(condition_logits, -1)  # the raw model, before calibration's temperature
        # on average and in the worst row (the pooled token's direct read-out carries each clip's own states until
        # it has unlearnt them); a student of the gold labels is 0.3 away (the test rows are balanced)
        assert (probabilities.mean(0) - expected).abs().max() < 0.025, condition
        assert (probabilities - expected).abs().max() < 0.06, condition
    # the gold labels alone teach something else: the test rows are balanced, the constant is not
    cfg.train.distil_weight, cfg.train.output_dir = 0.0, str(tmp_path / "labels")
    gold = EmotionRecognizer.from_pretrained(train(cfg)["model_dir"])
    both = torch.softmax(collect_logits(gold.model, run.loaders["test"], torch.device("cpu"))["both"].logits, -1)
    assert (both.mean(0) - expected).abs().max() > 0.15


def test_a_teacher_that_trained_on_the_students_test_speakers_is_refused(
    synth_corpus, tower, constant_teacher, tmp_path
):
    teacher, _ = constant_teacher
    cfg = _config(synth_corpus, tmp_path / "student", tower)
    splits = load_splits(cfg)
    check_teacher(teacher, splits)  # trained on the same train/valid split: fine
    swapped = {"train": splits["train"], "valid": splits["valid"], "test": splits["train"][:3]}
    with pytest.raises(DataError, match=r"trained on 3 of the student's test rows .* carry the test set"):
        check_teacher(teacher, swapped)
    stranger = [{**row, "id": f"new-{row['id']}"} for row in splits["train"][:2]]  # new rows, a training speaker
    with pytest.raises(DataError, match=r"trained on test speakers \["):
        check_teacher(teacher, {**splits, "test": stranger})
    with pytest.warns(UserWarning, match="nothing shows which speakers it trained on"):
        check_teacher(tmp_path / "nowhere" / "model", splits)


def test_bad_distillation_settings_are_config_errors(synth_corpus, tower, constant_teacher, tmp_path):
    teacher, _ = constant_teacher
    cfg = _config(synth_corpus, tmp_path / "student", tower)
    cfg.train.teacher = str(tmp_path / "missing")
    with pytest.raises(ConfigError, match=r"train.teacher: .*missing is not a folder"):
        setup(cfg)
    for key, value, message in [  # checked as the config loads
        ("distil_temperature", 0.0, r"train.distil_temperature must be > 0, got 0.0"),
        ("distil_weight", 1.5, r"train.distil_weight must be in \[0, 1\], got 1.5"),
    ]:
        raw = _config_dict(synth_corpus, tmp_path / "student", tower)
        raw["train"].update(teacher=str(teacher), **{key: value})
        with pytest.raises(ConfigError, match=message):
            config_from_dict(raw)


@pytest.mark.slow
def test_each_folds_student_distils_from_the_same_folds_teacher_on_the_same_split(
    synth_corpus, tower, tmp_path, capsys, monkeypatch
):
    config = tmp_path / "tiny.yaml"
    cfg = _config_dict(synth_corpus, tmp_path / "unused", tower, epochs=1)
    cfg["data"]["cache_dir"] = str(tmp_path / "cache")  # the tower's states once for all folds and both runs
    config.write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)  # folders given relative to the working directory, as people type them
    assert main(["cv", str(config), str(synth_corpus), "--folds", "3", "--out-dir", "teacher"]) == 0
    out = tmp_path / "student"
    code = main(["cv", str(config), str(synth_corpus), "--folds", "3", "--out-dir", "student", "--teacher", "teacher", "train.distil_weight=0.7"])  # fmt: skip
    assert code == 0
    results = yaml.safe_load((out / "cv_results.json").read_text())
    assert [run["fold"] for run in results["runs"]] == ["1", "2", "3"]
    for run in results["runs"]:
        fold = run["fold"]
        assert run["teacher"] == str(tmp_path / "teacher" / f"fold-{fold}" / "seed-0" / "model")
        student_cfg = yaml.safe_load((out / f"fold-{fold}" / "seed-0" / "config.yaml").read_text())
        assert student_cfg["train"]["teacher"] == run["teacher"] and student_cfg["train"]["distil_weight"] == 0.7
        split = {r["id"]: r["split"] for r in read_manifest(out / f"fold-{fold}" / "manifest.jsonl")}
        theirs = {r["id"]: r["split"] for r in read_manifest(tmp_path / "teacher" / f"fold-{fold}" / "manifest.jsonl")}
        assert split == theirs and "test" in split.values()
    # a teacher fold split otherwise (here: one test row of fold 2 moved to train) is refused before anything trains
    manifest = tmp_path / "teacher" / "fold-2" / "manifest.jsonl"
    rows = read_manifest(manifest)
    moved = next(i for i, r in enumerate(rows) if r["split"] == "test")
    rows[moved]["split"] = "train"
    write_manifest(rows, manifest)
    capsys.readouterr()
    code = main(["cv", str(config), str(synth_corpus), "--folds", "3", "--out-dir", "again", "--teacher", "teacher"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "fold 2 of teacher was not split like this fold: 1 row(s) differ" in err
    assert not (tmp_path / "again").exists()
    assert math.isfinite(results["mean"]["audio"]["ua"])


@pytest.mark.slow
def test_mmemo_distil_trains_an_ordinary_model_folder_that_names_its_teacher(
    synth_corpus, tower, constant_teacher, tmp_path, monkeypatch
):
    teacher, _ = constant_teacher
    config = tmp_path / "student.yaml"
    config.write_text(yaml.safe_dump(_config_dict(synth_corpus, tmp_path / "unused", tower, epochs=1)))
    monkeypatch.chdir(teacher.parent.parent)  # the teacher given relative to the working directory
    out = tmp_path / "student"
    assert main(["distil", "run/model", str(config), f"train.output_dir={out}", "train.distil_weight=0.9"]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())["train"]
    assert saved["teacher"] == str(teacher) and saved["distil_weight"] == 0.9  # absolute: rerunnable from anywhere
    student = EmotionRecognizer.from_pretrained(out / "model")
    clip = np.random.default_rng(0).normal(0, 0.1, 24000).astype(np.float32)
    prediction = student.predict(text="what a day", audio=clip, sampling_rate=16000)
    assert set(prediction.per_modality) == {"text", "audio"} and prediction.label in student.labels
