"""Classification metrics, bootstrap intervals, Dice and the confusion-matrix plot."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn.metrics import (
    balanced_accuracy_score,
    cohen_kappa_score,
    f1_score,
    precision_score,
    recall_score,
)

from segfew.metrics import (
    _resample_counts,
    accuracy_summary,
    classification_metrics,
    dice_per_label,
    metrics_from_confusion,
    proportion_ci,
)

# 3 classes, 6 cases; confusion matrix [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
Y_TRUE = [0, 0, 0, 1, 1, 2]
Y_PRED = [0, 0, 1, 1, 2, 2]
NAMES = ["normal", "infarct", "dilated"]


def test_three_class_example_by_hand() -> None:
    m = classification_metrics(Y_TRUE, Y_PRED, None, NAMES, bootstrap=0)
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    # p_o = 2/3, p_e = (3·2 + 2·2 + 1·2) / 36 = 1/3, kappa = (2/3 - 1/3) / (1 - 1/3)
    assert m["kappa"] == pytest.approx(0.5)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    pc = m["per_class"]
    # specificity = TN / (TN + FP): normal 3/3, infarct 3/4, dilated 4/5
    assert [pc[n]["specificity"] for n in NAMES] == pytest.approx([1.0, 0.75, 0.8])
    assert [pc[n]["recall"] for n in NAMES] == pytest.approx([2 / 3, 0.5, 1.0])
    assert [pc[n]["precision"] for n in NAMES] == pytest.approx([1.0, 0.5, 0.5])
    assert [pc[n]["f1"] for n in NAMES] == pytest.approx([0.8, 0.5, 2 / 3])
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert [pc[n]["support"] for n in NAMES] == [3, 2, 1]
    assert pc["normal"]["auroc"] is None  # no probabilities given
    assert m["ci"] == {}


def test_bootstrap_formulas_agree_with_sklearn(rng: np.random.Generator) -> None:
    # class 3 absent from the truth but predicted; class 4 absent from both
    yt = rng.integers(0, 3, 30)
    yp = np.where(rng.random(30) < 0.6, yt, rng.integers(0, 4, 30))
    m = classification_metrics(yt, yp, None, list("abcde"), bootstrap=0)
    fast = metrics_from_confusion(np.array(m["confusion_matrix"])[None])
    with warnings.catch_warnings():  # sklearn warns that y_pred has a class y_true lacks
        warnings.simplefilter("ignore")
        assert fast["balanced_accuracy"][0] == pytest.approx(balanced_accuracy_score(yt, yp))
    assert fast["kappa"][0] == pytest.approx(cohen_kappa_score(yt, yp))
    assert fast["macro_f1"][0] == pytest.approx(f1_score(yt, yp, labels=[0, 1, 2], average="macro"))
    assert fast["recall"][0, :3] == pytest.approx(recall_score(yt, yp, labels=[0, 1, 2],
                                                               average=None))
    assert np.isnan(fast["recall"][0, 3:]).all()
    assert fast["precision"][0, :4] == pytest.approx(precision_score(
        yt, yp, labels=[0, 1, 2, 3], average=None, zero_division=0))
    assert np.isnan(fast["precision"][0, 4])  # never predicted: undefined


def test_ci_contains_estimate_and_shrinks_with_more_cases(rng: np.random.Generator) -> None:
    yt = rng.integers(0, 3, 40)
    yp = np.where(rng.random(40) < 0.7, yt, rng.integers(0, 3, 40))
    proba = np.eye(3)[yp] * 0.6 + 0.4 / 3
    small = classification_metrics(yt, yp, proba, NAMES, bootstrap=500, seed=1)
    big = classification_metrics(np.tile(yt, 10), np.tile(yp, 10), np.tile(proba, (10, 1)),
                                 NAMES, bootstrap=500, seed=1)
    for key in ("accuracy", "balanced_accuracy", "kappa", "macro_f1"):
        lo, hi = small["ci"][key]
        assert lo <= small[key] <= hi
        assert big["ci"][key][1] - big["ci"][key][0] < 0.6 * (hi - lo)
    for name in NAMES:
        for key in ("precision", "f1", "recall", "specificity", "auroc"):  # precision had none
            lo, hi = small["ci"]["per_class"][name][key]
            assert lo <= small["per_class"][name][key] <= hi


def test_absent_class_gets_a_row_and_no_auroc() -> None:
    proba = np.full((6, 4), 0.25)
    m = classification_metrics(Y_TRUE, Y_PRED, proba, [*NAMES, "other"], bootstrap=50)
    assert len(m["confusion_matrix"]) == 4 and m["confusion_matrix"][3] == [0, 0, 0, 0]
    other = m["per_class"]["other"]
    assert other["auroc"] is None and other["recall"] is None and other["f1"] is None
    assert other["support"] == 0
    assert other["precision"] is None  # never predicted: undefined, not 0
    assert m["ci"]["per_class"]["other"]["auroc"] is None
    assert m["per_class"]["normal"]["auroc"] == pytest.approx(0.5)  # all scores tied
    json.dumps(m, allow_nan=False)  # plain floats and None, no NaN


def test_bootstrap_is_vectorised_and_seeded(rng: np.random.Generator,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Fast whatever the CPU: no scikit-learn call per resample (every resample's confusion
    matrix is counted at once), so 1000 resamples call it as often as none do."""
    import segfew.metrics

    calls: list[str] = []
    for name in ("accuracy_score", "balanced_accuracy_score", "cohen_kappa_score",
                 "confusion_matrix", "f1_score", "precision_recall_fscore_support",
                 "roc_auc_score"):  # scikit-learn's, as segfew.metrics calls them
        real = getattr(segfew.metrics, name)
        monkeypatch.setattr(segfew.metrics, name,
                            lambda *a, _real=real, _name=name, **k: (calls.append(_name),
                                                                     _real(*a, **k))[1])
    yt = rng.integers(0, 4, 40)
    proba = rng.dirichlet(np.ones(4), 40)
    classification_metrics(yt, proba.argmax(1), proba, list("abcd"), bootstrap=0, seed=3)
    without, calls[:] = len(calls), []
    a = classification_metrics(yt, proba.argmax(1), proba, list("abcd"), bootstrap=1000, seed=3)
    assert 0 < len(calls) == without
    b = classification_metrics(yt, proba.argmax(1), proba, list("abcd"), bootstrap=1000, seed=3)
    assert a["ci"] == b["ci"] and a["ci"]["per_class"]["a"]["auroc"] is not None


def test_rejects_out_of_range_labels() -> None:
    with pytest.raises(ValueError, match=r"0\.\.2"):
        classification_metrics([0, 3], [0, 1], None, NAMES)


def test_dice_values_and_none_rule() -> None:
    truth = np.array([[0, 1, 1], [0, 2, 2]])
    pred = np.array([[0, 1, 0], [0, 2, 2]])
    d = dice_per_label(pred, truth, [0, 1, 2, 3])
    assert d[0] == pytest.approx(2 * 2 / (3 + 2))
    assert d[1] == pytest.approx(2 * 1 / (1 + 2))
    assert d[2] == 1.0
    assert d[3] is None  # absent from both: undefined, not 0 or 1
    assert dice_per_label(np.zeros(4), np.ones(4), [1]) == {1: 0.0}


def test_confusion_png(tmp_path) -> None:
    m = classification_metrics(Y_TRUE, Y_PRED, None, NAMES, bootstrap=100)
    from segfew.evaluation.figures import plot_confusion_matrix

    path = plot_confusion_matrix(m["confusion_matrix"], NAMES, tmp_path / "cm.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["cm.png"]  # no temporary left over


def _wilson(k: int, n: int) -> tuple[float, float]:
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return ci.low, ci.high


def test_perfect_score_gets_a_wilson_interval_not_a_point() -> None:
    y = [0] * 12 + [1] * 12  # 24/24 right
    proba = np.eye(2)[y]
    out = classification_metrics(y, y, proba, ["a", "b"], bootstrap=200)
    lo, hi = out["ci"]["accuracy"]
    assert lo == pytest.approx(_wilson(24, 24)[0]) and lo == pytest.approx(0.862, abs=0.002)
    assert hi == 1.0 and out["distinguishable_from_chance"] is True
    for name in ("balanced_accuracy", "macro_f1", "kappa"):
        assert out["ci"][name][0] < out["ci"][name][1] == pytest.approx(1.0), name
    for figure, ci in out["ci"]["per_class"]["a"].items():
        assert ci[0] < ci[1] == pytest.approx(1.0), figure
    # specificity of "a" counts the 12 cases of "b"
    assert out["ci"]["per_class"]["a"]["specificity"][0] == pytest.approx(_wilson(12, 12)[0])


def test_zero_of_ten_has_an_upper_bound_above_zero() -> None:
    out = accuracy_summary([False] * 10, [0] * 5 + [1] * 5, bootstrap=200)
    assert out["ci"][0] == 0.0 and out["ci"][1] == pytest.approx(_wilson(0, 10)[1])
    assert out["ci"][1] > 0 and out["distinguishable_from_chance"] is True
    assert proportion_ci(0, 10)[0] == 0.0 and proportion_ci(3, 0) is None


def test_informative_bootstrap_interval_is_left_unchanged() -> None:
    hits = np.array([1, 0, 1, 1, 0, 1, 1, 1, 0, 1], dtype=float)
    out = accuracy_summary(hits, [0] * 10, bootstrap=300, seed=4)
    means = _resample_counts(10, 300, 4) @ hits / 10
    assert out["ci"] == pytest.approx(list(np.percentile(means, [2.5, 97.5])))
