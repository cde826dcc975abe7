"""Temperature scaling: the fit recovers a known temperature, and training's temperature is saved, loaded and applied."""

import json

import numpy as np
import pytest
import torch

from mmemo.calibration import calibrate, expected_calibration_error, fit_temperature
from mmemo.evaluate import collect_logits
from mmemo.inference import EmotionRecognizer

RATE = 16000


def test_fit_temperature_recovers_a_known_temperature_and_lowers_ece():
    g = torch.Generator().manual_seed(0)
    true_logits = torch.randn(6000, 4, generator=g) * 2.0
    labels = torch.multinomial(torch.softmax(true_logits, -1), 1, generator=g).squeeze(1)
    for temperature in (3.0, 0.5):  # over- and under-confident
        logits = true_logits * temperature
        fitted = fit_temperature(logits, labels)
        assert fitted == pytest.approx(temperature, rel=0.08)
        before = expected_calibration_error(torch.softmax(logits, -1), labels)
        after = expected_calibration_error(torch.softmax(logits / fitted, -1), labels)
        assert after < before / 2 and after < 0.03, (before, after)
    assert fit_temperature(torch.zeros(3, 4), torch.full((3,), -100)) == 1.0
    separable = torch.eye(4).repeat(10, 1) * 50  # always right and sure: T stays finite
    assert 0 < fit_temperature(separable, torch.arange(4).repeat(10)) <= 20
    calibrated = expected_calibration_error(np.array([[0.8, 0.2]] * 10), np.array([0] * 8 + [1] * 2))
    assert calibrated == pytest.approx(0.0, abs=1e-6)
    assert expected_calibration_error(np.array([[0.9, 0.1]] * 10), np.array([0] * 5 + [1] * 5)) == pytest.approx(0.4)


def test_temperature_is_fitted_saved_loaded_and_applied(trained_run, rec, rows, tmp_path):
    from torch.utils.data import DataLoader

    from mmemo.data.dataset import BucketBatchSampler, EmotionDataset

    valid = [r for r in rows if r["split"] == "valid"]
    label_to_id = {label: i for i, label in enumerate(rec.labels)}
    dataset = EmotionDataset(valid, label_to_id, RATE, max_seconds=0)
    loader = DataLoader(
        dataset, batch_sampler=BucketBatchSampler(dataset.durations(), 16, shuffle=False), collate_fn=rec.collator
    )
    by_condition = collect_logits(rec.model, loader, rec.device)
    logits, labels, ids = by_condition["both"]
    assert sorted(ids) == sorted(r["id"] for r in valid)
    assert logits.shape == (len(valid), 4)
    assert sorted(labels.tolist()) == sorted(label_to_id[r["label"]] for r in valid)
    text_logits = by_condition["text"].logits
    assert text_logits.shape == logits.shape and not torch.allclose(text_logits, logits)
    nll = torch.nn.functional.cross_entropy
    copy = EmotionRecognizer.from_pretrained(trained_run["model_dir"])
    report = calibrate(copy, logits, labels)
    assert copy.temperature == report["temperature"] and report["temperature"] > 0
    assert nll(logits / report["temperature"], labels) <= nll(logits, labels) + 1e-6
    copy.temperature = 2.0
    copy.save_pretrained(tmp_path / "calibrated")
    assert json.loads((tmp_path / "calibrated" / "config.json").read_text())["temperature"] == 2.0
    loaded = EmotionRecognizer.from_pretrained(tmp_path / "calibrated")
    assert loaded.temperature == 2.0
    trained = rec.temperature  # training calibrated the model on its validation split
    assert trained == pytest.approx(trained_run["calibration"]["temperature"]) and trained > 0
    p1 = np.array(list(rec.predict(text="What a lovely surprise.").probabilities.values()))
    p2 = np.array(list(loaded.predict(text="What a lovely surprise.").probabilities.values()))
    expected = p1 ** (trained / 2.0)  # softmax(z / 2) ∝ softmax(z / T) ** (T / 2)
    assert np.allclose(p2, expected / expected.sum(), atol=1e-5)


def test_temperature_at_its_bound_is_warned_with_a_reason():
    import warnings

    labels = torch.arange(4).repeat(10)
    one_class = torch.tensor([[5.0, 0.0, 0.0, 0.0]]).repeat(40, 1)  # sure of class 0 on every row, right on 1/4
    with pytest.warns(
        UserWarning, match=r"upper bound T = (19\.99\d|20\.000).*predicts one class \(index 0\).*near chance"
    ):
        assert fit_temperature(one_class, labels) == pytest.approx(20.0, rel=1e-3)
    right = torch.eye(4).repeat(2, 1)  # 8 rows, all right with a small margin: sharper always looks better
    with pytest.warns(UserWarning, match=r"lower bound T = 0\.05\d.*only 8 labelled rows.*right on every row"):
        assert fit_temperature(right, torch.arange(4).repeat(2)) == pytest.approx(0.05, rel=1e-3)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2000, 4, generator=g) * 2.0
    noisy = torch.multinomial(torch.softmax(logits, -1), 1, generator=g).squeeze(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an interior optimum: no warning
        assert 0.5 < fit_temperature(logits, noisy) < 2.0
