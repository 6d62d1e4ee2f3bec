"""Metrics of a test set whose truth holds one class (tester15 B): macro F1 averages the
classes present in the truth, kappa is not defined, and accuracy gets no chance verdict."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import f1_score

from segfew.metrics import (
    accuracy_summary,
    below_chance,
    chance_fields,
    chance_words,
    classification_metrics,
    metrics_from_confusion,
)

# the 11 G3 patients of tester15's case: 7 answered G2, 4 answered G3
ONE_TRUE = [1] * 11
ONE_PRED = [0] * 7 + [1] * 4
NAMES = ["G2", "G3"]


def _sk_macro_f1(yt: object, yp: object) -> float:
    present = sorted(set(np.asarray(yt).tolist()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(f1_score(yt, yp, labels=present, average="macro", zero_division=0))


def test_macro_f1_averages_the_classes_present_in_the_truth() -> None:
    m = classification_metrics(ONE_TRUE, ONE_PRED, None, NAMES, bootstrap=200)
    assert m["macro_f1"] == pytest.approx(_sk_macro_f1(ONE_TRUE, ONE_PRED))
    assert m["macro_f1"] == pytest.approx(8 / 15)  # G3's own F1: 2·4 / (2·4 + 7)
    assert m["macro_f1"] == pytest.approx(m["per_class"]["G3"]["f1"])
    lo, hi = m["ci"]["macro_f1"]
    assert lo <= m["macro_f1"] <= hi
    assert m["ci"]["macro_f1"] == m["ci"]["per_class"]["G3"]["f1"]


def test_a_class_predicted_but_absent_from_the_truth_is_not_averaged_in(
        rng: np.random.Generator) -> None:
    yt = rng.integers(0, 3, 30)  # classes 3 and 4 absent from the truth, 3 predicted
    yp = np.where(rng.random(30) < 0.6, yt, rng.integers(0, 4, 30))
    assert 3 in set(yp.tolist())
    m = classification_metrics(yt, yp, None, list("abcde"), bootstrap=0)
    assert m["macro_f1"] == pytest.approx(_sk_macro_f1(yt, yp))
    fast = metrics_from_confusion(np.array(m["confusion_matrix"])[None])
    assert fast["macro_f1"][0] == pytest.approx(_sk_macro_f1(yt, yp))


def test_kappa_of_a_one_class_truth_is_not_defined_and_has_no_interval() -> None:
    proba = np.eye(2)[ONE_PRED] * 0.6 + 0.2
    m = classification_metrics(ONE_TRUE, ONE_PRED, proba, NAMES, bootstrap=200)
    assert m["kappa"] is None and m["ci"]["kappa"] is None
    # AUROC needs both classes in the truth: none, and no interval either
    for name in NAMES:
        assert m["per_class"][name]["auroc"] is None
        assert m["ci"]["per_class"][name]["auroc"] is None
    # balanced accuracy is the one class's sensitivity, with its interval
    assert m["balanced_accuracy"] == pytest.approx(4 / 11)
    assert m["ci"]["balanced_accuracy"] == m["ci"]["per_class"]["G3"]["recall"]


def test_a_resample_holding_one_true_class_has_no_kappa() -> None:
    # 4 cases of class 0 (3 right) and none of class 1: kappa 0 by construction before
    fast = metrics_from_confusion(np.array([[[3, 1], [0, 0]], [[2, 1], [1, 2]]]))
    assert np.isnan(fast["kappa"][0])
    assert fast["kappa"][1] == pytest.approx((4 / 6 - 0.5) / 0.5)


def test_a_one_class_truth_gets_no_chance_verdict() -> None:
    m = classification_metrics(ONE_TRUE, ONE_PRED, None, NAMES, bootstrap=200)
    assert m["chance_rate"] is None
    assert m["distinguishable_from_chance"] is None and m["below_chance"] is None
    assert not below_chance(m["ci"]["accuracy"][1], m["chance_rate"])  # as reports ask it
    words = chance_words(m)
    assert "below chance" not in words and "not distinguishable" not in words
    assert words.startswith("cannot be compared with chance")
    assert "one class (G3)" in words and "sensitivity" in words and "kappa" in words
    # without intervals the sentence is the same: it needs none
    none = classification_metrics(ONE_TRUE, ONE_PRED, None, NAMES, bootstrap=0)
    assert chance_words(none) == words


def test_a_one_class_validation_or_selection_gets_no_chance_verdict() -> None:
    val = accuracy_summary([True, False, False, True, False], [2] * 5, bootstrap=200)
    assert val["chance_rate"] is None and val["below_chance"] is None
    words = chance_words(val)
    assert words.startswith("cannot be compared with chance") and "kappa" not in words
    balanced = chance_fields([0.1, 0.5], [1, 1, 1], balanced=True)
    assert balanced["chance_rate"] is None and balanced["distinguishable_from_chance"] is None


def test_only_a_one_class_truth_loses_the_verdict_not_a_class_of_one_case() -> None:
    alone = classification_metrics([0] * 11, [1] * 11, None, NAMES, bootstrap=200)
    assert alone["below_chance"] is None and "below" not in chance_words(alone)
    yt = [0] * 10 + [1]
    m = classification_metrics(yt, [1] * 11, None, NAMES, bootstrap=200)
    assert m["chance_rate"] == pytest.approx(10 / 11)
    assert m["below_chance"] is True
    assert chance_words(m).startswith("below chance: its 95% CI")
    assert m["kappa"] == pytest.approx(0.0) and m["ci"]["kappa"] is not None
    held = classification_metrics(yt, [0] * 11, None, NAMES, bootstrap=200)
    assert held["distinguishable_from_chance"] is False
    assert chance_words(held).startswith("not distinguishable from chance")


def test_evaluate_prints_the_one_class_line_not_below_chance() -> None:
    from segfew.cli.evaluate import door_lines

    m = classification_metrics(ONE_TRUE, ONE_PRED, None, NAMES, bootstrap=200)
    m.update({"n_scored": 11, "n_cases": 11, "leakage": {}})
    text = "\n".join(door_lines(m, None))
    assert "accuracy cannot be compared with chance" in text
    assert "below chance" not in text
