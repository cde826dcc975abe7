"""WA, UA and F1 on hand-counted examples; the score table; mean and spread over runs."""

import math

import pytest

from mmemo.metrics import classification_metrics, format_table, mean_and_std


def test_ua_weighs_every_class_alike_where_wa_weighs_every_row():
    # 8 rows of class 0 (7 right), 2 of class 1 (none right): WA 7/10, UA (7/8 + 0/2) / 2.
    gold = [0] * 8 + [1] * 2
    pred = [0] * 7 + [1] + [0, 0]
    m = classification_metrics(gold, pred, num_labels=3)
    assert m["wa"] == pytest.approx(0.7)
    assert m["ua"] == pytest.approx(7 / 16)
    assert m["n"] == 10
    assert m["confusion"] == [[7, 1, 0], [2, 0, 0], [0, 0, 0]]  # rows gold, columns predicted; class 2 unseen
    f1_0 = 2 * (7 / 9) * (7 / 8) / (7 / 9 + 7 / 8)
    assert m["macro_f1"] == pytest.approx(f1_0 / 2)  # classes absent from gold do not count
    assert m["weighted_f1"] == pytest.approx(0.8 * f1_0)


def test_no_rows_gives_nan_scores_and_an_empty_confusion_matrix():
    m = classification_metrics([], [], num_labels=2)
    assert m["n"] == 0 and math.isnan(m["ua"]) and m["confusion"] == [[0, 0], [0, 0]]


def test_table_lists_conditions_in_order_and_mean_and_std_are_per_key():
    perfect = classification_metrics([0, 1], [0, 1], 2)
    table = format_table({"audio": perfect, "both": perfect}, "## Test").splitlines()
    assert table[0] == "## Test"
    assert table[3].startswith("| text+audio | 2 | 1.000") and table[4].startswith("| audio-only |")
    mean, std = mean_and_std([{"ua": 0.5}, {"ua": 0.7}], ["ua"])
    assert mean["ua"] == pytest.approx(0.6) and std["ua"] == pytest.approx(0.1)
