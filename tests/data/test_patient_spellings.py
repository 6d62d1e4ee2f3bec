"""One patient identity everywhere: a patient written ``004`` in one row and ``4`` (or
``P004`` and ``p4``) in another is one patient for ``split``, for the tables that
``train-classifier`` and ``experiment`` read, and for ``evaluate``'s leakage check
(:func:`segfew.data.case.patient_key`), with one warning naming the rows."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from segfew.data import read_table
from segfew.data.case import one_patient_per_key, patient_key
from segfew.data.splits import split_table
from segfew.data.table_rows import read_table_rows
from segfew.errors import DataWarning
from segfew.evaluation.leakage import training_groups
from tests.conftest import ramp, save_nifti


def _table(tmp_path: Path) -> Path:
    """Eight patients of two classes, each with two scans; four patients are written two
    ways (``004``/``4``, ``P002``/``p2``), as a spreadsheet merge leaves them."""
    lines = ["id,label,patient"]
    for k in range(8):
        label = "a" if k % 2 else "b"
        first, second = (f"{k:03d}", f"{k}") if k < 2 else (
            (f"P{k:03d}", f"p{k}") if k < 4 else (f"{k}", f"{k}"))
        for visit, spelt in ((1, first), (2, second)):
            cid = f"c{k}_{visit}"
            save_nifti(tmp_path / "images" / f"{cid}.nii.gz", ramp((8, 8), base=10 * k + visit))
            lines.append(f"{cid},{label},{spelt}")
    path = tmp_path / "t.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _said(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if "written" in str(w.message)]


def test_one_spelling_per_patient_with_one_warning_naming_the_rows() -> None:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = one_patient_per_key(
            [{"p": v} if v is not None else {} for v in ["004", "P7", "4", "", None, "p007", "9"]],
            "p", "t.csv")
    assert got == ["004", "P7", "004", "", None, "P7", "9"]
    said = _said(record)
    assert len(said) == 1 and isinstance(record[0].message, DataWarning)
    assert "'004' (row 2) and '4' (row 4)" in said[0] and "'P7' (row 3) and 'p007' (row 7)" \
        in said[0] and "t.csv" in said[0]


@pytest.mark.parametrize(("one", "same"), [("7", "7.0"), ("12", "012.00"), ("P7", "p7.0"),
                                           ("7.5", "7.50"), ("1.05", "1.0500"),
                                           ("10", "1e1"), ("0.2", "2E-1")])
def test_a_whole_number_written_with_a_decimal_point_is_one_patient(one: str, same: str
                                                                    ) -> None:
    """A numeric patient column that once held a blank comes back from pandas as 7.0."""
    assert patient_key(one) == patient_key(same)


@pytest.mark.parametrize(("one", "other"), [("1.05", "1.5"), ("7.5", "7"), ("2.0.1", "2.1")])
def test_decimals_stay_distinct_patients(one: str, other: str) -> None:
    assert patient_key(one) != patient_key(other)


def test_split_keeps_a_patient_written_two_ways_on_one_side(tmp_path: Path) -> None:
    table = _table(tmp_path)
    for seed in range(6):
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            done = split_table(table, tmp_path / f"s{seed}", test_fraction=0.5, seed=seed,
                               images=tmp_path / "images", overwrite=True)
        assert len(_said(record)) == 1, seed
        sides = [{patient_key(r["patient"]) for r in read_table_rows(p)} for p in done.paths]
        assert not sides[0] & sides[1], seed  # no patient on both sides, as evaluate sees it
        assert len({c.unit for c in done.first + done.second}) == 8


def test_train_classifier_and_experiment_tables_see_one_patient(tmp_path: Path) -> None:
    table = _table(tmp_path)
    with pytest.warns(DataWarning, match=r"'000' \(row 2\) and '0' \(row 3\)"):
        cases = read_table(table, tmp_path / "images")
    groups = {c.id: c.group for c in cases}
    assert groups["c0_1"] == groups["c0_2"] == "000"
    assert groups["c3_1"] == groups["c3_2"] == "P003"
    # what the classifier records for evaluate's leakage check: one name per patient
    assert training_groups(cases) == {"training_groups": sorted({
        "000", "001", "P002", "P003", "4", "5", "6", "7"})}


def test_experiment_draws_keep_a_patient_on_one_side(tmp_path: Path) -> None:
    from segfew.experiment.splits import _stratified_split

    table = _table(tmp_path)
    with pytest.warns(DataWarning, match="written two ways"):
        cases = read_table(table, tmp_path / "images")
    for seed in range(6):
        train, test = _stratified_split(cases, 2, seed)
        assert not {patient_key(c.unit) for c in train} & {patient_key(c.unit) for c in test}
