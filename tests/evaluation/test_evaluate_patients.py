"""evaluate counts a table's patients whatever its patient column is called (``PatientID``,
``Patient ID``, ``MRN``), says once when the table names no patient that each row is taken as
one, and names the model's class a table's class differs from only in case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import CLASSES, invoke, make_classifier

ARGS = ("--device", "cpu", "--no-progress", "--bootstrap", "200")
ROWS_AS_PATIENTS = "each row is taken as its own patient, so the intervals resample rows"


def _evaluate(tmp_path: Path, images: Path, table: Path, expect: int = 0) -> str:
    return " ".join(invoke("evaluate", "--model", str(make_classifier(tmp_path / "clf.pt")),
                           "--table", str(table), "--images", str(images), "--out",
                           str(tmp_path / "eval"), *ARGS, expect=expect).split())


@pytest.mark.parametrize("column", ["PatientID", "Patient ID", "MRN"])
def test_a_patient_column_of_any_spelling_makes_the_patients_the_unit(
        tmp_path: Path, labelled: tuple[Path, Path], column: str) -> None:
    images, table = labelled
    rows = table.read_text().splitlines()
    table.write_text("\n".join([f"{rows[0]},{column}",  # two slices per patient
                                *(f"{r},p{i % 3}" for i, r in enumerate(rows[1:]))]) + "\n")
    said = _evaluate(tmp_path, images, table)
    assert "3 patients (groups): the intervals resample patients, not cases" in said
    assert ROWS_AS_PATIENTS not in said
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["n_groups"] == 3


def test_a_table_naming_no_patient_is_said_to_count_each_row_as_one(
        tmp_path: Path, labelled: tuple[Path, Path]) -> None:
    images, table = labelled
    said = _evaluate(tmp_path, images, table)
    assert said.count(ROWS_AS_PATIENTS) == 1 and "--group-column" in said
    assert "scored 6 of 6 cases" in said


def test_a_class_differing_only_in_case_names_the_models_spelling(
        tmp_path: Path, labelled: tuple[Path, Path]) -> None:
    images, table = labelled
    table.write_text(table.read_text().replace(f",{CLASSES[0]}", f",{CLASSES[0].title()}"))
    said = _evaluate(tmp_path, images, table, expect=2)
    assert (f"has class {CLASSES[0].title()!r}, which the model does not know (its classes: "
            f"{', '.join(CLASSES)}) (the model has {CLASSES[0]!r}: differs only in case)"
            in said)
    table.write_text(table.read_text().replace(f",{CLASSES[0].title()}", ",wolf"))
    said = _evaluate(tmp_path, images, table, expect=2)
    assert "has class 'wolf', which the model does not know" in said
    assert "differs only in case" not in said
