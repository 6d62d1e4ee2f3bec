"""A patient column is found however a hospital spreadsheet or a DICOM export writes its
name (``PatientID``, ``Patient ID``, ``MRN``, ``SubjectID``…): column names are matched with
case, spaces, ``_`` and ``-`` set aside. Two columns that are one known name written two ways
are refused; a table that names no patient is said to be read as one patient per row; a
class refused by a split is said to differ only in case from another where it does."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from segfew.data import Case, read_table, split_table
from segfew.data.classes import warn_rows_as_patients
from segfew.data.table_rows import read_table_rows
from segfew.errors import DataError
from tests.conftest import invoke, ramp, save_nifti, warned

#: patient columns as exports name them (DICOM's PatientID, spreadsheets, BIDS, hospitals)
PATIENT_NAMES = ["PatientID", "Patient ID", "Patient-ID", "MRN", "SubjectID", "Subject ID",
                 "medical_record_number", " PATIENT ID "]


def _table(folder: Path, header: str, rows: list[str]) -> Path:
    """A table of ``header`` and ``rows`` (each starting with its case id) beside the images
    it names."""
    for i, row in enumerate(rows):  # each a scan of its own (no copies joined)
        save_nifti(folder / f"{row.split(',')[0]}.nii.gz", ramp((16, 16), base=10 * i))
    path = folder / "t.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def _slices(folder: Path, column: str) -> Path:
    """Eight slices of four patients (two of each class), the patients in ``column``."""
    rows = [f"s{i},{'ab'[i // 4]},P{i // 2}" for i in range(8)]
    return _table(folder, f"id,label,{column}", rows)


def _warned(call: Callable[[], object]) -> list[str]:
    return warned(call)[1]


@pytest.mark.parametrize("column", PATIENT_NAMES)
def test_a_patient_column_is_found_however_it_is_written(tmp_path: Path, column: str) -> None:
    table = _slices(tmp_path, column)
    cases = read_table(table, tmp_path)
    assert [c.id for c in cases][:2] == ["s0", "s1"]  # the id column stays `id`
    assert [c.group for c in cases] == [f"P{i // 2}" for i in range(8)]
    said = _warned(lambda: split_table(table, tmp_path / "split", test_per_class=1))
    assert not [s for s in said if "no group (patient) column" in s]
    train = read_table_rows(tmp_path / "split" / "train.tsv")
    test = read_table_rows(tmp_path / "split" / "test.tsv")
    patients = column.strip()
    assert not {r[patients] for r in train} & {r[patients] for r in test}


def test_a_patient_column_alone_is_the_id_column_and_its_rows_are_patients(
        tmp_path: Path) -> None:
    table = _table(tmp_path, "PatientID,label", [f"p{i},{'ab'[i % 2]}" for i in range(4)])
    cases = read_table(table, tmp_path)
    assert [(c.id, c.group) for c in cases] == [(f"p{i}", f"p{i}") for i in range(4)]
    said = _warned(lambda: split_table(table, tmp_path / "split", test_per_class=1))
    assert not [s for s in said if "no group (patient) column" in s]
    assert not _warned(lambda: warn_rows_as_patients(cases, table, "ci"))


@pytest.mark.parametrize(("header", "pair"), [
    ("id,label,Patient ID,patient_id", "columns 3 and 4 ('Patient ID' and 'patient_id')"),
    ("id,label,PatientID,patient-id", "columns 3 and 4 ('PatientID' and 'patient-id')"),
    ("Case_ID,label,caseid", "columns 1 and 3 ('Case_ID' and 'caseid')"),
])
def test_one_known_column_name_written_two_ways_is_refused(tmp_path: Path, header: str,
                                                           pair: str) -> None:
    table = tmp_path / "t.csv"
    table.write_text(f"{header}\n" + ",".join(["a"] * len(header.split(","))) + "\n",
                     encoding="utf-8")
    with pytest.raises(DataError, match="written two ways") as err:
        read_table_rows(table)
    assert pair in str(err.value) and "rename one" in str(err.value)
    assert err.value.path == table


def test_other_columns_alike_but_for_underscores_stand_side_by_side(tmp_path: Path) -> None:
    """Only the names segfew finds by itself are matched loosely; other columns are found
    by their exact name, so ``age_group`` and ``agegroup`` are two columns."""
    table = _table(tmp_path, "id,label,age_group,agegroup,Patient ID",
                   ["s0,a,1,2,P0", "s1,b,3,4,P1"])
    assert [(c.target, c.group) for c in read_table(table, tmp_path)] == [("a", "P0"),
                                                                          ("b", "P1")]


def test_a_table_naming_no_patient_is_said_once_to_be_read_as_one_patient_per_row(
        tmp_path: Path) -> None:
    table = _table(tmp_path, "id,label", [f"s{i},{'ab'[i % 2]}" for i in range(4)])
    cases = read_table(table, tmp_path)
    assert all(c.group is None and c.unit == c.id for c in cases)
    said = _warned(lambda: warn_rows_as_patients(cases, table, "ci"))
    assert len(said) == 1 and said[0].startswith(f"{table}: no group (patient) column")
    assert "each row is taken as its own patient, so the intervals resample rows" in said[0]
    assert "--group-column" in said[0]
    grouped = [Case(c.id, c.images, target=c.target, group=c.id) for c in cases]
    assert not _warned(lambda: warn_rows_as_patients(grouped, table, "ci"))
    assert not _warned(lambda: warn_rows_as_patients(cases, None, "ci"))  # class folders


def test_a_split_refusing_a_class_names_the_class_spelt_alike() -> None:
    """``split`` refuses such a table first (tests/data/test_class_names.py); the library's
    draw, given such cases, still names the spelling where a class cannot be split."""
    from segfew.data import Case, stratified_split

    cases = [*(Case(f"s{i}", (), target="oval") for i in range(4)),
             *(Case(f"n{i}", (), target="normal") for i in range(4)), Case("t0", (), target="Oval")]
    with pytest.raises(DataError) as err:
        stratified_split(cases, per_class=2, seed=0)
    assert "class 'Oval' has 1 group (patient); cannot take 2 per class ('Oval' and 'oval' " \
        "are written alike: one class?)" in str(err.value)


def test_a_split_refusing_a_class_with_no_alike_says_no_hint(tmp_path: Path) -> None:
    rows = [f"s{i},oval" for i in range(4)] + ["n0,normal"]
    table = _table(tmp_path, "id,label", rows)
    with pytest.raises(DataError, match=r"'normal' has 1 group \(patient\); cannot take 2 per "
                                        r"class$"):
        split_table(table, tmp_path / "split", test_per_class=2)


def test_train_classifier_says_rows_are_patients_where_validation_cases_are_drawn(
        phantoms: Path, tmp_path: Path) -> None:
    """The validation cases pick the epoch: drawn from rows that may be one patient's
    slices, they are said to be; with no validation split, nothing is said."""
    table = tmp_path / "t.csv"
    rows = read_table_rows(phantoms / "labels.csv")
    table.write_text("id,label\n" + "".join(f"{r['id']},{r['label']}\n" for r in rows))
    said = []
    for val_fraction in (0.5, 0):
        spec = tmp_path / "spec.toml"
        spec.write_text(f"[train]\nval_fraction = {val_fraction}\n", encoding="utf-8")
        out = tmp_path / f"c{val_fraction}.pt"
        said.append(" ".join(invoke(
            "train-classifier", "--images", str(phantoms / "images"), "--table", str(table),
            "--out", str(out), "--framework", "scratch", "--size", "32", "--epochs", "1",
            "--no-progress", "--no-cache", "--spec", str(spec)).split()))
    assert said[0].count("each row is taken as its own patient, so a validation case") == 1
    assert str(table) in said[0] and "--group-column" in said[0]
    assert "each row is taken as its own patient" not in said[1]


def test_blank_cells_of_the_patient_column_are_said(tmp_path: Path) -> None:
    """A blank patient cell makes its row a patient of its own: said, naming the rows."""
    rows = [f"s{i},{'ab'[i // 4]},{'' if i in (1, 2) else f'P{i // 2}'}" for i in range(8)]
    table = _table(tmp_path, "id,label,patient", rows)
    cases, said = warned(read_table, table, tmp_path)
    assert [c.group for c in cases][:3] == ["P0", "s1", "s2"]
    line = next(s for s in said if "give no 'patient'" in s)
    assert line.startswith(f"{table}: 2 row(s) give no 'patient' (rows 3, 4)")
    assert not [s for s in _warned(lambda: read_table(_slices(tmp_path / "full", "patient"),
                                                       tmp_path / "full"))
                if "give no" in s]
