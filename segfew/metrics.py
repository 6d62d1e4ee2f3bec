"""Classification metrics with bootstrap confidence intervals, Dice, and their display (SPEC §6).

Point estimates come from scikit-learn. The bootstrap resamples cases with replacement; to
stay fast, every resample's confusion matrix is counted at once with ``numpy.bincount`` and
the metrics are read off those matrices with the same definitions scikit-learn uses (a test
checks they agree on the unresampled data).

Conventions, shared by point estimates and intervals:

- classes are ``0..K-1`` (``class_names`` order), so a class absent from the data still
  has a confusion-matrix row and a ``per_class`` entry;
- precision of a class never predicted is ``None``, and recall, F1 and AUROC of a class
  absent from the truth are ``None`` (undefined, not 0 as scikit-learn's
  ``zero_division=0`` would write);
- balanced accuracy and macro F1 are the mean recall and F1 over the classes present in
  the truth (scikit-learn's ``f1_score(labels=present, average="macro")``); Cohen's kappa
  and the chance rate need two classes there, so a one-class truth has neither (None);
- a zero-width percentile interval (every case right, or wrong) is widened to the Wilson
  interval (:func:`proportion_ci`) of the proportion behind it: accuracy, precision,
  recall, specificity of their cases; balanced accuracy, macro F1 and kappa (its scale)
  of the cases correct; F1 of ``TP/(TP+FP+FN)``; AUROC of its smaller class's pairs;
- an undefined value is ``None``, never NaN, so the dict is valid JSON.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Mapping, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

__all__ = [
    "accuracy_summary", "below_chance", "case_mean_dice", "chance_fields", "chance_words",
    "classification_metrics", "dice", "dice_per_label", "one_class", "one_class_share",
    "one_class_words", "proportion_ci"]

SUMMARY_METRICS = ("accuracy", "balanced_accuracy", "kappa", "macro_f1")
#: a classifier predicting one class for at least this share of the cases (whose truth is
#: less one-sided) is flagged: it has not learnt the classes
ONE_CLASS_SHARE = 0.9


def classification_metrics(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    proba: np.ndarray | None,
    class_names: Sequence[str],
    *,
    bootstrap: int = 1000,
    seed: int = 0,
    groups: Sequence[Hashable] | None = None,
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, Cohen's kappa, macro F1, per-class figures and 95% CIs.

    ``y_true``/``y_pred`` are class indices in ``0..K-1`` (``K = len(class_names)``);
    ``proba`` (n, K) class probabilities, or None (then every AUROC is None).

    Returns a JSON-serialisable dict::

        accuracy, balanced_accuracy, kappa, macro_f1: float | None
        per_class: {name: {precision, recall, specificity, f1, support, auroc}}
        confusion_matrix: K×K list of lists, rows = truth, columns = prediction
        ci: {accuracy: [lo, hi], balanced_accuracy, kappa, macro_f1,
             per_class: {name: {precision, f1, recall, specificity, auroc: [lo, hi] | None}}}
        n: number of cases; bootstrap: number of resamples
        one_class: {class, share, truth_share, cases, truth_majority} | None (:func:`one_class`)
        chance_rate, distinguishable_from_chance, below_chance: see :func:`chance_fields`

    ``ci`` holds bootstrap 95% percentile intervals from ``bootstrap`` resamples of the
    cases (seeded by ``seed``; zero-width ones widened, see above); None where undefined in
    every resample; ``ci`` is empty when ``bootstrap`` is 0. ``groups`` (n,): each case's
    patient, resampled with all its cases and counted by a Wilson widening (``n_groups``).
    """
    names = [str(n) for n in class_names]
    k = len(names)
    yt = np.asarray(y_true, dtype=np.int64).ravel()
    yp = np.asarray(y_pred, dtype=np.int64).ravel()
    n = len(yt)
    if len(yp) != n:
        raise ValueError(f"y_true has {n} values, y_pred {len(yp)}")
    if n == 0:
        raise ValueError("no cases to score")
    if k < 1 or yt.min() < 0 or yp.min() < 0 or yt.max() >= k or yp.max() >= k:
        raise ValueError(f"class indices must lie in 0..{k - 1} ({k} class names)")
    p = None if proba is None else np.asarray(proba, dtype=np.float64)
    if p is not None and p.shape != (n, k):
        raise ValueError(f"proba has shape {p.shape}, expected {(n, k)}")
    labels = list(range(k))

    with warnings.catch_warnings():  # undefined values are reported as None below
        warnings.simplefilter("ignore")
        cm = confusion_matrix(yt, yp, labels=labels)
        precision, recall, f1, support = precision_recall_fscore_support(
            yt, yp, labels=labels, zero_division=0)
        held = np.unique(yt).tolist()  # one class: kappa would be 0 by construction
        out: dict[str, Any] = {
            "accuracy": _num(accuracy_score(yt, yp)),
            "balanced_accuracy": _num(balanced_accuracy_score(yt, yp)),
            "kappa": _num(cohen_kappa_score(yt, yp, labels=labels)) if len(held) > 1 else None,
            "macro_f1": _num(f1_score(yt, yp, labels=held, average="macro", zero_division=0)),
        }
    per_class: dict[str, dict[str, Any]] = {}
    for c, name in enumerate(names):
        negatives = n - int(support[c])
        tn = n - cm[c, :].sum() - cm[:, c].sum() + cm[c, c]
        present = support[c] > 0
        auroc = None
        if p is not None and present and negatives > 0:
            auroc = _num(roc_auc_score(yt == c, p[:, c]))
        per_class[name] = {
            "precision": _num(precision[c]) if cm[:, c].sum() else None,
            "recall": _num(recall[c]) if present else None,
            "specificity": _num(tn / negatives) if negatives else None,
            "f1": _num(f1[c]) if present else None,
            "support": int(support[c]),
            "auroc": auroc,
        }
    out.update(per_class=per_class, confusion_matrix=cm.astype(int).tolist())
    keys = {} if groups is None else {g: i for i, g in enumerate(dict.fromkeys(groups))}
    unit = None if groups is None else np.array([keys[g] for g in groups], dtype=np.int64)
    if unit is not None and len(unit) != n:
        raise ValueError(f"groups has {len(unit)} values for {n} cases")
    out["ci"] = _bootstrap_ci(yt, yp, p, names, bootstrap, seed, unit) if bootstrap > 0 else {}
    out.update(chance_fields(out["ci"].get("accuracy"), yt), n=n)
    out.update({} if unit is None else {"n_groups": int(unit.max()) + 1})
    out.update(bootstrap=int(bootstrap), one_class=one_class(yt, yp, names))
    return out


def one_class(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray,
              class_names: Sequence[str]) -> dict[str, Any] | None:
    """``{"class", "share", "truth_share", "cases", "truth_majority"}`` when one class is
    predicted for at least :data:`ONE_CLASS_SHARE` of two or more cases while less of the
    truth is that class; else None. Such a classifier has not learnt the classes, whatever
    its accuracy (``truth_majority``: the class it answers is the largest of the truth)."""
    yt = np.asarray(y_true, dtype=np.int64).ravel()
    yp = np.asarray(y_pred, dtype=np.int64).ravel()
    counts = np.bincount(yp, minlength=len(class_names))
    top = int(counts.argmax())
    flag = one_class_share(top, counts[top] / max(len(yp), 1), len(yp), class_names)
    truth = float(np.mean(yt == top)) if flag else 1.0
    if flag is None or truth >= ONE_CLASS_SHARE:
        return None
    truth_counts = np.bincount(yt, minlength=len(class_names))
    largest = np.flatnonzero(truth_counts == truth_counts.max()).tolist()  # ties: no majority
    return {**flag, "truth_share": round(truth, 4),
            "truth_majority": bool(truth_counts[top] > 0 and largest == [top])}


def one_class_share(top_class: float, top_share: float, n: int, classes: Sequence[str]
                    ) -> dict[str, Any] | None:
    """``{"class", "share", "cases"}`` when class index ``top_class`` is predicted for the
    share ``top_share`` of ``n`` cases, nearly every one (:data:`ONE_CLASS_SHARE`), else
    None: the flag without the truth (validation epochs, a batch of predictions)."""
    if n < 2 or not np.isfinite(top_share) or top_share < ONE_CLASS_SHARE:
        return None
    return {"class": str(classes[int(top_class)]), "share": round(float(top_share), 4),
            "cases": n}


def one_class_words(flag: Mapping[str, Any], what: str = "cases") -> str:
    """The warning for a :func:`one_class` (or validation) flag: what is predicted, and
    whether that class is the largest of these cases' truth or not (whatever its training
    set held: the flag knows only the cases scored)."""
    are = f" ({flag['truth_share']:.0%} of them are)" if "truth_share" in flag else ""
    why = (f"it answers the largest class of these {what}" if flag.get("truth_majority")
           else "it answers one class whatever the case")
    return (f"the classifier predicts {flag['class']!r} for {flag['share']:.0%} of the "
            f"{flag['cases']} {what}{are}: {why}, not the classes")


def _num(x: Any) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


# ---------------------------------------------------------------- bootstrap


def metrics_from_confusion(cms: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics of a stack of confusion matrices ``(B, K, K)``; NaN where undefined.

    Returns ``accuracy``, ``balanced_accuracy``, ``kappa``, ``macro_f1`` of shape (B,) and
    ``precision``, ``recall``, ``specificity``, ``f1`` (B, K), by the module's conventions."""
    cms = np.asarray(cms, dtype=np.float64)
    n = cms.sum(axis=(1, 2))
    tp = np.diagonal(cms, axis1=1, axis2=2)
    true_k, pred_k = cms.sum(axis=2), cms.sum(axis=1)  # (B, K) cases of each class, answers
    fn, fp = true_k - tp, pred_k - tp
    tn = n[:, None] - tp - fn - fp
    with np.errstate(divide="ignore", invalid="ignore"):
        accuracy = tp.sum(axis=1) / n
        recall = np.where(true_k > 0, tp / true_k, np.nan)
        precision = np.where(pred_k > 0, tp / pred_k, np.nan)
        specificity = np.where(tn + fp > 0, tn / (tn + fp), np.nan)
        f1 = np.where(true_k > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
        balanced = np.nanmean(recall, axis=1) if recall.size else np.full(len(n), np.nan)
        macro_f1 = np.nanmean(f1, axis=1) if f1.size else np.full(len(n), np.nan)
        pe = (true_k * pred_k).sum(axis=1) / n**2
        kappa = (accuracy - pe) / (1 - pe)
    kappa = np.where((true_k > 0).sum(axis=1) < 2, np.nan, kappa)  # one class: not defined
    return {"accuracy": accuracy, "balanced_accuracy": balanced, "kappa": kappa,
            "macro_f1": macro_f1, "precision": precision, "recall": recall,
            "specificity": specificity, "f1": f1}


def _resample_counts(n: int, resamples: int, seed: int) -> np.ndarray:
    """(B, n) multiplicities: how often case i is in resample b (the one bootstrap of segfew)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(resamples, n))
    return np.bincount((draws + n * np.arange(resamples)[:, None]).ravel(),
                       minlength=resamples * n).reshape(resamples, n).astype(np.float64)


def _bootstrap_ci(yt: np.ndarray, yp: np.ndarray, proba: np.ndarray | None, names: list[str],
                  resamples: int, seed: int, unit: np.ndarray | None = None) -> dict[str, Any]:
    n, k = len(yt), len(names)
    unit = np.arange(n) if unit is None else unit  # each case's group index: drawn together
    counts = _resample_counts(int(unit.max()) + 1, resamples, seed)[:, unit]
    def wilson(hits: float, among: np.ndarray) -> list[float] | None:  # of ``among``'s groups
        total, units = int(among.sum()), len(np.unique(unit[among]))
        return proportion_ci(hits * units / total if total else 0, units)
    pair = yt * k + yp  # (n,) index of each case's confusion-matrix cell
    onehot = np.zeros((n, k * k))
    onehot[np.arange(n), pair] = 1.0
    cms = (counts @ onehot).reshape(resamples, k, k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices → None
        m = metrics_from_confusion(cms)
    cm = onehot.sum(axis=0).reshape(k, k)
    tp, true_k, pred_k = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    correct = wilson(int(tp.sum()), np.ones(n, bool))
    pe = float((true_k * pred_k).sum()) / n**2
    floors = {"kappa": [(w - pe) / (1 - pe) for w in correct] if correct and pe < 1 else None}
    ci: dict[str, Any] = {name: _widened(_interval(m[name]), floors.get(name, correct))
                          for name in SUMMARY_METRICS}
    per_class: dict[str, dict[str, list[float] | None]] = {}
    for c, name in enumerate(names):
        auroc = (_weighted_auroc(proba[:, c], yt == c, counts) if proba is not None
                 else np.full(resamples, np.nan))
        t, pos = int(tp[c]), int(true_k[c])
        jac = wilson(t, (yt == c) | (yp == c))  # TP / (TP + FN + FP)
        pairs = min(len(np.unique(unit[yt == c])), len(np.unique(unit[yt != c])))
        a = _interval(auroc)  # a zero-width ``a`` is [AUROC, AUROC]
        per_class[name] = {
            "f1": _widened(_interval(m["f1"][:, c]), jac and [2 * j / (1 + j) for j in jac]),
            "precision": _widened(_interval(m["precision"][:, c]), wilson(t, yp == c)),
            "recall": _widened(_interval(m["recall"][:, c]), wilson(t, yt == c)),
            "specificity": _widened(_interval(m["specificity"][:, c]),
                                    wilson(n - int(pred_k[c]) - pos + t, yt != c)),
            "auroc": _widened(a, a and proportion_ci(round(a[0] * pairs), pairs))}
    ci["per_class"] = per_class
    return ci


def _weighted_auroc(score: np.ndarray, positive: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """AUROC of every resample at once: the Mann–Whitney statistic with case weights.

    ``counts`` (B, n) are the resample multiplicities. Ties count one half, as in
    ``sklearn.metrics.roc_auc_score``. NaN where a resample lacks positives or negatives.
    """
    order = np.argsort(score, kind="stable")
    s = score[order]
    w = counts[:, order]
    pos = positive[order].astype(np.float64)
    wp, wn = w * pos, w * (1.0 - pos)
    cum_neg = np.concatenate([np.zeros((len(w), 1)), np.cumsum(wn, axis=1)], axis=1)
    start = np.searchsorted(s, s, side="left")  # first index of each case's tie group
    end = np.searchsorted(s, s, side="right")
    below = cum_neg[:, start]
    tied = cum_neg[:, end] - below
    num = (wp * (below + 0.5 * tied)).sum(axis=1)
    den = wp.sum(axis=1) * wn.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den, np.nan)


def _interval(values: np.ndarray, level: float = 0.95) -> list[float] | None:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return None
    lo, hi = np.percentile(v, [50 * (1 - level), 50 * (1 + level)])
    return [float(lo), float(hi)]


def _widened(ci: list[float] | None, floor: list[float] | None) -> list[float] | None:
    """``ci``, or where it has zero width its union with ``floor`` (module docstring)."""
    if ci is None or floor is None or ci[1] - ci[0] > 1e-12:
        return ci
    return [min(ci[0], floor[0]), max(ci[1], floor[1])]


def proportion_ci(successes: float, n: int, level: float = 0.95) -> list[float] | None:
    """Wilson score interval ``[lo, hi]`` of the proportion ``successes / n``; None if n is 0.

    Why: unlike a percentile bootstrap it keeps its width at 0/n and n/n. Wilson, J Am Stat
    Assoc 1927; Brown, Cai & DasGupta, Stat Sci 2001.
    """
    if n <= 0:
        return None
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p, z2 = successes / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return [max(0.0, centre - half) if successes else 0.0, min(1.0, centre + half)]


# ---------------------------------------------------------------- chance


def chance_fields(accuracy_ci: Sequence[float] | None, y_true: Sequence[int] | np.ndarray,
                  balanced: bool = False) -> dict[str, Any]:
    """``chance_rate`` (the majority-class share of ``y_true``: the accuracy of always
    answering the commonest class; with ``balanced``, 1 / the number of classes present: the
    balanced accuracy of any constant answer), ``distinguishable_from_chance`` (False
    when the 95% interval ``accuracy_ci`` holds it; None without an interval) and, with an
    interval, ``below_chance`` (True when it lies wholly under the rate: distinguishable, but
    the wrong way); ``truth_classes``, the classes ``y_true`` holds: under two, all three are
    None (a constant answer scores 1: no accuracy short of it compares with chance).

    Why: with a few dozen test cases, an accuracy a little over one half on two classes is as
    likely from a coin as from a model; the interval says so, and the words must too.
    """
    counts = np.bincount(np.asarray(y_true, dtype=np.int64).ravel())
    held = int(np.count_nonzero(counts))
    rate = float(1 / held if balanced else counts.max() / counts.sum()) if held > 1 else None
    if rate is None or not accuracy_ci:
        return {"chance_rate": rate, "distinguishable_from_chance": None, "below_chance": None,
                "truth_classes": held}
    lo, hi = float(accuracy_ci[0]), float(accuracy_ci[1])
    return {"chance_rate": rate, "distinguishable_from_chance": not lo <= rate <= hi,
            "below_chance": below_chance(hi, rate), "truth_classes": held}


def below_chance(high: float | None, chance_rate: float | None) -> bool:
    """Whether a 95% interval whose upper end is ``high`` lies wholly below ``chance_rate``:
    worse than always answering the largest class, which "not distinguishable from chance"
    alone would not say (docs/trust.md says what it may mean)."""
    return high is not None and chance_rate is not None and high < chance_rate


def chance_words(summary: Mapping[str, Any], ci_key: str = "accuracy") -> str:
    """The sentence to print beside an accuracy whose interval holds the chance rate, or
    lies wholly below it, or whose cases hold one class (no comparison), else "".
    ``summary`` holds :func:`chance_fields` and the interval (``summary["ci"][ci_key]`` or
    ``summary["ci"]`` when it is a pair); ``per_class`` and ``n`` where known."""
    ci = summary.get("ci")
    pair = ci.get(ci_key) if isinstance(ci, Mapping) else ci
    rate = summary.get("chance_rate")
    if summary.get("truth_classes") == 1:  # a constant answer is right every time
        held = [f" ({k})" for k, v in (summary.get("per_class") or {}).items() if v["support"]]
        n = f" {summary['n']}" if summary.get("n") else ""
        return (f"cannot be compared with chance: the{n} cases scored all hold one class"
                f"{''.join(held)}, so always answering it would be right every time"
                + ("; balanced accuracy is that class's sensitivity and Cohen's kappa is not "
                   "defined" if "balanced_accuracy" in summary else ""))
    if summary.get("distinguishable_from_chance") is False:
        where = f"its 95% CI {pair[0]:.2f}–{pair[1]:.2f} holds " if pair else "its CI holds "
        return (f"not distinguishable from chance: {where}the chance rate {rate:.2f} (the "
                "share of the largest class)")
    if pair and below_chance(pair[1], rate):
        return (f"below chance: its 95% CI {pair[0]:.2f}–{pair[1]:.2f} lies under the "
                f"chance rate {rate:.2f} (the share of the largest class) — worse than "
                "always answering the largest class")
    return ""


def accuracy_summary(correct: Sequence[bool] | np.ndarray, y_true: Sequence[int] | np.ndarray,
                     *, bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Accuracy of ``correct`` (n,) with its 95% bootstrap interval (widened to the Wilson
    interval where zero-width: all right or all wrong) and :func:`chance_fields`.

    ``y_true`` (n,) class indices of the same cases (for the chance rate). Returns
    ``{"accuracy", "ci": [lo, hi] | None, "n", "chance_rate",
    "distinguishable_from_chance", "below_chance"}``; ``accuracy`` None when n is 0.
    """
    hits = np.asarray(correct, dtype=np.float64).ravel()
    n = len(hits)
    if n == 0:
        return {"accuracy": None, "ci": None, "n": 0, **chance_fields(None, [])}
    ci = (_widened(_interval(_resample_counts(n, bootstrap, seed) @ hits / n),
                   proportion_ci(int(hits.sum()), n)) if bootstrap > 0 else None)
    return {"accuracy": float(hits.mean()), "ci": ci, "n": n, **chance_fields(ci, y_true)}


def cases_from_confusion(cm: np.ndarray | Sequence[Sequence[int]]
                         ) -> tuple[np.ndarray, np.ndarray]:
    """``(y_true, y_pred)`` class indices of the cases a confusion matrix counts (rows:
    truth), so a pooled matrix can be bootstrapped like any predictions."""
    cm = np.asarray(cm, dtype=np.int64)
    k = cm.shape[0]
    cells = np.repeat(np.arange(k * k), cm.ravel())
    return cells // k, cells % k


# ---------------------------------------------------------------- segmentation


def dice(intersection: float, pred_size: float, truth_size: float) -> float | None:
    """Dice ``2|P∩T| / (|P|+|T|)`` from voxel counts; None when the label is in neither map.

    A label absent from both maps has nothing to overlap: reporting 1 (or 0) would bias a
    mean, so it is undefined and left out of :func:`case_mean_dice`.
    """
    total = pred_size + truth_size
    return None if total == 0 else 2.0 * float(intersection) / float(total)


def dice_per_label(pred: np.ndarray, truth: np.ndarray, labels: Sequence[int]
                   ) -> dict[int, float | None]:
    """:func:`dice` of each label between two label maps of equal shape (one case)."""
    pred = np.asarray(pred)
    truth = np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"label maps differ in shape: {pred.shape} vs {truth.shape}")
    out: dict[int, float | None] = {}
    for label in labels:
        p = pred == label
        t = truth == label
        out[int(label)] = dice(int(np.logical_and(p, t).sum()), int(p.sum()), int(t.sum()))
    return out


def case_mean_dice(per_case: Sequence[Mapping[Any, float | None]], labels: Sequence[Any]
                   ) -> tuple[dict[Any, float | None], float | None]:
    """The Dice segfew reports everywhere (metrics.csv, model files, ``evaluate``).

    Returns ``(per_label, mean)``: each label's Dice averaged over the cases where it is
    defined (None if in none), and ``mean``, the average of those over the labels that
    have one (the "mean Dice"; None if none has). ``per_case`` holds one mapping
    label → Dice (or None) per case, as :func:`dice_per_label` gives.
    """
    per_label: dict[Any, float | None] = {}
    for label in labels:
        values = [v for case in per_case if (v := case.get(label)) is not None]
        per_label[label] = float(np.mean(values)) if values else None
    present = [v for v in per_label.values() if v is not None]
    return per_label, (float(np.mean(present)) if present else None)
