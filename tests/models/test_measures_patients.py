"""Framework measures when a patient has several cases (slices, visits): every fold of the
selection and of the nested estimate keeps a patient's cases on one side, the rule "choose
from SELECT_FROM per class" counts patients, and one case per patient changes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from segfew.data import Case
from segfew.models import measures_selection as ms
from segfew.models.measures_selection import CANDIDATES, Candidate

ALL = [Candidate("forest", "all"), Candidate("logistic", "all", 0.1)]


def _slices(per_class: int = 4, slices: int = 6, seed: int = 0
            ) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """``slices`` cases of each of ``per_class`` patients per class (two classes). A
    patient's cases share its own measurements (a little noise around them); nothing but
    the patient tells the classes apart, so only a model that has seen the patient's other
    cases answers well."""
    rng = np.random.default_rng(seed)
    patient = np.repeat(np.arange(2 * per_class), slices)
    cls = np.repeat([0, 1], per_class)
    own = rng.lognormal(0, 1, (2 * per_class, 3))
    x = own[patient] * rng.normal(1, 0.02, (patient.size, 3))
    names = ["tumour_volume_ml", "tumour_sphericity", "tumour_extent"]
    return x, cls[patient], names, [f"P{p}" for p in patient]


def test_no_fold_of_the_selection_or_the_nested_estimate_splits_a_patient(
        monkeypatch: pytest.MonkeyPatch) -> None:
    x, y, names, groups = _slices()
    x = np.column_stack([x, np.arange(len(y))])  # a row number: which rows each fit saw
    names = [*names, "row"]
    seen: list[set[int]] = []
    real = ms._fit

    def spy(candidate: Candidate, xs: np.ndarray, ys: np.ndarray, *a: Any, **k: Any
            ) -> ms.Choice:
        seen.append({int(r) for r in xs[:, -1]})
        return real(candidate, xs, ys, *a, **k)

    monkeypatch.setattr(ms, "_fit", spy)
    ms.select_classifier(x, y, names, 2, candidates=ALL, choose=True, groups=groups)
    ms.nested_estimate(x, y, names, 2, candidates=ALL, groups=groups)
    patient = np.array(groups)
    assert len(seen) > 10
    for rows in seen:  # each fit holds all of a patient's cases or none of them
        for p in set(patient[sorted(rows)]):
            assert set(np.flatnonzero(patient == p)) <= rows, f"patient {p} split by a fold"


def test_the_nested_estimate_of_slices_is_of_new_patients_not_of_seen_ones() -> None:
    x, y, names, groups = _slices()
    forest = [Candidate("forest", "all")]
    by_rows = ms.nested_estimate(x, y, names, 2, candidates=forest)
    by_patient = ms.nested_estimate(x, y, names, 2, candidates=forest, groups=groups)
    assert by_rows is not None and by_patient is not None
    # the slices of a held-out patient's neighbours in its own folds: near-perfect, and false
    assert by_rows["balanced_accuracy"] > 0.9 and "groups" not in by_rows
    assert by_patient["n"] == 48 and by_patient["groups"] == 8
    assert by_patient["distinguishable_from_chance"] is False  # nothing tells new patients apart
    assert by_patient["balanced_accuracy"] < 0.8


def test_the_choice_among_candidates_counts_patients_not_cases() -> None:
    x, y, names, groups = _slices()  # 24 cases per class, but 4 patients
    told = ms.select_classifier(x, y, names, 2, groups=groups)
    assert told.chosen_by == ("the default: 4 patient(s) in a class, fewer than the "
                              f"{ms.SELECT_FROM} a choice among candidates needs")
    assert list(told.cv_summary) == [CANDIDATES[0].label]
    rows = ms.select_classifier(x, y, names, 2)  # taken as 48 patients: a choice is made
    assert len(rows.cv_summary) == len(CANDIDATES)


def test_one_case_per_patient_changes_nothing() -> None:
    from tests.models.test_models import _measurements

    x, y, names = _measurements(n_per_class=6)
    ids = [f"case{i}" for i in range(len(y))]
    few = CANDIDATES[1:3]
    plain = ms.select_classifier(x, y, names, 3, candidates=few)
    each = ms.select_classifier(x, y, names, 3, candidates=few, groups=ids)
    assert each.cv_summary == plain.cv_summary and each.temperature == plain.temperature
    assert each.candidate == plain.candidate and each.chosen_by == plain.chosen_by
    nested = ms.nested_estimate(x, y, names, 3, candidates=few, groups=ids)
    assert nested == ms.nested_estimate(x, y, names, 3, candidates=few)
    assert nested is not None and "groups" not in nested


class _Table:
    """A measurer that looks each case's measurements up (no image is read)."""

    model = None
    tta = False

    def __init__(self, rows: dict[str, dict[str, float]]) -> None:
        self.rows = rows

    def __call__(self, case: Case) -> dict[str, float]:
        return self.rows[case.id]


def test_training_cases_patients_reach_the_selection_and_its_words() -> None:
    from segfew.inference.fit_measures import describe_selection, fit_measurement_classifier

    x, y, names, groups = _slices()
    cases = [Case(f"s{i}", (Path(f"s{i}.nii.gz"),), target=str(t), group=g)
             for i, (t, g) in enumerate(zip(y, groups, strict=True))]
    table = _Table({c.id: dict(zip(names, map(float, row), strict=True))
                    for c, row in zip(cases, x, strict=True)})
    _, fitted = fit_measurement_classifier(table, cases, y.tolist(), 2)  # type: ignore[arg-type]
    metrics = fitted["metrics"]
    assert metrics["measures_chosen_by"].startswith("the default: 4 patient(s) in a class")
    assert metrics["measures_nested"]["groups"] == 8
    lines = describe_selection(metrics)
    assert any("(3 outer folds, 48 cases of 8 patients)" in line for line in lines), lines
