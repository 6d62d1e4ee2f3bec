"""Accuracy intervals of an experiment that resample test patients, not cases.

A table with a group column may hold several cases (slices, frames) of one patient, and a
patient may be tested in several repetitions. Cases of one patient are not independent, so
every interval here draws patients — the test cases' ``unit`` (:attr:`segfew.data.Case.unit`:
the group, else the case id) — through the one bootstrap of segfew
(:func:`segfew.metrics.classification_metrics` with ``groups``). Each task's result records
its test cases' patients and classes (:func:`test_fields`); a result written by an older
segfew records none, and its intervals resample cases, as they did.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from segfew.metrics import accuracy_summary, cases_from_confusion, classification_metrics

if TYPE_CHECKING:
    from segfew.data import Case

__all__ = ["confusion", "patient_metrics", "pooled_accuracy", "test_fields"]

_CHANCE = ("chance_rate", "distinguishable_from_chance", "below_chance")


def test_fields(test: Sequence[Case]) -> dict[str, list[str]]:
    """``{"test_groups", "test_targets"}``: each test case's patient (its ``unit``) and class,
    in the order of the result's ``test_ids``."""
    return {"test_groups": [c.unit for c in test],
            "test_targets": [str(c.target) for c in test]}


def _scored(predictions: Any, ids: Sequence[str], groups: Sequence[str],
            targets: Sequence[str], classes: Sequence[str]
            ) -> tuple[list[int], list[int], list[str]] | None:
    """``(y_true, y_pred, units)`` of the predictions with status ok (a prediction's own
    ``target`` wins over ``targets``); None when they cannot be matched to the test cases."""
    if not isinstance(predictions, list) or not len(ids) == len(groups) == len(targets):
        return None
    unit_of, target_of = dict(zip(ids, groups, strict=True)), dict(zip(ids, targets, strict=True))
    yt: list[int] = []
    yp: list[int] = []
    units: list[str] = []
    for p in predictions:
        if not isinstance(p, Mapping) or p.get("status", "ok") != "ok":
            continue
        case = str(p.get("id"))
        truth, said = str(p.get("target", target_of.get(case, ""))), str(p.get("predicted"))
        if case not in unit_of or truth not in classes or said not in classes:
            return None
        yt.append(list(classes).index(truth))
        yp.append(list(classes).index(said))
        units.append(unit_of[case])
    return yt, yp, units


def result_rows(result: Mapping[str, Any], classes: Sequence[str]
                ) -> tuple[list[int], list[int], list[str]] | None:
    """``(y_true, y_pred, units)`` of one task result's scored predictions; None where it
    records no test patients (an older segfew) or its rows do not match its test cases."""
    if result.get("test_groups") is None:
        return None
    ids = [str(i) for i in result.get("test_ids") or []]
    return _scored(result.get("predictions"), ids, [str(g) for g in result["test_groups"]],
                   [str(t) for t in result.get("test_targets") or [""] * len(ids)], classes)


def patient_metrics(metrics: dict[str, Any], predictions: Any, test: Sequence[Case], *,
                    bootstrap: int, seed: int) -> dict[str, Any]:
    """A task's ``metrics`` (:func:`classification_metrics` of its scored test cases) with
    intervals that resample the test cases' patients, and ``n_groups``.

    ``predictions``: the task's rows (``id``, ``predicted``, ``status``) for ``test``.
    Metrics that already hold ``n_groups`` are returned as they are. Where each case is
    its own patient the intervals are the same, and only ``n_groups`` is added. Else they
    are drawn again over patients with ``bootstrap`` resamples of ``seed`` (the task's
    own count when it records one); per-class AUROC intervals then become None (rows carry
    no probabilities). Metrics whose confusion matrix the rows do not rebuild are returned
    unchanged.
    """
    if "n_groups" in metrics or not test:
        return metrics
    units = [c.unit for c in test]
    if len(set(units)) == len(units):
        return {**metrics, "n_groups": int(metrics.get("n") or 0)}
    classes = list(metrics.get("per_class") or [])
    rows = _scored(predictions, [c.id for c in test], units,
                   [str(c.target) for c in test], classes)
    if not rows or not rows[0]:
        return metrics
    again = classification_metrics(rows[0], rows[1], None, classes,
                                   bootstrap=int(metrics.get("bootstrap", bootstrap)),
                                   seed=seed, groups=rows[2])
    if again["confusion_matrix"] != metrics.get("confusion_matrix"):
        return metrics
    return {**metrics, "ci": again["ci"], **{k: again[k] for k in _CHANCE},
            "n_groups": again["n_groups"]}


def confusion(results: Sequence[Mapping[str, Any]], classes: Sequence[str]) -> np.ndarray:
    """The confusion matrices of ``results`` summed, rows and columns in ``classes`` order."""
    total = np.zeros((len(classes), len(classes)), dtype=int)
    for r in results:
        cm = (r.get("metrics") or {}).get("confusion_matrix")
        names = list((r.get("metrics") or {}).get("per_class") or classes)
        if not cm or len(names) != len(cm):
            continue
        for i, row in enumerate(cm):
            for j, value in enumerate(row):
                if names[i] in classes and names[j] in classes:
                    total[classes.index(names[i]), classes.index(names[j])] += int(value)
    return total


def _pooled_rows(results: Sequence[Mapping[str, Any]], classes: Sequence[str]
                 ) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """Every scored test prediction of ``results``: ``(y_true, y_pred, patients)``; None
    when a result records no patients (an older segfew) or its rows do not rebuild the
    pooled confusion matrix."""
    yt: list[int] = []
    yp: list[int] = []
    units: list[str] = []
    for r in results:
        rows = result_rows(r, classes)
        if rows is None:
            return None
        yt, yp, units = yt + rows[0], yp + rows[1], units + rows[2]
    y_true, y_pred = np.array(yt, dtype=np.int64), np.array(yp, dtype=np.int64)
    k = len(classes)
    rebuilt = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)
    return (y_true, y_pred, units) if np.array_equal(rebuilt, confusion(results, classes)) \
        else None


def pooled_accuracy(results: Sequence[Mapping[str, Any]], classes: Sequence[str],
                    bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Accuracy of one point (framework, size) over the test predictions of all its
    repetitions pooled, with a 95% bootstrap interval and the chance rate.

    The bootstrap draws distinct test patients, each carrying all its predictions from every
    repetition that tested it (a cluster bootstrap, so neither a patient's cases nor its
    repetitions count as independent). Where no result records its patients (an older
    segfew), it draws the pooled cases (:func:`segfew.metrics.accuracy_summary`).

    Returns ``{"accuracy", "low", "high", "n", "repetitions", "per_repetition",
    "fewest_per_repetition", "units", "units_per_repetition", "fewest_units_per_repetition",
    "chance_rate", "distinguishable_from_chance"}``: ``n`` scored test predictions in all,
    ``repetitions`` results pooled (those finished), ``per_repetition`` test cases in each
    repetition (the largest when they differ, ``fewest_per_repetition`` the smallest);
    ``units`` distinct patients resampled and ``units_per_repetition`` test patients in each
    repetition (the largest; ``fewest_units_per_repetition`` the smallest), all three None
    where cases are resampled; ``one_class``: the repetitions whose classifier answered one
    class for nearly every test case (:func:`segfew.metrics.one_class`).
    """
    tested = [int(r.get("n_test") or 0) for r in results]
    counts = {"repetitions": len(results), "per_repetition": max(tested, default=0),
              "fewest_per_repetition": min(tested, default=0),
              "one_class": sum(bool((r.get("metrics") or {}).get("one_class")) for r in results)}
    rows = _pooled_rows(results, classes)
    if rows is None or not len(rows[0]):
        y_true, y_pred = cases_from_confusion(confusion(results, classes))
        summary = accuracy_summary(y_true == y_pred, y_true, bootstrap=bootstrap, seed=seed)
        low, high = summary["ci"] or (None, None)
        return {"accuracy": summary["accuracy"], "low": low, "high": high, "n": summary["n"],
                **counts, "units": None, "units_per_repetition": None,
                "fewest_units_per_repetition": None, "chance_rate": summary["chance_rate"],
                "distinguishable_from_chance": summary["distinguishable_from_chance"]}
    y_true, y_pred, units = rows
    order = np.argsort(y_true * len(classes) + y_pred, kind="stable")  # as cases_from_confusion
    m = classification_metrics(y_true[order], y_pred[order], None, classes,
                               bootstrap=bootstrap, seed=seed,
                               groups=[units[i] for i in order])
    low, high = m["ci"].get("accuracy") or (None, None)
    patients = [len(set(r["test_groups"])) for r in results]
    return {"accuracy": m["accuracy"], "low": low, "high": high, "n": m["n"],
            **counts, "units": m["n_groups"], "units_per_repetition": max(patients),
            "fewest_units_per_repetition": min(patients),
            "chance_rate": m["chance_rate"],
            "distinguishable_from_chance": m["distinguishable_from_chance"]}
